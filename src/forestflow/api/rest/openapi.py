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

The other protocols' routes declare themselves the same way, with their own `ErrorForm`
(the status each error gets and the body it is answered with), bodies and answers in other
media types, and the component schemas they refer to (`RouteDoc.schemas`, moved into the
document's components by `complete`). A `Host` refused before such a route runs keeps the
BASIC API's form.
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
    InternalServerError,
    InvalidField,
    MalformedRequest,
    ModelFailedError,
    PayloadTooLarge,
    PermissionDenied,
    ServiceUnavailableError,
    UnsupportedMediaType,
)

BEARER = "bearerAuth"
JSON = "application/json"
INTERNAL = InternalServerError.wire_name
"""The wire name of an unexpected failure (`errors.internal_error_response`)."""
DECLARED = "x-forestflow-declared"
"""Where an operation carries, until `complete` applies them, the component schemas its
declarations refer to and the content of each answer as declared (the framework adds its
own guess, a JSON string, to the success answer's)."""
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


def _schema(schema: str | Schema) -> Schema:
    """A component name as a reference to it; a schema as it is."""
    return ref(schema) if isinstance(schema, str) else dict(schema)


@dataclass(frozen=True, slots=True)
class Body:
    """A request body in one media type: its schema (a component name, or a schema) and
    examples by name."""

    schema: str | Schema
    examples: Mapping[str, tuple[str, Any]] = field(default_factory=dict)
    """name → (summary, value); the first is what Swagger UI fills in."""
    media: str = JSON


@dataclass(frozen=True, slots=True)
class Answer:
    """An answer besides the success and the errors: the success in another media type,
    or a non-error answer at another status (a health check's "not ready")."""

    status: int
    schema: str | Schema | None
    """A component name, a schema, or None for a body no schema describes."""
    media: str = JSON
    description: str = ""
    example: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    """Headers the answer always sends: name → description."""

    def response(self) -> Schema:
        """The OpenAPI response object of this answer alone."""
        media: Schema = {} if self.schema is None else {"schema": _schema(self.schema)}
        if self.example is not None:
            media["example"] = self.example
        found: Schema = {
            "description": self.description or HTTPStatus(self.status).phrase,
            "content": {self.media: media},
        }
        if self.headers:
            found["headers"] = {
                name: {"description": why, "required": True, "schema": {"type": "string"}}
                for name, why in self.headers.items()
            }
        return found


@dataclass(frozen=True, slots=True)
class ErrorForm:
    """How a protocol's routes answer errors, where the BASIC API answers
    `{wire name: {errorMessage, ...}}` with the error's own status."""

    name: str
    """The protocol, as the descriptions name it."""
    status_of: Callable[[ForestFlowError], int]
    """The protocol's status for an error; given a bare instance of each kind (the
    protocols' mappings read only the error's class)."""
    media: str
    schema: str | Schema
    example: Callable[[ForestFlowError, str], Any] | None = None
    """The body answering an error with a message; None: no example (a binary body)."""
    messages: Mapping[str, str] = field(default_factory=dict)
    """Example messages in the protocol's words, by wire name (else `example_message`)."""

    def responses(self, kinds: Iterable[type[ForestFlowError]]) -> dict[int | str, Any]:
        """One response per status the protocol answers `kinds` with, plus the 500."""
        by_status: dict[int, list[type[ForestFlowError]]] = {}
        for kind in [*kinds, ModelFailedError]:
            found = by_status.setdefault(self.status_of(_bare(kind)), [])
            if kind not in found:
                found.append(kind)
        return {status: self._response(status, found) for status, found in by_status.items()}

    def _response(self, status: int, kinds: list[type[ForestFlowError]]) -> Schema:
        names = [kind.wire_name for kind in kinds]
        if status == 500:
            names.insert(0, INTERNAL)
        media: Schema = {"schema": _schema(self.schema)}
        if self.example is not None:
            message = self.messages.get(names[0]) or example_message(names[0])
            media["example"] = self.example(_bare(kinds[0]), message)
        return {
            "description": f"{HTTPStatus(status).phrase}: {', '.join(names)}, in {self.name}'s "
            "error form",
            "content": {self.media: media},
        }


