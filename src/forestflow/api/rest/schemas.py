"""JSON Schemas of the BASIC REST bodies, for the OpenAPI document (`openapi.py`).

The endpoints decode their bodies with `domain.codec`, so the request schemas are made
from the same dataclasses and kind registries the codec reads: a policy, router or flavor
appears in the document by being registered. A schema says what the codec accepts in the
spellings SPEC §3 names (camelCase, as emitted, or snake_case) and the single-key wrapper
form of polymorphic values; the codec is more lenient still (the `type` form, a bare name,
integers as strings), which the descriptions mention. Answers are written by hand in the
shapes `endpoints.py` and `views.py` build.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Mapping
from functools import partial
from typing import Any, Union

from forestflow.control.lineage import ServableState
from forestflow.control.serve_request import BasicServeRequest, MLFlowServeRequest, ServeRequest
from forestflow.domain.codec import enum_from_number, protobuf_numbers
from forestflow.domain.fqrv import FQRV, MAX_NAME_LENGTH, Contract
from forestflow.domain.frame import TensorType
from forestflow.domain.metrics import ServableMetrics
from forestflow.domain.roles import Role
from forestflow.domain.settings import (
    ContractSettings,
    LoggingSettings,
    PolicySettings,
    ServableSettings,
)

Schema = dict[str, Any]
REF = "#/components/schemas/"
NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"
_SCALARS: dict[Any, Schema] = {
    int: {"type": "integer", "format": "int64"},
    float: {"type": "number"},
    str: {"type": "string"},
    bool: {"type": "boolean"},
}


def ref(name: str) -> Schema:
    """A reference to the component schema `name`."""
    return {"$ref": REF + name}


def _wire_name(field: dataclasses.Field[Any]) -> str:
    """The JSON name the codec emits (`codec.wire`, else camelCase)."""
    name: str = field.metadata.get("wire") or _camel(field.name)
    return name


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _fields(cls: Any) -> list[dataclasses.Field[Any]]:
    """The fields the codec reads (as `codec._fields`)."""
    return [f for f in dataclasses.fields(cls) if f.init and not f.metadata.get("internal")]


def _required(field: dataclasses.Field[Any]) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def _is_kind(tp: Any) -> bool:
    """A kind's base class (it holds the registry), not one of its members."""
    return isinstance(tp, type) and "registry" in vars(tp)


class SchemaBook:
    """JSON Schemas of codec types, each dataclass, enum and kind a named component."""

    def __init__(self) -> None:
        self.components: dict[str, Schema] = {}

    def of(self, tp: Any) -> Schema:  # noqa: PLR0911 - one per kind, as the codec
        """The schema of `tp` (a reference for a named component, built on first use)."""
        origin = typing.get_origin(tp)
        if origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            inner = self.of(args[0]) if len(args) == 1 else {}
            return {"anyOf": [inner, {"type": "null"}]}
        if origin is tuple:
            return {"type": "array", "items": self.of(typing.get_args(tp)[0])}
        if origin is dict or (isinstance(origin, type) and issubclass(origin, Mapping)):
            return {"type": "object", "additionalProperties": self.of(typing.get_args(tp)[1])}
        if tp in _SCALARS:
            return dict(_SCALARS[tp])
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return self._named(tp.__name__, lambda: _enum(tp))
        if _is_kind(tp):
            return self._named(tp.__name__, lambda: self._kind(tp))
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            return self._named(tp.__name__, lambda: self.dataclass_schema(tp))
        return {}  # Any, or a type the codec passes through

    def _named(self, name: str, build: typing.Callable[[], Schema]) -> Schema:
        if name not in self.components:
            self.components[name] = {}  # placeholder: recursive types stop here
            self.components[name] = build()
        return ref(name)

    def _kind(self, base: Any) -> Schema:
        """One of the registered members, as a single-key wrapper naming it."""
        choices = []
        for name in base.registry.names():
            try:
                member = base.registry.get(name)
            except Exception:  # a plugin that fails to import is still listed by its name
                body: Schema = {"type": "object"}
            else:
                body = self._named(member.__name__, partial(self.dataclass_schema, member))
            choices.append(self._named(name + "Wrapper", partial(_wrapper, name, body)))
        first = base.registry.names()[0] if base.registry.names() else "Name"
        return {
            "description": f"One {base.registry.kind}, named by a single-key object "
            f'({{"{first}": {{...}}}}); the codec also accepts the `type` form and, for '
            "a kind without fields, the bare name.",
            "oneOf": choices,
        }

    def dataclass_schema(self, cls: Any) -> Schema:
        """An object with the codec's field names: camelCase, or snake_case as accepted.

        A required field with two spellings is required in either (`anyOf`); any other
        name is refused, as the codec refuses it (`propertyNames`).
        """
        hints = typing.get_type_hints(cls)
        properties: Schema = {}
        spellings: list[str] = []
        required: list[str] = []
        either: list[Schema] = []
        for field in _fields(cls):
            wire = _wire_name(field)
            properties[wire] = self.of(hints[field.name])
            names = list(dict.fromkeys([wire, field.name, *field.metadata.get("aliases", ())]))
            spellings += names
            if _required(field):
                if len(names) == 1:
                    required.append(wire)
                else:
                    either.append({"anyOf": [{"required": [n]} for n in names]})
        schema: Schema = {"type": "object", "properties": properties}
        doc = (cls.__doc__ or "").strip().split("\n\n")[0]
        if doc:
            schema["description"] = " ".join(doc.split())
        if required:
            schema["required"] = required
        if either:
            schema["allOf"] = either
        schema["propertyNames"] = {"enum": spellings} if spellings else {"maxLength": 0}
        return schema

    def properties(self, cls: Any) -> Schema:
        """The properties of a dataclass as it is emitted (camelCase, every field)."""
        hints = typing.get_type_hints(cls)
        return {_wire_name(f): self.of(hints[f.name]) for f in _fields(cls)}


