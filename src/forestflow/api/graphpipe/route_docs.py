"""What GraphPipe's routes take and answer, for the OpenAPI document.

One `RouteDoc` per route (`api/rest/openapi.py`), given where `rest.py` registers it: a
flatbuffers `Request` in, a `MetadataResponse` or `InferResponse` out, and errors as an
`InferResponse` holding one `Error`, with the status the BASIC API gives the error.
Flatbuffers have no JSON Schema: the schemas say which message (`graphpipe.fbs`) a body is.
"""

from __future__ import annotations

from forestflow.api.rest.openapi import Body, ErrorForm, RouteDoc
from forestflow.api.rest.schemas import Schema
from forestflow.errors import (
    ForestFlowError,
    InferenceRequestInvalidError,
    NoActiveServablesForContract,
    UnknownContract,
    UnknownServable,
)

TAG = "GraphPipe"
OCTET_STREAM = "application/octet-stream"
FLATBUFFERS = "application/x-flatbuffers"
SERVABLE_HEADER = "X-ForestFlow-Servable"


def _message(description: str) -> Schema:
    return {"type": "string", "format": "binary", "description": description}


SCHEMAS: dict[str, Schema] = {
    "GraphPipeRequest": _message(
        "A GraphPipe `Request` (graphpipe.fbs) holding an InferRequest (input_names, "
        "input_tensors, output_names, config) or a MetadataRequest"
    ),
    "GraphPipeResponse": _message(
        "An InferResponse (output_tensors, one per prediction column) for an InferRequest, "
        "a MetadataResponse (name, version, server, inputs, outputs) for a MetadataRequest"
    ),
    "GraphPipeError": _message(
        "An InferResponse without tensors and with one Error: code the HTTP status, "
        "message the reason, the field first"
    ),
}


def _status(error: ForestFlowError) -> int:
    return int(error.status)


FORM = ErrorForm("GraphPipe", _status, OCTET_STREAM, "GraphPipeError")
"""An `InferResponse` with one `Error`, with the BASIC API's status for the error."""

_BODIES = (
    Body("GraphPipeRequest", media=OCTET_STREAM),
    Body("GraphPipeRequest", media=FLATBUFFERS),
)
_ERRORS = (InferenceRequestInvalidError, NoActiveServablesForContract)
"""Tensors the model cannot take, an unknown output name (422); a contract no release
serves (422)."""


def _doc(summary: str, unknown: tuple[type[ForestFlowError], ...]) -> RouteDoc:
    return RouteDoc(
        "GraphPipeResponse",
        body=_BODIES,
        errors=(*unknown, *_ERRORS),
        summary=summary,
        tag=TAG,
        media=OCTET_STREAM,
        description="An InferResponse or a MetadataResponse",
        headers={SERVABLE_HEADER: "The release that answered (org.project.n.release)"},
        form=FORM,
        schemas=SCHEMAS,
    )


GRAPHPIPE = _doc(
    "GraphPipe inference or metadata, through the contract's router", (UnknownContract,)
)
GRAPHPIPE_RELEASE = _doc(
    "GraphPipe inference or metadata, on one release", (UnknownContract, UnknownServable)
)
