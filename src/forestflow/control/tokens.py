"""Bearer tokens: created, listed, revoked, and checked on every request (docs/security.md).

A token is `ff_` plus 32 random bytes (URL-safe base64). Only its SHA-256 digest is
stored: tokens are random, not passwords, so one fast hash is enough and a stolen state
file yields no usable token. Checks are answered from memory for `cache_ttl_ms`, so a
token revoked by another process (`forestflow token revoke` while the server runs) stops
working within that time; one revoked through this registry stops at once.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from forestflow.clock import Clock
from forestflow.domain.roles import Role
from forestflow.errors import InvalidField, TokenAlreadyExistsError, UnknownToken
from forestflow.store.base import Store, TokenExists, TokenRecord

__all__ = [
    "ANONYMOUS",
    "TOKEN_PREFIX",
    "Principal",
    "TokenRecord",
    "TokenRegistry",
    "digest",
    "parse_role",
]

TOKEN_PREFIX = "ff_"  # noqa: S105 - a public marker, not a secret
_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
_MAX_TOKEN_LENGTH = 256


@dataclass(frozen=True, slots=True)
class Principal:
    """Who makes a request: a token's name and role; `name` None when auth is off."""

    name: str | None
    role: Role


ANONYMOUS = Principal(None, Role.ADMIN)
"""The caller when authentication is off: every permission, no name in the history."""


def digest(token: str) -> str:
    """The stored form of `token`."""
    return hashlib.sha256(token.encode()).hexdigest()


def parse_role(value: str) -> Role:
    """The role named `value`; 422 listing the roles otherwise."""
    try:
        return Role(value)
    except ValueError:
        known = ", ".join(role.value for role in Role)
        raise InvalidField(f"unknown role {value!r}; known: {known}", field="role") from None


class TokenRegistry:
    """Tokens in the state store, with a short-lived cache of successful checks."""

    def __init__(self, store: Store, clock: Clock, *, cache_ttl_ms: int = 5000) -> None:
        self._store = store
        self._clock = clock
        self._cache_ttl_ms = cache_ttl_ms
        self._cache: dict[str, tuple[Principal, int]] = {}

    def create(self, name: str, role: Role, actor: str | None = None) -> str:
        """Record a new token and return it; it is never shown again."""
        if not _NAME.fullmatch(name):
            raise InvalidField("1 to 64 of A-Z a-z 0-9 _ . @ -", field="name")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        record = TokenRecord(name, role.value, digest(token), self._clock.now_ms())
        try:
            self._store.add_token(record, actor)
        except TokenExists:
            raise TokenAlreadyExistsError(name) from None
        return token

    def tokens(self) -> list[TokenRecord]:
        """Every token, revoked ones included."""
        return self._store.tokens()

    def revoke(self, name: str, actor: str | None = None) -> None:
        """Revoke the token `name`; it stops working at once here."""
        if not self._store.revoke_token(name, self._clock.now_ms(), actor):
            raise UnknownToken(name)
        self._cache = {k: v for k, v in self._cache.items() if v[0].name != name}

    def has_admin(self) -> bool:
        """Whether an unrevoked admin token exists."""
        return any(t.role == Role.ADMIN and t.revoked_at_ms is None for t in self.tokens())

    def authenticate(self, token: str) -> Principal | None:
        """The principal of an unrevoked token, else None."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > _MAX_TOKEN_LENGTH:
            return None
        key = digest(token)
        now = self._clock.now_ms()
        cached = self._cache.get(key)
        if cached is not None and now - cached[1] < self._cache_ttl_ms:
            return cached[0]
        record = self._store.token_by_digest(key)
        if record is None:
            self._cache.pop(key, None)
            return None
        principal = Principal(record.name, Role(record.role))
        self._cache[key] = (principal, now)
        return principal