def _enum(tp: type[enum.Enum]) -> Schema:
    names: Schema = {
        "type": "string",
        "enum": [str(m.value) for m in tp],
        "description": "Matched case-insensitively.",
    }
    numbers = protobuf_numbers(tp)
    if not numbers:
        return names
    meaning = ", ".join(f"{n} = {getattr(enum_from_number(tp, n), 'value', '')}" for n in numbers)
    return {
        "anyOf": [names, {"type": "integer", "enum": list(numbers)}],
        "description": "A name, matched case-insensitively, or the original ForestFlow's "
        f"protobuf number: {meaning}. Answers give the name.",
    }


def _wrapper(name: str, body: Schema, description: str = "") -> Schema:
    """`{name: body}`: every answer is a single-key object naming its type (SPEC §3)."""
    schema: Schema = {
        "type": "object",
        "properties": {name: body},
        "required": [name],
        "additionalProperties": False,
    }
    if description:
        schema["description"] = description
    return schema


def _object(properties: Schema, *optional: str) -> Schema:
    """An object with every property required but `optional`."""
    return {
        "type": "object",
        "properties": properties,
        "required": [name for name in properties if name not in optional],
    }


def _array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer", "format": "int64"}
NUMBER: Schema = {"type": "number"}


def _inference_request() -> Schema:
    tensor_names = [t.value for t in TensorType]
    tensor = {
        "type": "object",
        "description": "One typed tensor of a row: its values follow the schema entry's "
        "fields. `null` is a missing value; Bytes values are base64.",
        "minProperties": 1,
        "maxProperties": 1,
        "propertyNames": {"enum": tensor_names},
        "additionalProperties": _object({"data": _array({})}),
    }
    return {
        "type": "object",
        "description": "Rows to score (SPEC §4.1). Fields are matched to the model's inputs "
        "by name.",
        "properties": {
            "schema": {**_array(ref("SchemaEntry")), "minItems": 1},
            "datum": {
                **_array(_object({"tensors": {**_array(tensor), "minItems": 1}})),
                "minItems": 1,
                "description": "One row per datum; its tensors follow the schema order.",
            },
            "configs": {
                "type": "object",
                "description": "String key/values carried with the request (used for "
                "prediction-log keys); numbers and booleans are read as their text.",
                "additionalProperties": {"type": ["string", "number", "boolean"]},
            },
        },
        "required": ["schema", "datum"],
        "additionalProperties": False,
    }


