"""The one place REST maps errors to responses: `{wire_name: {"errorMessage", "field"}}`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from forestflow.api.rest.responses import JSONResponse
from forestflow.domain.codec import encode
from forestflow.errors import (
    ForestFlowError,
    InternalServerError,
    InvalidField,
    MethodNotAllowed,
    RouteNotFound,
)

log = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal server error; see the server log"
"""All an unexpected failure tells the client, in every protocol: the rest is in the log."""


def error_response(error: ForestFlowError) -> JSONResponse:
    """`{wire_name: {errorMessage, field?, contract?/fqrv?, StatusCode}}` as the original sent."""
    body: dict[str, Any] = {key: encode(value) for key, value in error.context.items()}
    body["errorMessage"] = error.describe()
    if error.field:
        body["field"] = error.field
    body["StatusCode"] = int(error.status)
    # RFC 9110: a 401 names the scheme the client should use
    headers = {"WWW-Authenticate": "Bearer"} if error.status == HTTPStatus.UNAUTHORIZED else None
    return JSONResponse({error.wire_name: body}, status_code=int(error.status), headers=headers)


def answer(error: ForestFlowError, method: str, path: str) -> JSONResponse:
    """`error_response`, logging the server's own failures (5xx) first."""
    if int(error.status) >= 500:
        log.error("%s %s failed: %s", method, path, error.message)
    return error_response(error)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers; anything unexpected becomes a 500 without a stack trace."""

    async def on_forestflow_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, ForestFlowError)
        return answer(error, request.method, request.url.path)

    async def on_validation_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, RequestValidationError)
        first = error.errors()[0] if error.errors() else {}
        location = [str(part) for part in first.get("loc", ()) if part not in ("path", "body")]
        message = str(first.get("msg", "invalid request"))
        return error_response(InvalidField(message, field=".".join(location) or None))

    async def on_http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        status, headers = error.status_code, None
        if status == HTTPStatus.METHOD_NOT_ALLOWED:
            allowed = methods_of_named_routes(request.app, request.scope)
            if allowed:
                detail = (
                    f"method {request.method} is not allowed on {request.url.path}; "
                    f"it takes {', '.join(allowed)}"
                )
                headers = {"Allow": ", ".join(allowed)}
            else:  # only a pattern of names matched, such as /{organization}/{project}/{n}
                status = HTTPStatus.NOT_FOUND
        kind = RouteNotFound if status == HTTPStatus.NOT_FOUND else MethodNotAllowed
        name = kind.wire_name
        if status == HTTPStatus.NOT_FOUND:
            detail = "no such route"
        elif status != HTTPStatus.METHOD_NOT_ALLOWED:
            detail = str(error.detail)
        return JSONResponse(
            {name: {"errorMessage": detail}}, status_code=int(status), headers=headers
        )

    app.add_exception_handler(ForestFlowError, on_forestflow_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_middleware(InternalErrorMiddleware)


def methods_of_named_routes(app: FastAPI, scope: Scope) -> list[str]:
    """The methods of the routes at this path that name something of their own (a path
    with a fixed segment, such as `.../score` or `/servable`), sorted.

    A path that only fits a pattern of names, such as `/{organization}/{project}/{n}`,
    is not a route the client meant: it is answered 404, not 405.
    """
    allowed: set[str] = set()
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        template = getattr(route, "path_format", "")
        fixed = any(part and not part.startswith("{") for part in template.split("/"))
        if fixed and route.matches(scope)[0] is Match.PARTIAL:
            allowed.update(getattr(route, "methods", None) or ())
    return sorted(allowed)


class InternalErrorMiddleware:
    """Answer an unexpected exception with a clean 500 and keep the connection usable.

    Starlette's own catch-all handler answers and then re-raises, which makes the ASGI
    server log a second traceback and drop the connection; this one answers and stops.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # noqa: D102
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("%s %s failed unexpectedly", scope.get("method"), scope.get("path"))
            if started:  # too late to answer; let the server close the connection
                raise
            await internal_error_response()(scope, receive, send)


def internal_error_response() -> JSONResponse:
    """The 500 for an unexpected exception: no detail for the client, all in the log."""
    body = {InternalServerError.wire_name: {"errorMessage": INTERNAL_MESSAGE}}
    return JSONResponse(body, status_code=500)


def protocol_route(
    error_response: Callable[[ForestFlowError], Response],
    internal_response: Callable[[], Response],
) -> type[APIRoute]:
    """A route class for a protocol that answers errors in its own form: a ForestFlow error
    becomes `error_response(error)` (logged when it is the server's own, 5xx), anything
    unexpected `internal_response()`; the framework's own HTTP errors pass through."""

    class ProtocolRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def answer(request: Request) -> Response:
                try:
                    return await handler(request)
                except ForestFlowError as error:
                    response = error_response(error)
                    if response.status_code >= 500:
                        log.error(
                            "%s %s failed: %s", request.method, request.url.path, error.message
                        )
                    return response
                except (HTTPException, RequestValidationError):
                    raise
                except Exception:
                    log.exception("%s %s failed unexpectedly", request.method, request.url.path)
                    return internal_response()

            return answer

    return ProtocolRoute
