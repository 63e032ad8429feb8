"""The one error tree of ForestFlow: every error a client can see, with its wire name and status.

This module imports nothing from the package, so every layer can raise these errors and
each transport maps them in exactly one place.
"""

from __future__ import annotations

from collections import deque
from http import HTTPStatus
from typing import ClassVar


class ForestFlowError(Exception):
    """Base of every error ForestFlow reports to a client."""

    wire_name: ClassVar[str] = "UnknownServableError"
    status: ClassVar[HTTPStatus] = HTTPStatus.INTERNAL_SERVER_ERROR

    def __init__(
        self, message: str, *, field: str | None = None, context: dict[str, object] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.context: dict[str, object] = context or {}
        """Structured facts for the client (the contract or FQRV concerned), by wire name."""

    def with_field_prefix(self, prefix: str) -> ForestFlowError:
        """Return the same error with `prefix` put in front of its field path."""
        field = prefix if not self.field else f"{prefix}.{self.field}" if prefix else self.field
        clone = type(self).__new__(type(self))
        ForestFlowError.__init__(clone, self.message, field=field, context=self.context)
        return clone

    def as_kind(self, kind: type[ForestFlowError]) -> ForestFlowError:
        """Return this error re-labelled as `kind` (same message and field)."""
        clone = kind.__new__(kind)
        ForestFlowError.__init__(clone, self.message, field=self.field, context=self.context)
        return clone

    def describe(self) -> str:
        """The message a client reads: the field path first when there is one."""
        return f"{self.field}: {self.message}" if self.field else self.message


class InvalidField(ForestFlowError):
    """A request field is missing, of the wrong type or out of range."""

    wire_name = "InvalidRequestError"
    status = HTTPStatus.UNPROCESSABLE_ENTITY


class MalformedRequest(ForestFlowError):
    """The body is not parseable JSON."""

    wire_name = "MalformedRequestError"
    status = HTTPStatus.BAD_REQUEST


class PayloadTooLarge(ForestFlowError):
    """The body exceeds the configured size limit."""

    wire_name = "PayloadTooLargeError"
    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE

    def __init__(self, limit_bytes: int) -> None:
        super().__init__(f"request body exceeds the limit of {limit_bytes} bytes")


class UnknownName(InvalidField):
    """A polymorphic value names a kind the server does not know."""

    def __init__(self, kind: str, name: str, known: list[str], *, field: str | None = None) -> None:
        super().__init__(
            f"unknown {kind} '{name}'; known: {', '.join(sorted(known)) or '(none)'}", field=field
        )


class UnknownContract(ForestFlowError):
    """No contract with that id exists."""

    wire_name = "UnknownContract"
    status = HTTPStatus.NOT_FOUND

    def __init__(self, contract: object) -> None:
        super().__init__(f"unknown contract {contract}", context={"contract": contract})


class UnknownServable(ForestFlowError):
    """No servable with that FQRV exists."""

    wire_name = "UnknownServable"
    status = HTTPStatus.NOT_FOUND

    def __init__(self, fqrv: object, reason: str | None = None) -> None:
        suffix = f" ({reason})" if reason else ""
        super().__init__(f"unknown servable {fqrv}{suffix}", context={"fqrv": fqrv})


class ServableAlreadyExistsError(ForestFlowError):
    """A servable with the same FQRV is deployed or being deployed."""

    wire_name = "ServableAlreadyExistsError"
    status = HTTPStatus.CONFLICT

    def __init__(self, fqrv: object) -> None:
        super().__init__(f"servable {fqrv} already exists", context={"fqrv": fqrv})


class ContractAlreadyExistsError(ForestFlowError):
    """A contract with the same id exists already."""

    wire_name = "ContractAlreadyExistsError"
    status = HTTPStatus.CONFLICT

    def __init__(self, contract: object) -> None:
        super().__init__(f"contract {contract} already exists", context={"contract": contract})


class ContractNotEmptyError(ForestFlowError):
    """A contract cannot be deleted while it still has servables."""

    wire_name = "ContractNotEmptyError"
    status = HTTPStatus.CONFLICT

    def __init__(self, contract: object, servables: int) -> None:
        super().__init__(
            f"contract {contract} still has {servables} servable(s); delete them first",
            context={"contract": contract},
        )


class CreateServableRequestInvalidError(ForestFlowError):
    """A serve request cannot be carried out: bad flavor, missing file, corrupt model, policy."""

    wire_name = "CreateServableRequestInvalidError"
    status = HTTPStatus.UNPROCESSABLE_ENTITY


class FlavorUnavailable(CreateServableRequestInvalidError):
    """A flavor's optional dependency is not installed."""

    def __init__(self, flavor: str, extra: str, missing: str) -> None:
        super().__init__(
            f"flavor {flavor} needs the '{missing}' package, which is not installed; "
            f"install it with: pip install 'forestflow[{extra}]'"
        )


class ContractValidationError(ForestFlowError):
    """Contract settings are invalid."""

    wire_name = "ContractValidationError"
    status = HTTPStatus.UNPROCESSABLE_ENTITY


class NoActiveServablesForContract(ForestFlowError):
    """The contract has no valid servable with traffic share above zero."""

    wire_name = "NoActiveServablesForContract"
    status = HTTPStatus.UNPROCESSABLE_ENTITY

    def __init__(self, contract: object) -> None:
        super().__init__(
            f"contract {contract} has no active servable to answer the request",
            context={"contract": contract},
        )


class InferenceRequestInvalidError(ForestFlowError):
    """An inference request does not match the model's inputs."""

    wire_name = "InferenceRequestInvalidError"
    status = HTTPStatus.UNPROCESSABLE_ENTITY


class ModelFailedError(ForestFlowError):
    """The model itself failed while scoring; the details go to the server log."""

    wire_name = "UnknownServableError"
    status = HTTPStatus.INTERNAL_SERVER_ERROR


class ServiceUnavailableError(ForestFlowError):
    """The server is starting up, recovering or shutting down."""

    wire_name = "ServiceUnavailable"
    status = HTTPStatus.SERVICE_UNAVAILABLE


class ArtifactTooLarge(CreateServableRequestInvalidError):
    """An artifact, as downloaded or unpacked, exceeds `storage.max_artifact_bytes`."""

    wire_name = "ArtifactTooLargeError"
    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE

    def __init__(self, limit_bytes: int, *, field: str | None = "path") -> None:
        super().__init__(
            f"the artifact exceeds the limit of {limit_bytes} bytes "
            "(setting storage.max_artifact_bytes)",
            field=field,
        )


class InsufficientStorage(ForestFlowError):
    """The data directory's disk is full, or would drop below the free-space reserve."""

    wire_name = "InsufficientStorageError"
    status = HTTPStatus.INSUFFICIENT_STORAGE


class AuthenticationRequired(ForestFlowError):
    """No bearer token, or one the server does not know (or has revoked)."""

    wire_name = "AuthenticationRequired"
    status = HTTPStatus.UNAUTHORIZED


class PermissionDenied(ForestFlowError):
    """The token is valid but its role may not do this."""

    wire_name = "PermissionDenied"
    status = HTTPStatus.FORBIDDEN


class UnsupportedMediaType(ForestFlowError):
    """A JSON route got a body of another content type."""

    wire_name = "UnsupportedMediaTypeError"
    status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE


class HostNotAllowed(ForestFlowError):
    """The `Host` header names neither a loopback name nor the listen address (auth off)."""

    wire_name = "HostNotAllowedError"
    status = HTTPStatus.BAD_REQUEST


class UnknownToken(ForestFlowError):
    """No unrevoked token has that name."""

    wire_name = "UnknownToken"
    status = HTTPStatus.NOT_FOUND

    def __init__(self, name: str) -> None:
        super().__init__(f"no active token is named {name!r}", field="name")


class TokenAlreadyExistsError(ForestFlowError):
    """A token with that name exists (names are never reused, even after a revoke)."""

    wire_name = "TokenAlreadyExistsError"
    status = HTTPStatus.CONFLICT

    def __init__(self, name: str) -> None:
        super().__init__(f"a token named {name!r} exists already", field="name")


class ArtifactChangedError(ForestFlowError):
    """A lost artifact copy was fetched again, and its source no longer holds what was deployed."""

    wire_name = "ArtifactChangedError"
    status = HTTPStatus.CONFLICT

    def __init__(self, source: str, recorded: str, found: str) -> None:
        super().__init__(
            f"the artifact at {source} changed since it was deployed (content {found}, "
            f"deployed {recorded}); it is not served. Deploy the new artifact as a new release"
        )


class RouteNotFound(ForestFlowError):
    """No route has this path and method (the web framework's 404)."""

    wire_name = "NotFound"
    status = HTTPStatus.NOT_FOUND


class MethodNotAllowed(ForestFlowError):
    """A method a named route does not take; the message lists the methods it takes."""

    wire_name = "HttpError"
    status = HTTPStatus.METHOD_NOT_ALLOWED


class InternalServerError(ForestFlowError):
    """An unexpected failure (a bug): the client gets no detail, the server log has it all."""

    wire_name = "InternalServerError"
    status = HTTPStatus.INTERNAL_SERVER_ERROR


def error_kinds() -> dict[str, type[ForestFlowError]]:
    """Every wire name an answer can carry → the class a client raises for it.

    Derived from the tree itself, so it cannot drift: each class that declares a wire name
    of its own, the one nearest the root winning (a subclass that only words its message,
    such as `UnknownName` or `FlavorUnavailable`, answers under its parent's name). The
    root's name, `UnknownServableError`, is `ModelFailedError`'s: the server answers it
    when a model fails.
    """
    kinds: dict[str, type[ForestFlowError]] = {}
    queue: deque[type[ForestFlowError]] = deque(ForestFlowError.__subclasses__())
    while queue:
        kind = queue.popleft()
        if "wire_name" in vars(kind):
            kinds.setdefault(kind.wire_name, kind)
        queue.extend(kind.__subclasses__())
    return kinds
