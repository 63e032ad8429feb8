"""The OpenAPI document behind `/docs` and `/openapi.json`, true to what the routes do.

The endpoints read their bodies themselves, so the web framework knows neither their
request bodies nor their answers. Each route declares them instead, as a `RouteDoc`
given to `route_adder`: the success answer with its real status, the request body with
examples from the docs, and the errors particular to the route. `RouteDoc.route_options`
adds the statuses every route shares — 400 for a `Host` refused (authentication off),
401/403 (tokens and roles), 503 while recovering, 500; for a body 400/413/415/422; for
path or query values 422 — each with the real error body of `errors.error_response`.
`install_openapi` completes the document: the component schemas (`schemas.py`), the
bearer scheme, and path parameter patterns and examples. The framework's own validation
error never appears: the app answers validation errors in its own form (422).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI

from forestflow.api.rest.schemas import NAME_PATTERN, Schema, components, ref
from forestflow.errors import (
    AuthenticationRequired,
    ForestFlowError,
    HostNotAllowed,
    InvalidField,
    MalformedRequest,
    PayloadTooLarge,
    PermissionDenied,
    ServiceUnavailableError,
    UnsupportedMediaType,
)

BEARER = "bearerAuth"
INTERNAL = "InternalServerError"
"""The wire name of an unexpected failure (`errors.internal_error_response`)."""
_BODY_ERRORS: tuple[type[ForestFlowError], ...] = (
    MalformedRequest,
    PayloadTooLarge,
    UnsupportedMediaType,
    InvalidField,
)
PATH_EXAMPLES: dict[str, Any] = {
    "organization": "samples",
    "project": "energy_output",
    "contract_number": 0,
    "release_version": "v1",
}
"""The README's model, so that Swagger UI's "Try it out" finds it."""


@dataclass(frozen=True, slots=True)
class Body:
    """A JSON request body: its schema (a component name) and examples by name."""

    schema: str
    examples: Mapping[str, tuple[str, Any]] = field(default_factory=dict)
    """name → (summary, value); the first is what Swagger UI fills in."""


@dataclass(frozen=True, slots=True)
class RouteDoc:
    """What one route takes and answers, beyond what every route shares."""

    answer: str
    """The component schema of the success answer."""
    status: int = 200
    body: Body | None = None
    errors: tuple[type[ForestFlowError], ...] = ()
    """Errors particular to the route (404, 409, 422 kinds, 507, ...)."""
    summary: str | None = None
    tag: str | None = None
    ready: bool = True
    """Whether the route answers 503 until the server has recovered its state."""
    array: bool = False
    """Whether the answer is an array of `answer`s."""
    example: Any = None

    def route_options(self, *, guarded: bool, auth: bool, parameters: bool) -> dict[str, Any]:
        """`add_api_route` keyword arguments: status, responses and the request body.

        `guarded`: the route checks a permission (401/403); `auth`: tokens are required
        (the operation names the bearer scheme); `parameters`: it takes path or query
        values (422 for a bad one).
        """
        kinds: list[type[ForestFlowError]] = [HostNotAllowed, *self.errors]
        if guarded:
            kinds += [AuthenticationRequired, PermissionDenied]
        if self.ready:
            kinds.append(ServiceUnavailableError)
        if self.body is not None:
            kinds += _BODY_ERRORS
        if parameters:
            kinds.append(InvalidField)
        success = ref(self.answer)
        content: Schema = {"schema": {"type": "array", "items": success} if self.array else success}
        if self.example is not None:
            content["example"] = self.example
        responses: dict[int | str, Any] = {
            self.status: {"description": HTTPStatus(self.status).phrase, "content": {
                "application/json": content}},
            **error_responses(kinds),
        }  # fmt: skip
        extra: dict[str, Any] = {}
        if self.body is not None:
            extra["requestBody"] = request_body(self.body)
        if guarded and auth:
            extra["security"] = [{BEARER: []}]
        options: dict[str, Any] = {"status_code": self.status, "responses": responses}
        if extra:
            options["openapi_extra"] = extra
        if self.summary:
            options["summary"] = self.summary
        if self.tag:
            options["tags"] = [self.tag]
        return options


def request_body(body: Body) -> Schema:
    """The `requestBody` of an operation: required JSON of `body.schema`, with examples."""
    media: Schema = {"schema": ref(body.schema)}
    if body.examples:
        media["examples"] = {
            name: {"summary": summary, "value": value}
            for name, (summary, value) in body.examples.items()
        }
    return {"required": True, "content": {"application/json": media}}


def error_responses(kinds: Iterable[type[ForestFlowError]]) -> dict[int | str, Any]:
    """One response per status the errors `kinds` answer, naming them, plus the 500."""
    by_status: dict[int, list[str]] = {}
    for kind in kinds:
        names = by_status.setdefault(int(kind.status), [])
        if kind.wire_name not in names:
            names.append(kind.wire_name)
    responses: dict[int | str, Any] = {
        status: _error_response(status, names, "Error") for status, names in by_status.items()
    }
    responses[500] = _error_response(500, [INTERNAL, "UnknownServableError"], "ServerError")
    return dict(sorted(responses.items(), key=lambda item: int(item[0])))


def _error_response(status: int, names: list[str], schema: str) -> Schema:
    first = names[0]
    example: Schema = {"errorMessage": _EXAMPLE_MESSAGES.get(first, f"{first} (example)")}
    if schema == "Error":
        example["StatusCode"] = status
    return {
        "description": f"{HTTPStatus(status).phrase}: {', '.join(names)}",
        "content": {"application/json": {"schema": ref(schema), "example": {first: example}}},
    }


_EXAMPLE_MESSAGES = {
    "UnknownContract": "unknown contract samples.energy_output.0",
    "UnknownServable": "unknown servable samples.energy_output.0.v9",
    "InvalidRequestError": "datum[0].tensors[0].data: ragged datum: expected 4 value(s)",
    "HostNotAllowedError": "Host 'evil.example' is not this server's",
    "AuthenticationRequired": "this server requires a bearer token",
    "PermissionDenied": "the role scorer may not deploy (token 'ci')",
    "ServiceUnavailable": "recovering state; not ready yet",
    "MalformedRequestError": "malformed JSON: unexpected character",
    "PayloadTooLargeError": "request body exceeds the limit of 10485760 bytes",
    "UnsupportedMediaTypeError": "expected Content-Type: application/json, got 'text/plain'",
    INTERNAL: "internal server error; see the server log",
}


def install_openapi(app: FastAPI, *, auth: bool) -> None:
    """Complete `app`'s document once it is first built (components, bearer scheme,
    path parameters); `auth`: whether tokens are required."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = build()  # the framework's document, cached by the framework
            complete(document, auth=auth)
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def complete(document: dict[str, Any], *, auth: bool) -> None:
    """Add what the routes' declarations refer to, and drop the framework's own 422."""
    found = document.setdefault("components", {})
    schemas = found.setdefault("schemas", {})
    for framework_own in ("HTTPValidationError", "ValidationError"):
        schemas.pop(framework_own, None)
    schemas.update(components())
    found["securitySchemes"] = {
        BEARER: {
            "type": "http",
            "scheme": "bearer",
            "description": "A token made by `forestflow token create` or `POST /admin/tokens`"
            + ("" if auth else "; this server runs with authentication off"),
        }
    }
    for path, operations in document.get("paths", {}).items():
        for operation in operations.values():
            _complete_operation(path, operation)