def _bare(kind: type[ForestFlowError]) -> ForestFlowError:
    """An instance of `kind` with no message: enough for what reads only its class."""
    return kind.__new__(kind)


@dataclass(frozen=True, slots=True)
class RouteDoc:
    """What one route takes and answers, beyond what every route shares."""

    answer: str | Schema | None
    """The schema of the success answer: a component name, a schema, or None for a body
    no schema describes."""
    status: int = 200
    body: Body | tuple[Body, ...] | None = None
    """The request body, or one per media type the route reads."""
    errors: tuple[type[ForestFlowError], ...] = ()
    """Errors particular to the route (404, 409, 422 kinds, 507, ...)."""
    summary: str | None = None
    tag: str | None = None
    ready: bool = True
    """Whether the route answers 503 until the server has recovered its state."""
    array: bool = False
    """Whether the answer is an array of `answer`s."""
    example: Any = None
    media: str = JSON
    """The media type of the success answer."""
    description: str = ""
    """What the success answer is, where its status's phrase does not say it."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """Headers of the success answer: name → description."""
    answers: tuple[Answer, ...] = ()
    form: ErrorForm | None = None
    """The protocol's error form; None: the BASIC API's."""
    schemas: Mapping[str, Schema] = field(default_factory=dict)
    """Component schemas the declarations refer to by name, beyond `schemas.py`'s."""
    parameters: tuple[Schema, ...] = ()
    """Parameters the route reads itself (OpenAPI parameter objects: headers)."""
    reads_path: bool = True
    """Whether the route reads its path values, refusing a bad one (`route_options`'
    `parameters` says whether it has any)."""

    def route_options(self, *, guarded: bool, auth: bool, parameters: bool) -> dict[str, Any]:
        """`add_api_route` keyword arguments: status, responses and the request body.

        `guarded`: the route checks a permission (401/403); `auth`: tokens are required
        (the operation names the bearer scheme); `parameters`: it takes path or query
        values (422 for a bad one, or the status the protocol gives it).
        """
        responses: dict[int | str, Any] = {self.status: self._success()}
        for answer in self.answers:
            merge_response(responses, answer.status, answer.response())
        for status, response in self._error_responses(guarded, parameters).items():
            merge_response(responses, status, response)
        extra: dict[str, Any] = {
            DECLARED: {
                "schemas": dict(self.schemas),
                "content": {str(s): r.get("content", {}) for s, r in responses.items()},
            }
        }
        if self.body is not None:
            extra["requestBody"] = request_body(self.body)
        if guarded and auth:
            extra["security"] = [{BEARER: []}]
        if self.parameters:
            extra["parameters"] = list(self.parameters)
        options: dict[str, Any] = {
            "status_code": self.status,
            "responses": dict(sorted(responses.items(), key=lambda item: int(item[0]))),
            "openapi_extra": extra,
        }
        if self.summary:
            options["summary"] = self.summary
        if self.tag:
            options["tags"] = [self.tag]
        return options

    def _success(self) -> Schema:
        schema = None if self.answer is None else _schema(self.answer)
        if schema is not None and self.array:
            schema = {"type": "array", "items": schema}
        return Answer(
            self.status, schema, self.media, self.description, self.example, self.headers
        ).response()

    def _error_responses(self, guarded: bool, parameters: bool) -> dict[int | str, Any]:
        kinds: list[type[ForestFlowError]] = [*self.errors]
        if guarded:
            kinds += [AuthenticationRequired, PermissionDenied]
        if self.ready:
            kinds.append(ServiceUnavailableError)
        if self.body is not None:
            kinds += _BODY_ERRORS
        if parameters and self.reads_path:
            kinds.append(InvalidField)
        if self.form is None:
            return error_responses([HostNotAllowed, *kinds])
        found = self.form.responses(kinds)
        # the Host guard refuses before the route runs: in the BASIC API's form
        refused = error_responses([HostNotAllowed])[400]
        refused["description"] += " (refused before the route runs: the BASIC API's form)"
        merge_response(found, 400, refused)
        return found


