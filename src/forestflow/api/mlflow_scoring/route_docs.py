"""What each MLflow scoring route takes and answers, for the OpenAPI document.

One `RouteDoc` per route (`api/rest/openapi.py`), given where `rest.py` registers it:
MLflow's four JSON payload forms and CSV, `{"predictions": …}`, ping's newline, the version
as text, and errors in MLflow's form, `{"error_code", "message"}`, with the status
`errors.mlflow_status` gives them. The examples are docs/protocols.md's.
"""

from __future__ import annotations

from typing import Any

from forestflow import __version__
from forestflow.api.mlflow_scoring.errors import mlflow_status
from forestflow.api.mlflow_scoring.payloads import DF_RECORDS, DF_SPLIT, FORMATS, INPUTS, PARAMS
from forestflow.api.rest.openapi import Answer, Body, ErrorForm, RouteDoc
from forestflow.api.rest.schemas import Schema
from forestflow.errors import (
    ForestFlowError,
    InferenceRequestInvalidError,
    NoActiveServablesForContract,
    UnknownContract,
    UnknownServable,
)

TAG = "MLflow scoring"
CSV = "text/csv"
SERVABLE_HEADER = "X-ForestFlow-Servable"

_VALUES: Schema = {"type": "array", "description": "One value per column."}
_ROWS_AS_OBJECTS: Schema = {
    "type": "array",
    "minItems": 1,
    "items": {"type": "object"},
    "description": "Rows as objects keyed by column; a key a row leaves out is a missing value.",
}
_ROWS_AS_ARRAYS: Schema = {
    "type": "array",
    "minItems": 1,
    "items": _VALUES,
    "description": "Rows as arrays, in the model's input order.",
}


def _tensor_input() -> Schema:
    return {
        "description": "Rows as objects, rows as arrays, an object of columns, or (a model of "
        "one input) an array of its values.",
        "anyOf": [
            _ROWS_AS_OBJECTS,
            _ROWS_AS_ARRAYS,
            {
                "type": "object",
                "minProperties": 1,
                "description": "Columns by name (`{column: [values]}`); single values are one row.",
            },
            {"type": "array", "minItems": 1, "items": {"type": ["string", "number", "boolean"]}},
        ],
    }


