"""How the protocol reports each error: one table for REST statuses and gRPC codes alike.

The protocol's clients know bad input as 400 (gRPC `INVALID_ARGUMENT`), where the BASIC API
answers 422. A contract without an active servable is a request the server cannot carry out
now (400, `FAILED_PRECONDITION`), not a server fault. Everything else keeps the status of
its error. gRPC codes are named here (`grpc.StatusCode[name]`), so REST needs no grpc.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus

from forestflow.errors import ForestFlowError, NoActiveServablesForContract, ServiceUnavailableError


@dataclass(frozen=True, slots=True)
class ProtocolStatus:
    """An error's REST status and the name of its gRPC status code."""

    http: HTTPStatus
    grpc: str


_BY_STATUS: dict[HTTPStatus, ProtocolStatus] = {
    status: ProtocolStatus(http or status, code)
    for status, http, code in [
        (HTTPStatus.BAD_REQUEST, None, "INVALID_ARGUMENT"),
        (HTTPStatus.UNAUTHORIZED, None, "UNAUTHENTICATED"),
        (HTTPStatus.FORBIDDEN, None, "PERMISSION_DENIED"),
        (HTTPStatus.NOT_FOUND, None, "NOT_FOUND"),
        (HTTPStatus.METHOD_NOT_ALLOWED, None, "UNIMPLEMENTED"),
        (HTTPStatus.CONFLICT, None, "ALREADY_EXISTS"),
        (HTTPStatus.REQUEST_ENTITY_TOO_LARGE, None, "RESOURCE_EXHAUSTED"),
        (HTTPStatus.UNSUPPORTED_MEDIA_TYPE, None, "INVALID_ARGUMENT"),
        (HTTPStatus.UNPROCESSABLE_ENTITY, HTTPStatus.BAD_REQUEST, "INVALID_ARGUMENT"),
        (HTTPStatus.INTERNAL_SERVER_ERROR, None, "INTERNAL"),
        (HTTPStatus.SERVICE_UNAVAILABLE, None, "UNAVAILABLE"),
        (HTTPStatus.INSUFFICIENT_STORAGE, None, "RESOURCE_EXHAUSTED"),
    ]
}
_BY_KIND: dict[type[ForestFlowError], ProtocolStatus] = {
    NoActiveServablesForContract: ProtocolStatus(HTTPStatus.BAD_REQUEST, "FAILED_PRECONDITION"),
}


def protocol_status(error: ForestFlowError) -> ProtocolStatus:
    """How the protocol reports `error` (UNKNOWN over gRPC for a status the table lacks)."""
    for kind in type(error).__mro__:
        if kind in _BY_KIND:
            return _BY_KIND[kind]
    return _BY_STATUS.get(error.status, ProtocolStatus(error.status, "UNKNOWN"))


def is_ready_now(require_ready: Callable[[], None]) -> bool:
    """Whether the app's readiness check lets requests through (health answers say so,
    where other requests get the check's 503)."""
    try:
        require_ready()
    except ServiceUnavailableError:
        return False
    return True