def _complete_operation(path: str, operation: dict[str, Any]) -> None:
    parameters = operation.setdefault("parameters", [])
    declared = {p.get("name") for p in parameters if p.get("in") == "path"}
    for name in re.findall(r"{([^}:]+)}", path):
        if name not in declared:  # an endpoint that reads it from the request itself
            parameters.append(
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            )
    if not parameters:
        del operation["parameters"]
    responses = operation.setdefault("responses", {})
    for response in responses.values():
        for media in response.get("content", {}).values():
            schema = media.get("schema", {})
            if "$ref" in schema:  # the framework's guess for a response class it does not know
                schema.pop("type", None)
    framework_422 = responses.get("422", {}).get("content", {}).get("application/json", {})
    if "HTTPValidationError" in str(framework_422.get("schema", "")):
        # an undeclared route: its validation errors are the app's own
        responses["422"] = error_responses([InvalidField])[422]
    for parameter in operation.get("parameters", []):
        name = parameter.get("name")
        if name in PATH_EXAMPLES and parameter.get("in") == "path":
            parameter["example"] = PATH_EXAMPLES[name]
            schema = parameter.setdefault("schema", {})
            if name == "contract_number":
                schema["minimum"] = 0
            else:
                schema["pattern"] = NAME_PATTERN
