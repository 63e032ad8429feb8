"""The gRPC server's two interceptors: bearer tokens per RPC, and errors to status codes.

`ErrorInterceptor` is the one place gRPC maps errors: a `ForestFlowError` becomes the code
of its protocol status (the same table the REST routes answer with), anything else
`INTERNAL` with a generic message and the traceback in the server log.
`AuthInterceptor` checks the `authorization: Bearer <token>` metadata with the REST API's
own `Guard`: the same tokens, roles and messages.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc
import grpc.aio

from forestflow.api.openinference.errors import protocol_status
from forestflow.api.rest.auth import Guard
from forestflow.api.rest.errors import INTERNAL_MESSAGE
from forestflow.domain.roles import Permission
from forestflow.errors import ForestFlowError

log = logging.getLogger(__name__)


Behavior = Callable[[Any, Any], Awaitable[Any]]
"""An RPC's implementation: (request, grpc.aio.ServicerContext) -> response."""


def status_code(error: ForestFlowError) -> grpc.StatusCode:
    """The gRPC code `error` is reported with (the table in `openinference.errors`)."""
    return grpc.StatusCode[protocol_status(error).grpc]


def _wrap(
    handler: grpc.RpcMethodHandler | None, around: Callable[[Behavior], Behavior]
) -> grpc.RpcMethodHandler | None:
    """`handler` with its unary-unary behavior wrapped by `around` (others as they are)."""
    if handler is None or handler.unary_unary is None:
        return handler
    return grpc.unary_unary_rpc_method_handler(
        around(handler.unary_unary),
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class ErrorInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc has no types
    """Answers errors with their status code and message; the server stays up."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        """Wrap the RPC's behavior in the error mapping."""
        method = handler_call_details.method

        def around(behavior: Behavior) -> Behavior:
            async def mapped(request: Any, context: Any) -> Any:
                try:
                    return await behavior(request, context)
                except grpc.aio.AbortError:
                    raise
                except ForestFlowError as error:
                    code = status_code(error)
                    if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
                        log.error("%s failed: %s", method, error.message)
                    await context.abort(code, error.describe())
                except Exception:
                    log.exception("%s failed unexpectedly", method)
                    await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)

            return mapped

        return _wrap(await continuation(handler_call_details), around)


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Lets an RPC through only for callers whose role grants its permission, checked by
    the REST API's own `Guard` on the `authorization` metadata (`Bearer <token>`).

    `permissions` maps full method names to the permission they need (None: open to all);
    a method it does not name needs ADMIN.
    """

    def __init__(self, guard: Guard, permissions: Mapping[str, Permission | None]) -> None:
        self._guard = guard
        self._permissions = dict(permissions)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        """Wrap the RPC's behavior in the permission check."""
        handler = await continuation(handler_call_details)
        guard = self._guard
        permission = self._permissions.get(handler_call_details.method, Permission.ADMIN)
        if not guard.enabled or permission is None:
            return handler

        def around(behavior: Behavior) -> Behavior:
            async def checked(request: Any, context: Any) -> Any:
                metadata = dict(context.invocation_metadata() or ())
                guard.authorize(metadata.get("authorization"), permission)
                return await behavior(request, context)

            return checked

        return _wrap(handler, around)