def _payload() -> Schema:
    split: Schema = {
        "type": "object",
        "description": '`DataFrame.to_dict(orient="split")`; without `columns` (or with '
        "pandas' default labels 0…n-1) the values are read in the model's input order.",
        "properties": {
            "columns": {"type": "array", "items": {"type": ["string", "integer"]}},
            "data": {"type": "array", "minItems": 1},
            "index": {"type": "array", "description": "Ignored."},
        },
        "required": ["data"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "description": f"Exactly one of {', '.join(FORMATS)}, and optionally {PARAMS}; other "
        "fields are ignored, as MLflow ignores them. NaN and Infinity are read too.",
        "properties": {
            DF_SPLIT: split,
            DF_RECORDS: _ROWS_AS_OBJECTS | {"items": {"anyOf": [{"type": "object"}, _VALUES]}},
            "instances": _tensor_input(),
            INPUTS: _tensor_input(),
            PARAMS: {
                "type": "object",
                "description": "The request's configs, as BASIC `configs` (prediction log, "
                "keyFeatures): text as it is, other values as JSON text, null left out.",
            },
        },
        "oneOf": [{"required": [name]} for name in FORMATS],
    }


SCHEMAS: dict[str, Schema] = {
    "MlflowPayload": _payload(),
    "MlflowPredictions": {
        "type": "object",
        "description": "A prediction of one column as a list of values; of several, as a "
        "list of records (one object per row, keyed by column). Missing numbers are null.",
        "properties": {
            "predictions": {
                "anyOf": [
                    {"type": "array", "items": {"not": {"type": ["object", "array"]}}},
                    {"type": "array", "items": {"type": "object"}},
                ]
            }
        },
        "required": ["predictions"],
        "additionalProperties": False,
    },
    "MlflowError": {
        "type": "object",
        "description": "MLflow's error: the message names the field or feature at fault.",
        "properties": {
            "error_code": {
                "type": "string",
                "description": "BAD_REQUEST, INVALID_PARAMETER_VALUE, UNAUTHENTICATED, "
                "PERMISSION_DENIED, RESOURCE_DOES_NOT_EXIST, INTERNAL_ERROR, "
                "TEMPORARILY_UNAVAILABLE, ...",
            },
            "message": {"type": "string"},
        },
        "required": ["error_code", "message"],
        "additionalProperties": False,
    },
}


def _error_body(error: ForestFlowError, message: str) -> dict[str, str]:
    return {"error_code": mlflow_status(error)[1], "message": message}


FORM = ErrorForm(
    "MLflow",
    lambda error: int(mlflow_status(error)[0]),
    "application/json",
    "MlflowError",
    _error_body,
    {"InferenceRequestInvalidError": "dataframe_split.data[1]: the row holds 2 values; expected 4"},
)
"""`{"error_code", "message"}`, with MLflow's status (400 where the BASIC API has 422)."""

FEATURES = ["TemperatureCelcius", "ExhaustVacuumHg", "AmbientPressureMillibar", "RelativeHumidity"]
ROWS: list[list[Any]] = [[33.2, 60.5, 1010.7, 30], [29.6, 62, 998.5, 40.62]]
EXAMPLES: dict[str, tuple[str, Any]] = {
    "dataframe_split": (
        "The README's two rows, as pandas' split orient (docs/protocols.md)",
        {DF_SPLIT: {"columns": FEATURES, "data": ROWS}},
    ),
    "dataframe_records": (
        "As pandas' records orient, with params",
        {
            DF_RECORDS: [dict(zip(FEATURES, row, strict=True)) for row in ROWS],
            PARAMS: {"reqid": "123"},
        },
    ),
    "inputs": ("Rows as arrays, in the model's input order", {INPUTS: ROWS}),
    "instances": (
        "An object of columns",
        {"instances": {name: [row[j] for row in ROWS] for j, name in enumerate(FEATURES)}},
    ),
}
CSV_EXAMPLE = ",".join(FEATURES) + "\n" + "".join(",".join(map(str, r)) + "\n" for r in ROWS)
PREDICTIONS: dict[str, Any] = {"predictions": [431.7837829589844, 439.2310791015625]}
_ANSWERED_BY = {SERVABLE_HEADER: "The release that answered (org.project.n.release)"}
_BODIES = (
    Body("MlflowPayload", EXAMPLES),
    Body(
        {
            "type": "string",
            "description": "Read as pandas.read_csv reads it: the first line names the "
            "columns; UTF-8 only.",
        },
        {"readme": ("The README's two rows", CSV_EXAMPLE)},
        media=CSV,
    ),
)


def _doc(answer: str | Schema | None, summary: str, **details: Any) -> RouteDoc:
    return RouteDoc(answer, summary=summary, tag=TAG, form=FORM, schemas=SCHEMAS, **details)


def _invocations(summary: str, unknown: type[ForestFlowError]) -> RouteDoc:
    return _doc(
        "MlflowPredictions",
        summary,
        body=_BODIES,
        errors=(unknown, InferenceRequestInvalidError, NoActiveServablesForContract),
        example=PREDICTIONS,
        headers=_ANSWERED_BY,
    )


INVOCATIONS = _invocations(
    "Score a DataFrame as `mlflow models serve` does; the contract's router picks the release",
    UnknownContract,
)
RELEASE_INVOCATIONS = _invocations(
    "Score a DataFrame as `mlflow models serve` does, on one release directly",
    UnknownServable,
)
_NEWLINE = (
    "A newline (`\\n`, not a JSON value), as `mlflow models serve` answers while it has a model"
)
PING = _doc(
    None,
    "Whether a release of the contract takes traffic: 200, else 404 (as MLflow's ping)",
    errors=(UnknownContract,),
    description=_NEWLINE,
    answers=(
        Answer(
            404,
            "MlflowError",
            description="No release of the contract takes traffic (none valid, or all at 0%)",
            example={
                "error_code": "RESOURCE_DOES_NOT_EXIST",
                "message": "contract samples.energy_output.0 has no active servable to answer "
                "the request",
            },
        ),
    ),
)
RELEASE_PING = _doc(
    None,
    "Whether the release is loaded: 200, else 404 (as MLflow's ping)",
    errors=(UnknownContract, UnknownServable),
    description=_NEWLINE,
)
VERSION = _doc(
    {"type": "string"},
    "ForestFlow's version, as text (as MLflow's /version)",
    media="text/plain",
    example=__version__,
    ready=False,
    reads_path=False,
)