def _feature() -> Schema:
    return _object(
        {
            "name": STRING,
            "type": ref("TensorType"),
            "shape": _array(INTEGER),
            "acceptsMissing": {"type": "boolean"},
            "description": STRING,
            "domain": _array(STRING),
        },
        "description",
        "domain",
    )


def _metadata() -> Schema:
    group = _object(
        {
            "name": STRING,
            "type": ref("TensorType"),
            "shape": _array(INTEGER),
            "fields": _array(STRING),
            "description": STRING,
        }
    )
    return _object(
        {
            "fqrv": ref("FQRV"),
            "servableFQRV": STRING,
            "server": STRING,
            "name": STRING,
            "description": STRING,
            "inputs": {
                **_array(group),
                "description": "The inputs grouped by type: one "
                "entry per `schema` entry of a score request.",
            },
            "features": _array(ref("Feature")),
            "outputs": _array(ref("Feature")),
            "lineage": ref("Lineage"),
        }
    )


NULLABLE_STRING: Schema = {"anyOf": [STRING, {"type": "null"}]}


def _lineage() -> Schema:
    return {
        **_object(
            {
                "source": {**STRING, "description": "The serve request's `path` as given."},
                "resolvedSource": {
                    **STRING,
                    "description": "The location `source` resolved to when it was fetched "
                    "(`models:/m@champion` → `models:/m/1`); a lost copy is fetched again "
                    "from here.",
                },
                "artifactPath": NULLABLE_STRING,
                "digest": {
                    **NULLABLE_STRING,
                    "description": "The content hash of the artifact copy (`sha256:…`).",
                },
                "flavor": {
                    "type": "object",
                    "minProperties": 1,
                    "maxProperties": 1,
                    "description": "The flavor it was loaded with, as a single-key object.",
                },
                "tags": {"type": "object", "additionalProperties": STRING},
                "deployedBy": {
                    **NULLABLE_STRING,
                    "description": "The name of the token that deployed it; null when "
                    "authentication was off.",
                },
                "deployedAtMS": INTEGER,
            }
        ),
        "description": "Where a servable came from, and who deployed it when, as recorded "
        "at its deploy.",
    }


def _servable_history() -> Schema:
    removal = _object(
        {
            "reason": {"enum": [ServableState.EXPIRED.value, ServableState.DELETED.value]},
            "by": {
                **NULLABLE_STRING,
                "description": "The token whose command removed it: the deleter, or the "
                "command whose evaluation expired it; null for the server's own evaluation "
                "or with authentication off.",
            },
            "policy": {
                "anyOf": [ref("ExpirationPolicy"), {"type": "null"}],
                "description": "For an expiry, the contract's expiration policy that made it.",
            },
            "atMS": INTEGER,
            "description": {
                **STRING,
                "description": "`expired by KeepLatest(servablesToKeep=2)`, `deleted by ci`.",
            },
        }
    )
    return {
        **_object(
            {
                "seq": {
                    **INTEGER,
                    "description": "The history seq of its deploy: `before` for the next page.",
                },
                "fqrv": ref("FQRV"),
                "servableFQRV": STRING,
                "lineage": ref("Lineage"),
                "state": {"enum": [state.value for state in ServableState]},
                "failure": {**STRING, "description": "Why a `failed` one could not be loaded."},
                "removal": {
                    "anyOf": [removal, {"type": "null"}],
                    "description": "How it left; null while it is there.",
                },
            },
            "failure",
        ),
        "description": "One servable a contract had: `state` is `loaded` or `failed` while it "
        "is there, `expired` or `deleted` once it left.",
    }


def _prediction() -> Schema:
    tensor = {
        "type": "object",
        "minProperties": 1,
        "maxProperties": 1,
        "propertyNames": {"enum": [t.value for t in TensorType]},
        "additionalProperties": _object({"data": _array({})}),
    }
    return _object(
        {
            "fqrv": ref("FQRV"),
            "servableFQRV": {**STRING, "description": "The servable that answered."},
            "schema": _array(ref("SchemaEntry")),
            "datum": _array(_object({"tensors": _array(tensor)})),
        }
    )


