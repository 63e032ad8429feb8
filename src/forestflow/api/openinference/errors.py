"""The protocol's status for each error: one table, which REST answers and gRPC maps to codes.

The protocol's clients know bad input as 400 (gRPC `INVALID_ARGUMENT`), where the BASIC API
answers 422; a contract without an active servable is unavailable for now (503,
`UNAVAILABLE`) rather than a bad request. Everything else keeps the status of its error.
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus

from forestflow.errors import ForestFlowError, NoActiveServablesForContract, ServiceUnavailableError

_BY_STATUS = {HTTPStatus.UNPROCESSABLE_ENTITY: HTTPStatus.BAD_REQUEST}
_BY_KIND: dict[type[ForestFlowError], HTTPStatus] = {
    NoActiveServablesForContract: HTTPStatus.SERVICE_UNAVAILABLE,
}

INTERNAL_MESSAGE = "internal server error; see the server log"


def protocol_status(error: ForestFlowError) -> HTTPStatus:
    """The status the protocol reports `error` with."""
    for kind in type(error).__mro__:
        if kind in _BY_KIND:
            return _BY_KIND[kind]
    return _BY_STATUS.get(error.status, error.status)


def is_ready_now(require_ready: Callable[[], None]) -> bool:
    """Whether the app's readiness check lets requests through (health answers say so,
    where other requests get the check's 503)."""
    try:
        require_ready()
    except ServiceUnavailableError:
        return False
    return True
