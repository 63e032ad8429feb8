"""The dashboard's routes under `/ui` (docs/dashboard.md).

- `GET /ui` and `GET /ui/contracts/{org}/{project}/{n}`: the page shell. It holds no data,
  so it needs no token (a browser cannot send a bearer header when it navigates); it asks
  for one when the server requires them.
- `GET /ui/static/{name}`: htmx (vendored, see static/README.md), the page's script and
  style sheet.
- `GET /ui/fragments/...`: the HTML fragments the page polls. Each is checked by the same
  `Guard` as the JSON routes, with the permission of the JSON route that shows the same
  facts: the contracts and their servables need `read` (as `/contracts/list` and
  `…/stats`); the history, the servables that went (as `…/{n}/history`) and the recent
  predictions (as `/prediction-log/events`: they carry the requests' features) need
  `read-history`. A part the token's role may not read is replaced by a sentence saying
  so, or left out; a missing or refused token is a 401 the page answers by asking for one.

Every answer carries a Content-Security-Policy that allows the page's own scripts, styles
and requests only (`CSP`), and fragments are never cached.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from forestflow.api.rest.auth import Guard
from forestflow.api.ui import templates
from forestflow.api.ui.panels import contract_panel
from forestflow.api.ui.predictions import recent_predictions
from forestflow.api.ui.sampler import DEFAULT_WINDOW_MS, MetricsSampler
from forestflow.clock import Clock
from forestflow.control.lineage import ServableHistory, ServableState
from forestflow.control.plane import ControlPlane, HistoryEntry
from forestflow.control.tokens import Principal
from forestflow.domain.codec import encode
from forestflow.domain.fqrv import Contract
from forestflow.domain.roles import Permission
from forestflow.errors import ForestFlowError, PermissionDenied, RouteNotFound
from forestflow.predictionlog.ring import RingSink

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)
"""Only the server's own scripts, styles and requests; no inline code, no framing, and no
form submission (the token form is read by the page's script, never sent as a form)."""
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
STATIC_TYPES = {
    "htmx.min.js": "text/javascript; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
DEFAULT_REFRESH_S = 2
MAX_REFRESH_S = 60
HISTORY_SCAN = 500
"""Most recent history entries searched for a contract's own."""
SHOWN = 12
"""History entries and predictions shown per contract."""
GONE_SHOWN = 5
"""Servables that went shown per contract (among its last `SHOWN` deploys)."""


def html_response(body: str, status: int = 200, *, cache: bool = False) -> Response:
    """An HTML answer with the dashboard's security headers (never cached unless `cache`)."""
    headers = {**SECURITY_HEADERS, "Cache-Control": "no-cache" if cache else "no-store"}
    return Response(body, status, headers, media_type="text/html; charset=utf-8")


@dataclass(frozen=True, slots=True)
class _Static:
    body: bytes
    etag: str
    media_type: str


def _load_static() -> dict[str, _Static]:
    folder = resources.files("forestflow.api.ui").joinpath("static")
    found = {}
    for name, media_type in STATIC_TYPES.items():
        body = folder.joinpath(name).read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        found[name] = _Static(body, etag, media_type)
    return found


class Dashboard:
    """The `/ui` routes over the server's control plane and its ring of recent events."""

    def __init__(
        self,
        control: ControlPlane,
        events: RingSink,
        guard: Guard,
        clock: Clock,
        *,
        require_ready: Callable[[], None],
        version: str,
        window_ms: int = DEFAULT_WINDOW_MS,
    ) -> None:
        self._control = control
        self._events = events
        self._guard = guard
        self._clock = clock
        self._require_ready = require_ready
        self._version = version
        self._window_ms = window_ms
        self.sampler = MetricsSampler(control, clock)
        self._static = _load_static()

    def router(self) -> APIRouter:
        """The routes; none of them is part of the API's OpenAPI document."""
        router = APIRouter(include_in_schema=False)
        router.add_api_route("/ui", self.page, methods=["GET"])
        router.add_api_route("/ui/", self.page, methods=["GET"])
        router.add_api_route(
            "/ui/contracts/{organization}/{project}/{contract_number:int}",
            self.contract_page,
            methods=["GET"],
        )
        router.add_api_route("/ui/static/{name}", self.static, methods=["GET"])
        router.add_api_route("/ui/fragments/contracts", self.contracts, methods=["GET"])
        router.add_api_route(
            "/ui/fragments/contracts/{organization}/{project}/{contract_number:int}",
            self.contract,
            methods=["GET"],
        )
        return router

    # ------------------------------------------------------------------ pages

    async def page(self, refresh: int = DEFAULT_REFRESH_S) -> Response:
        """The dashboard with no contract chosen."""
        return self._page(None, refresh)

    async def contract_page(
        self,
        organization: str,
        project: str,
        contract_number: int,
        refresh: int = DEFAULT_REFRESH_S,
    ) -> Response:
        """The dashboard showing one contract (a name that is not valid is a 422 notice)."""
        try:
            contract = Contract(organization, project, contract_number)
        except ForestFlowError as error:
            return html_response(templates.notice(error), int(error.status))
        return self._page(contract, refresh)

    def _page(self, contract: Contract | None, refresh: int) -> Response:
        body = templates.page(
            auth=self._guard.enabled,
            contract=contract,
            refresh_s=min(max(refresh, 1), MAX_REFRESH_S),
            version=self._version,
        )
        return html_response(body, cache=True)

    async def static(self, request: Request, name: str) -> Response:
        """A vendored or own static file, revalidated by its ETag."""
        found = self._static.get(name)
        if found is None:
            raise RouteNotFound(f"no static file {name!r} in the dashboard")
        headers = {**SECURITY_HEADERS, "Cache-Control": "no-cache", "ETag": found.etag}
        if request.headers.get("if-none-match") == found.etag:
            return Response(status_code=304, headers=headers)
        return Response(found.body, headers=headers, media_type=found.media_type)

    # -------------------------------------------------------------- fragments

    async def contracts(self, request: Request) -> Response:
        """Who is looking, and the list of contracts (`read`)."""

        async def render(principal: Principal) -> str:
            who = templates.principal_line(principal, self._guard.enabled)
            # the contract the page shows, to mark it in the list
            _, _, shown = request.headers.get("hx-current-url", "").partition("/ui/contracts/")
            selected = shown.split("?", 1)[0] or None
            return templates.contracts_list(self._control.contracts(), who, selected)

        return await self._fragment(request, Permission.READ, render)

    async def contract(
        self, request: Request, organization: str, project: str, contract_number: int
    ) -> Response:
        """One contract: its servables (`read`), its recent predictions and its history
        (`read-history`)."""

        async def render(_: Principal) -> str:
            contract = Contract(organization, project, contract_number)
            header = request.headers.get("authorization")
            panel = contract_panel(
                self._control,
                self.sampler,
                contract,
                window_ms=self._window_ms,
                gone=await self._gone(header, contract),
            )
            sections = [
                self._restricted(
                    header,
                    "recent predictions",
                    "predictions",
                    lambda: templates.predictions_table(
                        recent_predictions(self._events, contract, SHOWN)
                    ),
                ),
                self._restricted(
                    header,
                    "history",
                    "history",
                    lambda: templates.history_table(self._history(contract)),
                ),
            ]
            return templates.contract_view(panel, sections, self._clock.now_ms())

        return await self._fragment(request, Permission.READ, render)

    async def _fragment(
        self,
        request: Request,
        permission: Permission,
        render: Callable[[Principal], Awaitable[str]],
    ) -> Response:
        """`render` for the caller if the server is ready and the caller may `permission`;
        else the refusal as a notice with its status (401 makes the page ask for a token)."""
        try:
            self._require_ready()
            principal = self._guard.authorize(request.headers.get("authorization"), permission)
            self.sampler.sample()
            return html_response(await render(principal))
        except ForestFlowError as error:
            response = html_response(templates.notice(error), int(error.status))
            if error.status == 401:
                response.headers["WWW-Authenticate"] = "Bearer"
            return response

    def _restricted(
        self, header: str | None, what: str, section_id: str, render: Callable[[], str]
    ) -> str:
        """A part of a fragment that needs `read-history`: rendered, or why it is not."""
        title = what[0].upper() + what[1:]
        try:
            self._guard.authorize(header, Permission.READ_HISTORY)
        except PermissionDenied as error:
            return templates.section(title, section_id, templates.refused(error, what))
        return templates.section(title, section_id, render())

    async def _gone(self, header: str | None, contract: Contract) -> tuple[ServableHistory, ...]:
        """The contract's last servables that expired or were deleted, for a caller who may
        read the history (which is what tells why a servable went); none for another."""
        try:
            self._guard.authorize(header, Permission.READ_HISTORY)
        except PermissionDenied:
            return ()
        went = (ServableState.EXPIRED, ServableState.DELETED)
        lives = await self._control.contract_history(contract, limit=SHOWN)
        return tuple(life for life in lives if life.state in went)[:GONE_SHOWN]

    def _history(self, contract: Contract) -> list[HistoryEntry]:
        """The contract's most recent history entries (among the last `HISTORY_SCAN`)."""
        wanted = encode(contract)
        found = []
        for entry in self._control.history(limit=HISTORY_SCAN):
            payload = entry.payload
            fqrv = payload.get("fqrv")
            named = payload.get("contract")
            if named is None and isinstance(fqrv, dict):
                named = fqrv.get("contract")
            if named == wanted:
                found.append(entry)
                if len(found) == SHOWN:
                    break
        return found