def _error_body(status_required: bool) -> Schema:
    body = _object(
        {
            "errorMessage": {**STRING, "description": "What is wrong, field path first."},
            "field": {
                **STRING,
                "description": "The field path at fault, in wire names "
                "(`schema[0].fields[2]`, `fqrv.contract.organization`).",
            },
            "StatusCode": {**INTEGER, "description": "The HTTP status, repeated."},
            "contract": ref("Contract"),
            "fqrv": ref("FQRV"),
        },
        "field",
        "contract",
        "fqrv",
        *(() if status_required else ("StatusCode",)),
    )
    return {
        "type": "object",
        "description": "`{<error name>: {errorMessage, field?, StatusCode, contract?/fqrv?}}`: "
        "one key, the error's wire name (`UnknownContract`, `InvalidRequestError`, ...).",
        "minProperties": 1,
        "maxProperties": 1,
        "additionalProperties": body,
    }


def _answers(book: SchemaBook) -> dict[str, Schema]:
    """The answers' schemas, by component name."""
    fqrv, contract = ref("FQRV"), ref("Contract")
    with_fqrv = _object({"fqrv": fqrv})
    settings = _object(
        {"fqrv": fqrv, **book.properties(ServableSettings), "lineage": ref("Lineage")}
    )
    token = _object(
        {
            "name": STRING,
            "role": ref("Role"),
            "createdAtMS": INTEGER,
            "revokedAtMS": {"anyOf": [INTEGER, {"type": "null"}]},
        }
    )
    entry = _object(
        {
            "seq": INTEGER,
            "kind": STRING,
            "recordedAtMS": INTEGER,
            "actor": {"anyOf": [STRING, {"type": "null"}]},
            "event": {"type": "object"},
        }
    )
    counters = {"type": "object", "additionalProperties": INTEGER}
    feedback = _object(
        {
            "contract": contract,
            "records": INTEGER,
            "matched": INTEGER,
            "unknown": INTEGER,
            "mismatched": INTEGER,
            "refused": _array(
                _object({"index": INTEGER, "key": STRING, "field": STRING, "reason": STRING})
            ),
            "servables": _array(
                _object({"fqrv": fqrv, "metrics": counters | {"additionalProperties": NUMBER}})
            ),
        }
    )
    return {
        "Contracts": _wrapper("Contracts", _object({"contracts": _array(contract)})),
        **{
            name: _wrapper(name, _object({"contract": contract}))
            for name in (
                "ContractCreatedSuccessfully",
                "ContractUpdatedSuccessfully",
                "ContractDeletedSuccessfully",
            )
        },
        "ContractSettingsAnswer": _wrapper("ContractSettings", ref("ContractSettings")),
        "Release": {
            **_object(
                {"FQRV": fqrv, "state": {"enum": ["failed"]}, "failure": STRING}, "state", "failure"
            ),
            "description": "A servable of the contract; `state` and `failure` only for one "
            "that is recorded but could not be loaded.",
        },
        "ServableMetricsAnswer": _wrapper("ServableMetrics", ref("ServableMetrics")),
        "ServableSettingsAnswer": _wrapper("ServableSettings", settings),
        "BasicMetaDataAnswer": _wrapper("BasicMetaData", ref("BasicMetaData")),
        "BasicMetaData": _metadata(),
        "Lineage": _lineage(),
        "ServableHistory": _servable_history(),
        "ContractHistory": _wrapper(
            "ContractHistory",
            _object({"contract": contract, "servables": _array(ref("ServableHistory"))}),
        ),
        "Feature": _feature(),
        "SchemaEntry": _object({"type": ref("TensorType"), "fields": _array(STRING)}),
        "TensorType": _enum(TensorType),
        "InferenceRequest": _inference_request(),
        "PredictionAnswer": _wrapper("Prediction", _prediction()),
        "ServableCreatedSuccessfully": _wrapper(
            "ServableCreatedSuccessfully",
            {
                **_object({"fqrv": fqrv, "warnings": _array(STRING)}, "warnings"),
                "description": "`warnings`, only when there are any: what the deploy relies on "
                "that behaves unlike the original ForestFlow (docs/migrating.md).",
            },
        ),
        **{
            name: _wrapper(name, with_fqrv)
            for name in ("PolicySettingsUpdatedSuccessfully", "LoggingSettingsUpdatedSuccessfully")
        },
        "ServablesDeletedSuccessfully": _wrapper(
            "ServablesDeletedSuccessfully", _object({"fqrvs": _array(fqrv)})
        ),
        "PerformanceMetricsUpdatedSuccessfully": _wrapper(
            "PerformanceMetricsUpdatedSuccessfully",
            _object(
                {
                    "fqrv": fqrv,
                    "performanceMetrics": {"type": "object", "additionalProperties": NUMBER},
                }
            ),
        ),
        "FeedbackAccepted": _wrapper("FeedbackAccepted", feedback),
        "PredictionLogStats": _wrapper(
            "PredictionLogStats",
            _object(
                {
                    "sinks": {"type": "object", "additionalProperties": counters},
                    "feedback": counters,
                }
            ),
        ),
        "Role": {"type": "string", "enum": [r.value for r in Role]},
        "TokenCreated": _wrapper(
            "TokenCreated",
            _object(
                {
                    "name": STRING,
                    "role": ref("Role"),
                    "token": {**STRING, "description": "The secret: shown this once only."},
                }
            ),
        ),
        "Tokens": _wrapper("Tokens", _object({"tokens": _array(token)})),
        "TokenRevoked": _wrapper("TokenRevoked", _object({"name": STRING})),
        "History": _wrapper("History", _object({"entries": _array(entry)})),
        "Health": _wrapper("Health", _object({"status": {"enum": ["live", "ready"]}})),
        "Error": _error_body(status_required=True),
        "ServerError": _error_body(status_required=False),
    }


