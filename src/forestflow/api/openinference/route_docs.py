"""What each Open Inference Protocol REST route takes and answers, for the OpenAPI document.

One `RouteDoc` per route (`api/rest/openapi.py`), given where `rest.py` registers it: the
protocol's JSON shapes, the binary tensor data extension's body and answer, the 400 a
health check answers for "false", and errors in the protocol's form, `{"error": "..."}`,
with the status `errors.protocol_status` gives them. The examples are docs/protocols.md's.
"""

from __future__ import annotations

from typing import Any

from forestflow import __version__
from forestflow.api.openinference.datatypes import DTYPES
from forestflow.api.openinference.errors import protocol_status
from forestflow.api.rest.openapi import Answer, Body, ErrorForm, RouteDoc
from forestflow.api.rest.schemas import Schema, ref
from forestflow.errors import (
    ForestFlowError,
    InferenceRequestInvalidError,
    NoActiveServablesForContract,
    UnknownContract,
    UnknownServable,
)

TAG = "Open Inference Protocol"
OCTET_STREAM = "application/octet-stream"
HEADER_LENGTH = "Inference-Header-Content-Length"

_STRING: Schema = {"type": "string"}
_SHAPE: Schema = {"type": "array", "items": {"type": "integer", "minimum": -1}}
_SCALAR: Schema = {"type": ["string", "number", "boolean"]}


def _object(properties: Schema, *optional: str, closed: bool = False) -> Schema:
    schema: Schema = {
        "type": "object",
        "properties": properties,
        "required": [name for name in properties if name not in optional],
    }
    if closed:
        schema["additionalProperties"] = False
    return schema


def _tensor_metadata() -> Schema:
    return _object(
        {"name": _STRING, "datatype": ref("OipDatatype"), "shape": _SHAPE},
    )


def _input() -> Schema:
    return {
        **_object(
            {
                "name": {**_STRING, "minLength": 1},
                "datatype": ref("OipDatatype"),
                "shape": {**_SHAPE, "items": {"type": "integer", "minimum": 0}},
                "data": {
                    "type": "array",
                    "description": "The elements, flat or nested in row-major order; `null` "
                    "is a missing value.",
                },
                "parameters": {
                    "type": "object",
                    "properties": {
                        "binary_data_size": {
                            "type": "integer",
                            "minimum": 0,
                            "description": "Binary tensor data: the tensor's bytes follow the "
                            "JSON header, in input order.",
                        }
                    },
                },
            },
            "data",
            "parameters",
        ),
        "description": "A tensor: one per feature (shape [rows]), or one 2-D tensor "
        "[rows, n_features] whose columns are the model's inputs in its order.",
        "anyOf": [{"required": ["data"]}, {"required": ["parameters"]}],
    }


def _infer_request() -> Schema:
    output = _object(
        {
            "name": _STRING,
            "parameters": {
                "type": "object",
                "properties": {
                    "binary_data": {"type": "boolean"},
                    "classification": {
                        "const": 0,
                        "description": "The classification extension is not supported.",
                    },
                },
            },
        },
        "parameters",
    )
    return _object(
        {
            "id": _STRING,
            "parameters": {
                "type": "object",
                "description": "The request's configs, as BASIC `configs` (prediction log, "
                "keyFeatures); `binary_data_output: true` asks for every output in binary.",
                "additionalProperties": _SCALAR,
            },
            "inputs": {"type": "array", "items": ref("OipInferInput"), "minItems": 1},
            "outputs": {
                "type": "array",
                "items": output,
                "description": "The outputs to answer, in this order (default: all).",
            },
        },
        "id",
        "parameters",
        "outputs",
        closed=True,
    )


def _infer_response() -> Schema:
    output = _object(
        {
            "name": _STRING,
            "datatype": ref("OipDatatype"),
            "shape": _SHAPE,
            "data": {"type": "array", "description": "`null` is a missing number."},
            "parameters": {
                "type": "object",
                "properties": {
                    "binary_data_size": {"type": "integer", "minimum": 0},
                    "content_type": {
                        "const": "base64",
                        "description": "BYTES that are not UTF-8, as base64 text.",
                    },
                },
            },
        },
        "data",
        "parameters",
    )
    return _object(
        {
            "model_name": _STRING,
            "model_version": {**_STRING, "description": "The release that answered."},
            "id": {**_STRING, "description": "The request's `id`, when it has one."},
            "outputs": {"type": "array", "items": output},
        },
        "id",
    )


def _readiness(*, ready: bool, named: bool) -> Schema:
    answer: Schema = {"ready": {"const": ready}}
    if named:
        answer = {"name": _STRING, **answer}
    return _object(answer, closed=True)


SCHEMAS: dict[str, Schema] = {
    "OipDatatype": {"type": "string", "enum": list(DTYPES)},
    "OipInferInput": _input(),
    "OipInferRequest": _infer_request(),
    "OipInferResponse": _infer_response(),
    "OipServerMetadata": _object(
        {"name": _STRING, "version": _STRING, "extensions": {"type": "array", "items": _STRING}}
    ),
    "OipModelMetadata": _object(
        {
            "name": _STRING,
            "versions": {"type": "array", "items": _STRING},
            "platform": _STRING,
            "inputs": {"type": "array", "items": _tensor_metadata()},
            "outputs": {"type": "array", "items": _tensor_metadata()},
            "parameters": {
                "type": "object",
                "description": "How to lay out the inputs (input_order, accepts_2d_tensor, "
                "...) and the release described (servable_fqrv).",
                "additionalProperties": _SCALAR,
            },
        }
    ),
    "OipError": {
        **_object({"error": _STRING}, closed=True),
        "description": "The protocol's error: the message names the field or feature at fault.",
    },
}


