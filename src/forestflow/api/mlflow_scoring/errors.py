"""How the MLflow routes answer errors: `{"error_code": …, "message": …}`, as MLflow does.

`mlflow models serve` answers bad input with 400 (`BAD_REQUEST` or
`INVALID_PARAMETER_VALUE`), where the BASIC API answers 422; a client written for it
reads the status and `message`. A contract without an active servable is a request the
server cannot carry out now: 400, as the Open Inference Protocol answers it. Every other
error keeps its status, with the MLflow error code of that status.
"""

from __future__ import annotations

from http import HTTPStatus

import orjson

from forestflow.api.rest.errors import INTERNAL_MESSAGE
from forestflow.errors import ForestFlowError, NoActiveServablesForContract

_BY_STATUS: dict[HTTPStatus, tuple[HTTPStatus, str]] = {
    HTTPStatus.BAD_REQUEST: (HTTPStatus.BAD_REQUEST, "BAD_REQUEST"),
    HTTPStatus.UNAUTHORIZED: (HTTPStatus.UNAUTHORIZED, "UNAUTHENTICATED"),
    HTTPStatus.FORBIDDEN: (HTTPStatus.FORBIDDEN, "PERMISSION_DENIED"),
    HTTPStatus.NOT_FOUND: (HTTPStatus.NOT_FOUND, "RESOURCE_DOES_NOT_EXIST"),
    HTTPStatus.CONFLICT: (HTTPStatus.CONFLICT, "RESOURCE_CONFLICT"),
    # MLflow's codes for "too much" (RESOURCE_EXHAUSTED, REQUEST_LIMIT_EXCEEDED) mean 429 to
    # its clients, which retry a 429: a body too large is a bad request, not worth a retry
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: (HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "BAD_REQUEST"),
    HTTPStatus.UNSUPPORTED_MEDIA_TYPE: (HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "BAD_REQUEST"),
    HTTPStatus.UNPROCESSABLE_ENTITY: (HTTPStatus.BAD_REQUEST, "INVALID_PARAMETER_VALUE"),
    HTTPStatus.INTERNAL_SERVER_ERROR: (HTTPStatus.INTERNAL_SERVER_ERROR, "INTERNAL_ERROR"),
    HTTPStatus.SERVICE_UNAVAILABLE: (HTTPStatus.SERVICE_UNAVAILABLE, "TEMPORARILY_UNAVAILABLE"),
}


def mlflow_status(error: ForestFlowError) -> tuple[HTTPStatus, str]:
    """The HTTP status and MLflow error code that answer `error`."""
    if isinstance(error, NoActiveServablesForContract):
        return HTTPStatus.BAD_REQUEST, "BAD_REQUEST"
    return _BY_STATUS.get(error.status, (error.status, "INTERNAL_ERROR"))


def error_answer(error: ForestFlowError) -> tuple[int, bytes, dict[str, str]]:
    """Status, body and headers of the answer to `error`."""
    status, code = mlflow_status(error)
    headers = {"content-type": "application/json"}
    if status == HTTPStatus.UNAUTHORIZED:
        headers["www-authenticate"] = "Bearer"  # RFC 9110: name the scheme to use
    body = orjson.dumps({"error_code": code, "message": error.describe()})
    return int(status), body, headers


def internal_answer() -> tuple[int, bytes, dict[str, str]]:
    """The answer to an unexpected failure: no detail beyond "see the log"."""
    body = orjson.dumps({"error_code": "INTERNAL_ERROR", "message": INTERNAL_MESSAGE})
    return 500, body, {"content-type": "application/json"}