def merge_response(responses: dict[Any, Any], status: int | str, response: Schema) -> None:
    """Add `response` at `status`: beside what is there, a schema of the same media type
    becoming one of several (`anyOf`), descriptions and headers joined."""
    found = responses.get(status)
    if found is None:
        responses[status] = response
        return
    found["description"] = f"{found['description']}; {response['description']}"
    headers = [found.get("headers", {}), response.get("headers", {})]
    if any(headers):  # a header is required if every answer at the status sends it
        found["headers"] = {
            name: {**header, "required": all(h.get(name, {}).get("required") for h in headers)}
            for name, header in (headers[1] | headers[0]).items()
        }
    content = found.setdefault("content", {})
    for media, declared in response.get("content", {}).items():
        present = content.get(media)
        if present is None:
            content[media] = declared
            continue
        schemas = [_alternatives(present.get("schema")), _alternatives(declared.get("schema"))]
        if all(schemas):
            present["schema"] = {"anyOf": [*schemas[0], *schemas[1]]}
        else:  # a body no schema describes is one of them: any body may come
            present.pop("schema", None)
        if "example" not in present and "example" in declared:
            present["example"] = declared["example"]


def _alternatives(schema: Schema | None) -> list[Schema]:
    if schema is None:
        return []
    return list(schema["anyOf"]) if set(schema) == {"anyOf"} else [schema]


def request_body(body: Body | tuple[Body, ...]) -> Schema:
    """The `requestBody` of an operation: required, of each media type's schema, with
    examples."""
    content: Schema = {}
    for each in body if isinstance(body, tuple) else (body,):
        media: Schema = {"schema": _schema(each.schema)}
        if each.examples:
            media["examples"] = {
                name: {"summary": summary, "value": value}
                for name, (summary, value) in each.examples.items()
            }
        content[each.media] = media
    return {"required": True, "content": content}


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
    example: Schema = {"errorMessage": example_message(first)}
    if schema == "Error":
        example["StatusCode"] = status
    return {
        "description": f"{HTTPStatus(status).phrase}: {', '.join(names)}",
        "content": {JSON: {"schema": ref(schema), "example": {first: example}}},
    }


def example_message(wire_name: str) -> str:
    """A message the error named `wire_name` answers with, for an example."""
    return _EXAMPLE_MESSAGES.get(wire_name, f"{wire_name} (example)")


_EXAMPLE_MESSAGES = {
    "UnknownContract": "unknown contract samples.energy_output.0",
    "UnknownServable": "unknown servable samples.energy_output.0.v9",
    "InvalidRequestError": "datum[0].tensors[0].data: ragged datum: expected 4 value(s)",
    "InferenceRequestInvalidError": "tenure_months: expects Int64 values, got String",
    "NoActiveServablesForContract": "contract samples.energy_output.0 has no active servable "
    "to answer the request",
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
            _apply_declared(schemas, operation)
            _complete_operation(path, operation)


def _apply_declared(schemas: dict[str, Any], operation: dict[str, Any]) -> None:
    declared = operation.pop(DECLARED, {})
    for name, schema in declared.get("schemas", {}).items():
        if schemas.setdefault(name, schema) != schema:
            raise ValueError(f"two routes declare different component schemas {name!r}")
    for status, content in declared.get("content", {}).items():
        operation["responses"][status]["content"] = content


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
    _replace_framework_422(responses, operation.get("parameters", []))
    for parameter in operation.get("parameters", []):
        name = parameter.get("name")
        if name in PATH_EXAMPLES and parameter.get("in") == "path":
            parameter["example"] = PATH_EXAMPLES[name]
            schema = parameter.setdefault("schema", {})
            if name == "contract_number":
                schema["minimum"] = 0
            else:
                schema["pattern"] = NAME_PATTERN


def _replace_framework_422(responses: dict[str, Any], parameters: list[Schema]) -> None:
    """An undeclared route's 422 as the app answers it, or none: the framework refuses only
    a query value it cannot convert (the path convertors, `{contract_number:int}`, match
    only values that convert; a path that does not match is a 404)."""
    framework_422 = responses.get("422", {}).get("content", {}).get(JSON, {})
    if "HTTPValidationError" not in str(framework_422.get("schema", "")):
        return
    if any(p.get("in") == "query" for p in parameters):
        responses["422"] = error_responses([InvalidField])[422]
    else:
        del responses["422"]