def _error_body(_error: ForestFlowError, message: str) -> dict[str, str]:
    return {"error": message}


FORM = ErrorForm(
    "the Open Inference Protocol",
    lambda error: int(protocol_status(error).http),
    "application/json",
    "OipError",
    _error_body,
    {"InferenceRequestInvalidError": "inputs[0].datatype: unsupported datatype 'FLOAT'"},
)
"""`{"error": message}`, with the protocol's status (400 where the BASIC API has 422)."""

README_ROWS = [[33.2, 60.5, 1010.7, 30], [29.6, 62, 998.5, 40.62]]
FEATURES = ["TemperatureCelcius", "ExhaustVacuumHg", "AmbientPressureMillibar", "RelativeHumidity"]
INFER_2D: dict[str, Any] = {
    "inputs": [{"name": "input", "datatype": "FP64", "shape": [2, 4], "data": README_ROWS}],
    "parameters": {"reqid": "123-456-789"},
}
INFER_PER_FEATURE: dict[str, Any] = {
    "id": "r1",
    "inputs": [
        {"name": name, "datatype": "FP32", "shape": [2], "data": [row[j] for row in README_ROWS]}
        for j, name in enumerate(FEATURES)
    ],
}
INFER_ANSWER: dict[str, Any] = {
    "model_name": "samples.energy_output.0",
    "model_version": "v1",
    "outputs": [
        {"name": "prediction", "datatype": "FP32", "shape": [2], "data": [431.78378, 439.23108]}
    ],
}
METADATA_EXAMPLE: dict[str, Any] = {
    "name": "samples.energy_output.0",
    "versions": ["v1"],
    "platform": "forestflow",
    "inputs": [{"name": name, "datatype": "FP32", "shape": [-1]} for name in FEATURES],
    "outputs": [{"name": "prediction", "datatype": "FP32", "shape": [-1]}],
    "parameters": {
        "servable_fqrv": "samples.energy_output.0.v1",
        "input_order": ",".join(FEATURES),
        "accepts_2d_tensor": True,
        "tensor_2d_datatype": "FP32",
        "input_layout": "one tensor [rows] per input, named like it, or one FP32 tensor "
        "[rows, 4] whose columns are the inputs in input_order",
    },
}
_BINARY: Schema = {"type": "string", "format": "binary"}
_MODEL_ERRORS = (UnknownContract, UnknownServable, InferenceRequestInvalidError)
"""A model name that names no contract (400), an unknown model or version (404)."""


def _doc(answer: str | Schema, summary: str, **details: Any) -> RouteDoc:
    return RouteDoc(answer, summary=summary, tag=TAG, form=FORM, schemas=SCHEMAS, **details)


SERVER_LIVE = _doc(
    _object({"live": {"const": True}}, closed=True),
    "Live as soon as the process serves HTTP",
    ready=False,
    example={"live": True},
)
SERVER_READY = _doc(
    _readiness(ready=True, named=False),
    "Ready once the state is recovered and models reloaded; 400 with false until then",
    ready=False,
    example={"ready": True},
    answers=(
        Answer(
            400,
            _readiness(ready=False, named=False),
            description="Not ready (a 4xx is the protocol's false): the server is recovering "
            "its state, or failed to start",
            example={"ready": False},
        ),
    ),
)
SERVER_METADATA = _doc(
    "OipServerMetadata",
    "The server's name, version and extensions",
    ready=False,
    example={"name": "forestflow", "version": __version__, "extensions": ["binary_tensor_data"]},
)
MODEL_METADATA = _doc(
    "OipModelMetadata",
    "A model's inputs and outputs, and how to lay out the inputs; without a version, the "
    "release taking most of the traffic",
    errors=(*_MODEL_ERRORS, NoActiveServablesForContract),
    example=METADATA_EXAMPLE,
)
MODEL_READY = _doc(
    _readiness(ready=True, named=True),
    "Whether a version is loaded, or some release of the model takes traffic; 400 if not",
    errors=_MODEL_ERRORS,
    example={"name": "samples.energy_output.0", "ready": True},
    answers=(
        Answer(
            400,
            _readiness(ready=False, named=True),
            description="Not ready (a 4xx is the protocol's false): no release of the "
            "contract takes traffic",
            example={"name": "samples.energy_output.0", "ready": False},
        ),
    ),
)
INFER = _doc(
    "OipInferResponse",
    "Inference: through the contract's router, or on one version (release) directly",
    body=(
        Body(
            "OipInferRequest",
            {
                "two_d": ("The README's two rows as one 2-D tensor (docs/protocols.md)", INFER_2D),
                "per_feature": ("One tensor per feature, named like the inputs", INFER_PER_FEATURE),
            },
        ),
        Body(
            {
                **_BINARY,
                "description": f"Binary tensor data: the JSON request (its length in the "
                f"{HEADER_LENGTH} header), then the bytes of each input whose parameters give "
                "binary_data_size, in order",
            },
            media=OCTET_STREAM,
        ),
    ),
    errors=(*_MODEL_ERRORS, NoActiveServablesForContract),
    example=INFER_ANSWER,
    answers=(
        Answer(
            200,
            {
                **_BINARY,
                "description": f"The JSON response ({HEADER_LENGTH} bytes), then the bytes of "
                "each output asked for in binary, in order",
            },
            OCTET_STREAM,
            description="Binary tensor data: outputs asked for with binary_data (or every "
            "output, with the request parameter binary_data_output)",
            headers={HEADER_LENGTH: "The length of the JSON response at the start of the body"},
        ),
    ),
    parameters=(
        {
            "name": HEADER_LENGTH,
            "in": "header",
            "required": False,
            "description": "Binary tensor data: the length of the JSON request at the start "
            "of the body",
            "schema": {"type": "integer", "minimum": 0},
        },
    ),
)
