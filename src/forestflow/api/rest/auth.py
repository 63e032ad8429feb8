"""Who may call what (docs/security.md): bearer tokens and roles, and the browser guards.

With authentication on, every route but health and the API docs needs a token whose
role grants the route's `Permission`: 401 without a valid token, 403 for the wrong role.
With it off, every caller is `ANONYMOUS` (all permissions), and `HostGuard` refuses
requests whose `Host` is not a loopback name or the listen address, so a web page the
operator visits cannot reach the server through DNS rebinding.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterable

from fastapi import Depends
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from forestflow.api.rest.errors import error_response
from forestflow.control.tokens import ANONYMOUS, Principal, TokenRegistry
from forestflow.domain.roles import Permission, allows
from forestflow.errors import AuthenticationRequired, HostNotAllowed, PermissionDenied

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
_SCHEME = "bearer "


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or address) is only reachable from this machine."""
    name = host.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def auth_required(mode: str, listen_host: str) -> bool:
    """`security.auth` resolved: `auto` requires tokens unless only loopback listens."""
    if mode == "auto":
        return not is_loopback(listen_host)
    return mode == "required"


def principal_of(request: Request) -> Principal:
    """The caller, as established by the route's permission check."""
    principal: Principal = getattr(request.state, "principal", ANONYMOUS)
    return principal


class Guard:
    """Builds the per-route permission checks; `tokens` None means auth is off."""

    def __init__(self, tokens: TokenRegistry | None) -> None:
        self._tokens = tokens

    @property
    def enabled(self) -> bool:
        """Whether requests must carry a token."""
        return self._tokens is not None

    def require(self, permission: Permission) -> Callable[[Request], Awaitable[None]]:
        """A FastAPI dependency that lets through only callers allowed `permission`."""

        async def check(request: Request) -> None:
            request.state.principal = self.authorize(
                request.headers.get("authorization"), permission
            )

        return check

    def authorize(self, header: str | None, permission: Permission) -> Principal:
        """The caller named by an `Authorization` header value, if allowed `permission`:
        401 without a valid token, 403 for a role without it; ANONYMOUS with auth off."""
        tokens = self._tokens
        if tokens is None:
            return ANONYMOUS
        principal = self._authenticate(tokens, header)
        if not allows(principal.role, permission):
            raise PermissionDenied(
                f"the role {principal.role.value} may not {permission.value} "
                f"(token {principal.name!r})"
            )
        return principal

    def dependencies(self, permission: Permission) -> list[object]:
        """`dependencies=` for a route that needs `permission`."""
        return [Depends(self.require(permission))]

    @staticmethod
    def _authenticate(tokens: TokenRegistry, header: str | None) -> Principal:
        if not header:
            raise AuthenticationRequired(
                "this server requires a bearer token: 'Authorization: Bearer <token>'"
            )
        if not header.lower().startswith(_SCHEME):
            raise AuthenticationRequired("the Authorization header must be 'Bearer <token>'")
        principal = tokens.authenticate(header[len(_SCHEME) :].strip())
        if principal is None:
            raise AuthenticationRequired("the bearer token is not valid (unknown or revoked)")
        return principal


class HostGuard:
    """Refuses requests whose `Host` header names a host other than the allowed ones."""

    def __init__(self, app: ASGIApp, allowed: Iterable[str]) -> None:
        self.app = app
        self._allowed = frozenset(h.lower() for h in allowed)

    def allows(self, host_header: str) -> bool:
        """Whether a `Host` header value (port included or not) is acceptable."""
        return host_allowed(host_header, self._allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # noqa: D102
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
        if self.allows(host):
            await self.app(scope, receive, send)
            return
        await error_response(host_refusal(host))(scope, receive, send)


def host_allowed(host_header: str, allowed: frozenset[str]) -> bool:
    """Whether a `Host` header value names a loopback host or one of `allowed` (lower-case)."""
    host = host_header.strip().lower()
    if host.startswith("["):
        host = host[: host.find("]") + 1] if "]" in host else host
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    return is_loopback(host) or host.strip("[]") in allowed or host in allowed


def host_refusal(host: str) -> HostNotAllowed:
    """The error for a request whose `Host` is not allowed."""
    return HostNotAllowed(
        f"Host {host!r} is not this server's; with authentication off only loopback "
        "names and the listen address are accepted (setting security.allowed_hosts)",
        field="Host",
    )
