"""What each BASIC REST route takes and answers, for the OpenAPI document (`openapi.py`).

One `RouteDoc` per route, given to `route_adder` where the route is registered. The
examples are the README's and docs/api.md's, with the README's model at a path relative
to the server's working directory, so that Swagger UI's "Try it out" on a `make run`
server deploys and scores it as they are.
"""

from __future__ import annotations

from typing import Any

from forestflow.api.rest.openapi import Body, RouteDoc
from forestflow.errors import (
    ArtifactTooLarge,
    ContractAlreadyExistsError,
    ContractNotEmptyError,
    ContractValidationError,
    CreateServableRequestInvalidError,
    InferenceRequestInvalidError,
    InsufficientStorage,
    InvalidField,
    NoActiveServablesForContract,
    ServableAlreadyExistsError,
    ServiceUnavailableError,
    TokenAlreadyExistsError,
    UnknownContract,
    UnknownServable,
    UnknownToken,
)

CONTRACTS, SERVABLES, SCORING, FEEDBACK, ADMIN, OPERATIONS = (
    "Contracts",
    "Servables",
    "Scoring",
    "Feedback",
    "Admin",
    "Operations",
)

CONTRACT_JSON: dict[str, Any] = {
    "organization": "samples",
    "project": "energy_output",
    "contractNumber": 0,
}
FQRV_JSON: dict[str, Any] = {"contract": CONTRACT_JSON, "releaseVersion": "v1"}
CONTRACT_SETTINGS: dict[str, Any] = {
    "expirationPolicy": {"KeepLatest": {"servablesToKeep": 2}},
    "router": {"LatestPhaseInPctBasedRouter": {}},
}
README_DEPLOY: dict[str, Any] = {
    "path": "examples/energy_output",
    "fqrv": {
        "contract": {"organization": "samples", "project": "energy_output", "contract_number": 0},
        "release_version": "v1",
    },
    "flavor": {"ONNX": {"modelPath": "model.onnx"}},
    "servableSettings": {
        "policySettings": {
            "validityPolicy": [{"ImmediatelyValid": {}}],
            "phaseInPolicy": {"ImmediatePhaseIn": {}},
        },
        "loggingSettings": {"logLevel": "FULL", "keyFeatures": ["reqid"]},
    },
}
EVERY_FIELD_DEPLOY: dict[str, Any] = {
    "path": "file:///models/samples/energy_output",
    "artifactPath": "optional/sub/dir",
    "fqrv": FQRV_JSON,
    "flavor": {"ONNX": {"modelPath": "model.onnx"}},
    "servableSettings": {
        "policySettings": {
            "validityPolicy": [{"ImmediatelyValid": {}}],
            "phaseInPolicy": {"LinearTimeBasedPhaseIn": {"phaseInOverSecs": 3600}},
        },
        "loggingSettings": {
            "logLevel": "FULL",
            "keyFeatures": ["reqid"],
            "keyFeaturesSeparator": ".",
        },
    },
}
README_SCORE: dict[str, Any] = {
    "schema": [
        {
            "type": "Float64",
            "fields": [
                "TemperatureCelcius",
                "ExhaustVacuumHg",
                "AmbientPressureMillibar",
                "RelativeHumidity",
            ],
        }
    ],
    "datum": [
        {"tensors": [{"Float64": {"data": [33.2, 60.5, 1010.7, 30]}}]},
        {"tensors": [{"Float64": {"data": [29.6, 62, 998.5, 40.62]}}]},
    ],
    "configs": {"reqid": "123-456-789"},
}
PREDICTION: dict[str, Any] = {
    "Prediction": {
        "fqrv": FQRV_JSON,
        "servableFQRV": "samples.energy_output.0.v1",
        "schema": [{"type": "Float32", "fields": ["prediction"]}],
        "datum": [
            {"tensors": [{"Float32": {"data": [431.78]}}]},
            {"tensors": [{"Float32": {"data": [439.23]}}]},
        ],
    }
}
POLICY_SETTINGS: dict[str, Any] = {
    "validityPolicy": [{"ImmediatelyValid": {}}],
    "phaseInPolicy": {"LinearTimeBasedPhaseIn": {"phaseInOverSecs": 3600}},
}
LOGGING_SETTINGS: dict[str, Any] = {
    "logLevel": "FULL",
    "keyFeatures": ["reqid"],
    "keyFeaturesSeparator": ".",
}

