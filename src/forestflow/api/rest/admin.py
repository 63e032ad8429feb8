"""Admin routes: tokens (create, list, revoke) and the history of control commands."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request

from forestflow.api.rest import route_docs as docs
from forestflow.api.rest.auth import Guard
from forestflow.api.rest.bodies import read_json
from forestflow.api.rest.endpoints import actor, history_before, history_page, route_adder
from forestflow.api.rest.responses import JSONResponse, wrapped
from forestflow.control.plane import ControlPlane, HistoryEntry
from forestflow.control.tokens import TokenRecord, TokenRegistry, parse_role
from forestflow.domain.roles import Permission
from forestflow.errors import InvalidField


def token_body(token: TokenRecord) -> dict[str, Any]:
    """A token as listed: never its secret nor its digest."""
    return {
        "name": token.name,
        "role": token.role,
        "createdAtMS": token.created_at_ms,
        "revokedAtMS": token.revoked_at_ms,
    }


def history_body(entry: HistoryEntry) -> dict[str, Any]:
    """One history entry: what happened, when, and which token did it."""
    return {
        "seq": entry.seq,
        "kind": entry.kind,
        "recordedAtMS": entry.recorded_at_ms,
        "actor": entry.actor,
        "event": dict(entry.payload),
    }


def build_admin_router(
    tokens: TokenRegistry, control: ControlPlane, guard: Guard, max_request_bytes: int
) -> APIRouter:
    """`/admin/tokens` (admin only) and `/history` (admins and deployers)."""
    router = APIRouter()
    add = route_adder(router, guard, Permission.ADMIN)

    @add("POST", ["/admin/tokens"], doc=docs.CREATE_TOKEN)
    async def create_token(request: Request) -> JSONResponse:
        body = await read_json(request, max_request_bytes)
        if not isinstance(body, dict):
            raise InvalidField('expected {"name": "...", "role": "..."}')
        name, role = body.get("name"), body.get("role")
        if not isinstance(name, str):
            raise InvalidField("expected a string", field="name")
        if not isinstance(role, str):
            raise InvalidField("expected a string", field="role")
        secret = tokens.create(name, parse_role(role), actor=actor(request))
        return wrapped("TokenCreated", {"name": name, "role": role, "token": secret}, 201)

    @add("GET", ["/admin/tokens"], doc=docs.LIST_TOKENS)
    async def list_tokens() -> JSONResponse:
        return wrapped("Tokens", {"tokens": [token_body(t) for t in tokens.tokens()]})

    @add("DELETE", ["/admin/tokens/{name}"], doc=docs.REVOKE_TOKEN)
    async def revoke_token(request: Request, name: str) -> JSONResponse:
        tokens.revoke(name, actor=actor(request))
        return wrapped("TokenRevoked", {"name": name})

    @add("GET", ["/history"], Permission.READ_HISTORY, doc=docs.HISTORY)
    async def history(before: int | None = None, limit: int = 100) -> JSONResponse:
        entries = control.history(before_seq=history_before(before), limit=history_page(limit))
        return wrapped("History", {"entries": [history_body(e) for e in entries]})

    return router