def _requests() -> dict[str, Schema]:
    """The request bodies not made from a dataclass, by component name."""
    scalar = {"type": ["number", "string", "boolean"]}
    return {
        "MetricsUpdate": {
            "type": "object",
            "properties": {
                "metrics": {
                    "type": "object",
                    "minProperties": 1,
                    "maxProperties": 100,
                    "propertyNames": {"minLength": 1, "maxLength": MAX_NAME_LENGTH},
                    "additionalProperties": NUMBER,
                    "description": "Metric name → finite number; metrics not named are kept.",
                }
            },
            "required": ["metrics"],
        },
        "FeedbackRecords": _object(
            {
                "records": {
                    **_array(
                        _object(
                            {
                                "key": {"type": ["string", "integer"], "minLength": 1},
                                "actual": {"anyOf": [scalar, {**_array(scalar), "minItems": 1}]},
                            }
                        )
                    ),
                    "minItems": 1,
                    "maxItems": 10_000,
                }
            }
        ),
        "TokenRequest": {
            **_object({"name": STRING, "role": ref("Role")}),
            "additionalProperties": False,
        },
        "ServeRequest": {
            "description": "A BasicServeRequest (it names a `flavor`) or an MLFlowServeRequest "
            "(`path` holds an MLmodel file), bare or wrapped in a single-key object naming it.",
            "anyOf": [
                ref("BasicServeRequest"),
                ref("MLFlowServeRequest"),
                *(ref(name + "Wrapper") for name in ServeRequest.registry.names()),
            ],
        },
    }


def components() -> dict[str, Schema]:
    """Every named schema the route declarations refer to."""
    book = SchemaBook()
    for cls in (
        Contract,
        FQRV,
        ContractSettings,
        ServableSettings,
        PolicySettings,
        LoggingSettings,
        BasicServeRequest,
        MLFlowServeRequest,
        ServableMetrics,
    ):
        book.of(cls)
    for member in ServeRequest.registry.names():
        book.of(ServeRequest.registry.get(member))
    for name in ServeRequest.registry.names():
        book.components[name + "Wrapper"] = _wrapper(name, ref(name))
    found = {**book.components, **_requests(), **_answers(book)}
    contract = found["Contract"]["properties"]
    for name in ("organization", "project"):
        contract[name] |= {"pattern": NAME_PATTERN, "maxLength": MAX_NAME_LENGTH}
    contract["contractNumber"] |= {"minimum": 0}
    found["FQRV"]["properties"]["releaseVersion"] |= {
        "pattern": NAME_PATTERN,
        "maxLength": MAX_NAME_LENGTH,
    }
    return found