_CONTRACT_BODY = Body("ContractSettings", {"readme": ("The README's contract", CONTRACT_SETTINGS)})
_DEPLOY_BODY = Body(
    "ServeRequest",
    {
        "readme": (
            "The README's model (a path under the server's working directory)",
            README_DEPLOY,
        ),
        "every_field": ("Every field of a BasicServeRequest (docs/api.md)", EVERY_FIELD_DEPLOY),
    },
)
_SCORE_BODY = Body("InferenceRequest", {"readme": ("The README's two rows", README_SCORE)})
_WRITE = (InsufficientStorage,)

LIST_CONTRACTS = RouteDoc("Contracts", summary="List the contracts", tag=CONTRACTS)
CREATE_CONTRACT = RouteDoc(
    "ContractCreatedSuccessfully",
    201,
    _CONTRACT_BODY,
    (ContractAlreadyExistsError, ContractValidationError, *_WRITE),
    "Create a contract",
    CONTRACTS,
)
UPDATE_CONTRACT = RouteDoc(
    "ContractUpdatedSuccessfully",
    body=_CONTRACT_BODY,
    errors=(UnknownContract, ContractValidationError, *_WRITE),
    summary="Change the fields of a contract's settings the body names",
    tag=CONTRACTS,
)
DELETE_CONTRACT = RouteDoc(
    "ContractDeletedSuccessfully",
    errors=(UnknownContract, ContractNotEmptyError, *_WRITE),
    summary="Delete a contract that has no servables",
    tag=CONTRACTS,
)
CONTRACT_SETTINGS_DOC = RouteDoc(
    "ContractSettingsAnswer",
    errors=(UnknownContract,),
    summary="A contract's settings",
    tag=CONTRACTS,
)
LIST_RELEASES = RouteDoc(
    "Release",
    errors=(UnknownContract,),
    summary="The servables of a contract",
    tag=CONTRACTS,
    array=True,
)
STATS = RouteDoc(
    "ServableMetricsAnswer",
    errors=(UnknownContract,),
    summary="Metrics of each servable of a contract",
    tag=CONTRACTS,
    array=True,
)
SERVABLES_SETTINGS = RouteDoc(
    "ServableSettingsAnswer",
    errors=(UnknownContract,),
    summary="Settings of each servable of a contract",
    tag=CONTRACTS,
    array=True,
)
CONTRACT_METADATA = RouteDoc(
    "BasicMetaDataAnswer",
    errors=(UnknownContract,),
    summary="Inputs and outputs of each loaded servable of a contract",
    tag=CONTRACTS,
    array=True,
)
CONTRACT_HISTORY = RouteDoc(
    "ContractHistory",
    errors=(UnknownContract,),
    summary="Every servable the contract ever had, newest deploy first, and how each left",
    tag=CONTRACTS,
)
_DEPLOY_ERRORS = (
    ServableAlreadyExistsError,
    CreateServableRequestInvalidError,
    ArtifactTooLarge,
    *_WRITE,
)
DEPLOY = RouteDoc(
    "ServableCreatedSuccessfully",
    201,
    _DEPLOY_BODY,
    _DEPLOY_ERRORS,
    "Deploy a servable (FQRV in the body); answers once the deploy is durable",
    SERVABLES,
)
DEPLOY_AT = RouteDoc(
    "ServableCreatedSuccessfully",
    201,
    _DEPLOY_BODY,
    _DEPLOY_ERRORS,
    "Deploy a servable (the path's FQRV wins over the body's)",
    SERVABLES,
)
UPDATE_POLICY = RouteDoc(
    "PolicySettingsUpdatedSuccessfully",
    body=Body(
        "PolicySettings", {"phase_in": ("Valid at once, phased in over an hour", POLICY_SETTINGS)}
    ),
    errors=(UnknownServable, CreateServableRequestInvalidError, *_WRITE),
    summary="Change the fields of a servable's policy settings the body names",
    tag=SERVABLES,
)
UPDATE_LOGGING = RouteDoc(
    "LoggingSettingsUpdatedSuccessfully",
    body=Body(
        "LoggingSettings", {"full": ("Log every prediction, keyed by reqid", LOGGING_SETTINGS)}
    ),
    errors=(UnknownServable, CreateServableRequestInvalidError, *_WRITE),
    summary="Change the fields of a servable's logging settings the body names",
    tag=SERVABLES,
)
DELETE_SERVABLE = RouteDoc(
    "ServablesDeletedSuccessfully",
    errors=(UnknownServable, *_WRITE),
    summary="Delete a servable",
    tag=SERVABLES,
)
SERVABLE_SETTINGS = RouteDoc(
    "ServableSettingsAnswer",
    errors=(UnknownServable,),
    summary="A servable's settings",
    tag=SERVABLES,
)
SERVABLE_METADATA = RouteDoc(
    "BasicMetaDataAnswer",
    errors=(UnknownServable,),
    summary="A servable's inputs and outputs",
    tag=SERVABLES,
)
SCORE = RouteDoc(
    "PredictionAnswer",
    body=_SCORE_BODY,
    errors=(UnknownContract, NoActiveServablesForContract, InferenceRequestInvalidError),
    summary="Score rows; the contract's router picks the servable",
    tag=SCORING,
    example=PREDICTION,
)
SCORE_SERVABLE = RouteDoc(
    "PredictionAnswer",
    body=_SCORE_BODY,
    errors=(UnknownServable, InferenceRequestInvalidError),
    summary="Score rows with one servable, bypassing the router (for validation)",
    tag=SCORING,
    example=PREDICTION,
)
UPDATE_METRICS = RouteDoc(
    "PerformanceMetricsUpdatedSuccessfully",
    body=Body("MetricsUpdate", {"auc": ("An evaluator's AUC", {"metrics": {"auc": 0.91}})}),
    errors=(UnknownServable, *_WRITE),
    summary="Merge performance metrics from an external evaluator",
    tag=FEEDBACK,
)
FEEDBACK_DOC = RouteDoc(
    "FeedbackAccepted",
    body=Body(
        "FeedbackRecords",
        {
            "two": (
                "Ground truth for two logged predictions",
                {
                    "records": [
                        {"key": "c-17|14.96", "actual": 437.2},
                        {"key": "c-18|25.18", "actual": 443.1},
                    ]
                },
            )
        },
    ),
    errors=(UnknownContract, *_WRITE),
    summary="Ground truth for logged predictions, joined into rolling metrics",
    tag=FEEDBACK,
)
LOG_STATS = RouteDoc(
    "PredictionLogStats",
    summary="Counters of the prediction sinks and the feedback join",
    tag=FEEDBACK,
)
CREATE_TOKEN = RouteDoc(
    "TokenCreated",
    201,
    Body("TokenRequest", {"deployer": ("A token for CI", {"name": "ci", "role": "deployer"})}),
    (TokenAlreadyExistsError, *_WRITE),
    "Create a token (its secret is shown this once)",
    ADMIN,
)
LIST_TOKENS = RouteDoc("Tokens", summary="List the tokens (never their secrets)", tag=ADMIN)
REVOKE_TOKEN = RouteDoc(
    "TokenRevoked", errors=(UnknownToken, *_WRITE), summary="Revoke a token", tag=ADMIN
)
HISTORY = RouteDoc(
    "History",
    errors=(InvalidField,),
    summary="Control commands and automatic changes, newest first",
    tag=ADMIN,
)
HEALTH_LIVE = RouteDoc(
    "Health", summary="Live as soon as the process serves HTTP", tag=OPERATIONS, ready=False
)
HEALTH_READY = RouteDoc(
    "Health",
    errors=(ServiceUnavailableError,),
    summary="Ready once the state is recovered and models reloaded",
    tag=OPERATIONS,
    ready=False,
)
