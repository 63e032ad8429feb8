"""The score routes served straight from ASGI, in front of the web framework.

`POST /{organization}/{project}/{n}/score` and `POST /{organization}/{project}/{n}/{release}/score`
are the hot path. The framework's middleware, route matching among every route,
dependency solving and request objects cost more than parsing and scoring a one-row
request, so `ScoreLane` wraps the framework app, recognises these two paths by their
shape and serves them itself, with the same checks in the same order as the framework
stack and the routes in `endpoints.py`: the `Host` guard (authentication off), readiness,
permission, content type, size, JSON; errors are answered by the same `errors.answer`,
and an unexpected exception by the same clean 500. Every other request, any method but
POST, and (when CORS is configured) any request carrying an `Origin` goes on to the
framework unchanged; the routes in `endpoints.py` stay registered for the API
documentation and serve those requests.

The Open Inference Protocol's `POST /v2/models/{model}[/versions/{version}]/infer` is
served the same way, with that route's checks in its order (permission, then readiness)
and its errors in the protocol's `{"error": ...}` form (`openinference.rest`).

Being in front of everything, the lane also counts every HTTP request in `HttpTelemetry`:
by route template, method and status class, with its latency (`http_metrics.py`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from forestflow.api.openinference.models import ModelCatalog
from forestflow.api.openinference.rest import (
    HEADER_LENGTH,
    JSON_HEADERS,
    MODEL,
    VERSION,
    answer_infer,
    check_body_headers,
    decode_body,
    error_answer,
    infer_target,
)
from forestflow.api.rest.auth import Guard, host_allowed, host_refusal
from forestflow.api.rest.bodies import (
    check_declared_length,
    check_json_type,
    parse_json,
    receive_body,
)
from forestflow.api.rest.converters import parse_inference_request, prediction_body
from forestflow.api.rest.endpoints import CONTRACT, SERVABLE
from forestflow.api.rest.errors import INTERNAL_MESSAGE, answer, internal_error_response
from forestflow.api.rest.http_metrics import UNMATCHED, HttpTelemetry
from forestflow.domain.fqrv import FQRV, Contract
from forestflow.domain.roles import Permission
from forestflow.errors import ForestFlowError
from forestflow.serving.inference import InferenceService

log = logging.getLogger(__name__)

_JSON_HEADERS = (b"content-type", b"application/json")


ScorePath = tuple[str, str, int, str | None]
"""organization, project, contract number, release (None: the contract's route)"""


def score_path(path: str) -> ScorePath | None:
    """The names in a score path; None for any other path.

    The same paths the routes match: non-empty segments without '/', and a contract
    number of ASCII digits. The names are checked later, as the endpoints check them.
    """
    if not path.endswith("/score"):
        return None
    parts = path.split("/")
    if len(parts) not in (5, 6) or parts[0] or not all(parts[1:-1]):
        return None
    number = parts[3]
    if not (number.isascii() and number.isdigit()):
        return None
    return parts[1], parts[2], int(number), parts[4] if len(parts) == 6 else None


class ScoreLane:
    """ASGI app serving the score routes; everything else goes to `app`."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        inference: InferenceService,
        guard: Guard,
        require_ready: Callable[[], None],
        max_request_bytes: int,
        allowed_hosts: Iterable[str] | None,
        cors: bool,
        catalog: ModelCatalog | None = None,
        http: HttpTelemetry | None = None,
    ) -> None:
        """`allowed_hosts`: the `Host` guard's list (None when authentication is on);
        `cors`: whether CORS is configured (its requests go to the framework); `catalog`:
        the Open Inference Protocol's models, when its inference route is served here;
        `http`: where HTTP requests are counted (a fresh one when not given)."""
        self.app = app
        self._inference = inference
        self._guard = guard
        self._require_ready = require_ready
        self._limit = max_request_bytes
        self._hosts = None if allowed_hosts is None else frozenset(h.lower() for h in allowed_hosts)
        self._cors = cors
        self._catalog = catalog
        self.http = http if http is not None else HttpTelemetry()
        # bound once: the lane's routes count without a lookup (by release given or not)
        self._score_calls = (
            self.http.route(CONTRACT + "/score", "POST"),
            self.http.route(SERVABLE + "/score", "POST"),
        )
        self._infer_calls = (
            self.http.route(MODEL + "/infer", "POST"),
            self.http.route(VERSION + "/infer", "POST"),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # noqa: D102
        target: ScorePath | tuple[str, str] | None = None
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            target = score_path(path)
            if target is None and self._catalog is not None and path.startswith("/v2/"):
                target = infer_target(path)
        headers = _headers(scope) if target is not None else {}
        if target is None or (self._cors and "origin" in headers):
            await self._pass(scope, receive, send)
            return
        started = time.perf_counter()
        if len(target) == 2:
            status = await self._infer(target, headers, scope, receive, send)
            self._infer_calls[target[1] != ""].observe(status, time.perf_counter() - started)
            return
        # served here rather than in a method of its own: a coroutine less per request
        try:
            body = await self._score(target, headers, receive)
        except ForestFlowError as error:
            response = answer(error, "POST", scope["path"])
        except Exception:
            log.exception("POST %s failed unexpectedly", scope["path"])
            response = internal_error_response()
        else:
            await _send(send, 200, body, [_JSON_HEADERS])
            self._score_calls[target[3] is not None].observe(200, time.perf_counter() - started)
            return
        await response(scope, receive, send)
        calls = self._score_calls[target[3] is not None]
        calls.observe(response.status_code, time.perf_counter() - started)

    async def _pass(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Hand the request to the framework, counting it under the route it matched."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # the framework raised before it answered

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            template = getattr(scope.get("route"), "path", None) or UNMATCHED
            calls = self.http.route(template, scope["method"])
            calls.observe(status, time.perf_counter() - started)

    async def _infer(
        self,
        target: tuple[str, str],
        headers: dict[str, str],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> int:
        """Answer an inference request; return its status."""
        assert self._catalog is not None
        try:
            self._check_host(headers)
        except ForestFlowError as error:  # answered as the framework's HostGuard answers it
            response = answer(error, "POST", scope["path"])
            await response(scope, receive, send)
            return response.status_code
        status = 200
        try:
            self._guard.authorize(headers.get("authorization"), Permission.SCORE)
            self._require_ready()
            check_body_headers(headers)
            check_declared_length(headers.get("content-length"), self._limit)
            raw = await receive_body(receive, self._limit)
            body, answer_headers = await answer_infer(
                self._catalog, *target, decode_body(headers, raw)
            )
        except ForestFlowError as error:
            status, body, answer_headers = error_answer(error)
            if status >= 500:
                log.error("POST %s failed: %s", scope["path"], error.message)
        except Exception:
            log.exception("POST %s failed unexpectedly", scope["path"])
            status, body = 500, orjson.dumps({"error": INTERNAL_MESSAGE})
            answer_headers = {"content-type": "application/json"}
        encoded = (
            [_JSON_HEADERS]
            if answer_headers is JSON_HEADERS
            else [
                (name.encode("latin-1"), value.encode("latin-1"))
                for name, value in answer_headers.items()
            ]
        )
        await _send(send, status, body, encoded)
        return status

    def _check_host(self, headers: dict[str, str]) -> None:
        if self._hosts is not None:
            host = headers.get("host", "")
            if not host_allowed(host, self._hosts):
                raise host_refusal(host)

    async def _score(self, target: ScorePath, headers: dict[str, str], receive: Receive) -> bytes:
        self._check_host(headers)
        self._require_ready()
        self._guard.authorize(headers.get("authorization"), Permission.SCORE)
        check_json_type(headers.get("content-type"))
        check_declared_length(headers.get("content-length"), self._limit)
        organization, project, number, release = target
        contract = Contract(organization, project, number)
        fqrv = None if release is None else FQRV(contract, release)
        frame = parse_inference_request(parse_json(await receive_body(receive, self._limit)))
        if fqrv is None:
            scored = await self._inference.score(contract, frame)
        else:
            scored = await self._inference.score_servable(fqrv, frame)
        return orjson.dumps(
            prediction_body(scored.fqrv, scored.prediction), option=orjson.OPT_SERIALIZE_NUMPY
        )


_WANTED = frozenset(
    {
        b"host",
        b"authorization",
        b"content-type",
        b"content-length",
        b"origin",
        b"content-encoding",
        HEADER_LENGTH.encode(),
    }
)


async def _send(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _headers(scope: Scope) -> dict[str, str]:
    """The headers the lane reads (the first of each), by lower-case name."""
    found: dict[str, str] = {}
    for name, value in scope["headers"]:
        if name in _WANTED:
            found.setdefault(name.decode("latin-1"), value.decode("latin-1"))
    return found
