"""JSON ⇄ domain values, driven by dataclass fields and the kind registries.

Accepts what SPEC §3 allows: polymorphic values as a single-key wrapper
(`{"KeepLatest": {"servablesToKeep": 2}}`), in the `type` form
(`{"type": "KeepLatest", "servablesToKeep": 2}`) or as a bare name; camelCase and
snake_case for every field; enums in any case, or by the number the original ForestFlow's
`.proto` files give them (its protobuf JSON accepted both: `"logLevel": 2` is FULL).
Integers may be strings, as protobuf JSON renders int64. Emits the wrapper form and camelCase.
Errors name the field path (`policySettings.validityPolicy[1].validAfterMS`).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any, TypeVar, Union

from forestflow.errors import ForestFlowError, InvalidField

T = TypeVar("T")
E = TypeVar("E", bound=enum.Enum)
JSON = Any
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_INT_STRING = re.compile(r"-?[0-9]+")

# The enums of the original ForestFlow, member names in the order of their protobuf numbers
# 1, 2, 3, ... (LoggingSettings.proto LogLevel, ExpirationPolicies.proto Ordering,
# Tensor.proto TensorType): its clients may send `"logLevel": 2` for FULL.
_PROTOBUF_NUMBERS: dict[str, tuple[str, ...]] = {
    "LogLevel": ("NONE", "FULL", "SAMPLE"),
    "Ordering": ("DESC", "ASC"),
    "TensorType": (
        "Float16", "Float32", "Float64", "Int8", "Int16", "Int32", "Int64", "String", "Bool",
        "Bytes",
    ),
}  # fmt: skip


def wire(name: str, **kwargs: Any) -> Any:
    """A dataclass field whose JSON name is `name` (other spellings are still accepted)."""
    metadata = {"wire": name, **kwargs.pop("metadata", {})}
    return dataclasses.field(metadata=metadata, **kwargs)


def decode(cls: type[T], data: JSON, *, path: str = "") -> T:
    """Build a `cls` from parsed JSON, raising `InvalidField` with the field path on error."""
    return typing.cast(T, _decode_type(cls, data, path))


def decode_changes(cls: type[Any], data: JSON, *, path: str = "") -> dict[str, Any]:
    """The fields of dataclass `cls` that the JSON object `data` names, decoded and keyed by
    attribute name: a partial update, to apply with `dataclasses.replace`.

    Every named field is checked as `decode` checks it (unknown, given twice, wrong type);
    fields left out are not required. Rules over the whole value (`__post_init__`) run
    when the changes are applied, against the value they change.
    """
    return _decode_fields(cls, data, path)


def encode(value: object) -> JSON:
    """Render a domain value as JSON-ready data (wrapper form, camelCase names)."""
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        body = {_wire_name(f): encode(getattr(value, f.name)) for f in _fields(type(value))}
        name = getattr(type(value), "wire_name", None)
        return {name: body} if _is_polymorphic_value(value) and name else body
    if isinstance(value, (tuple, list)):
        return [encode(item) for item in value]
    if isinstance(value, Mapping):
        return {str(key): encode(item) for key, item in value.items()}
    return value


def _is_polymorphic_value(value: object) -> bool:
    return any(hasattr(base, "registry") for base in type(value).__mro__[1:])


def _join(path: str, name: str | int) -> str:
    if isinstance(name, int):
        return f"{path}[{name}]"
    return f"{path}.{name}" if path else name


def _fail(path: str, message: str) -> InvalidField:
    return InvalidField(message, field=path or None)


def _type_name(data: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(data), "number"
    )


def _decode_type(tp: Any, data: JSON, path: str) -> Any:  # noqa: PLR0911 - one per kind
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return _decode_union(tp, data, path)
    if origin is tuple:
        return _decode_tuple(tp, data, path)
    if origin in (dict, Mapping) or (origin is not None and _is_mapping_origin(origin)):
        return _decode_mapping(tp, data, path)
    if tp is Any:
        return data
    decoder = _SCALARS.get(tp)
    if decoder is not None:
        return decoder(data, path)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _decode_enum(tp, data, path)
    if isinstance(tp, type) and "registry" in vars(tp):  # a kind's base class, not a member
        return _decode_polymorphic(tp, data, path)
    if dataclasses.is_dataclass(tp):
        return _decode_dataclass(tp, data, path)
    raise TypeError(f"codec cannot decode {tp!r}")  # a programming error, not bad input


def _is_mapping_origin(origin: Any) -> bool:
    return isinstance(origin, type) and issubclass(origin, Mapping)


def _decode_union(tp: Any, data: JSON, path: str) -> Any:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if data is None:
        if len(args) < len(typing.get_args(tp)):
            return None
        raise _fail(path, "must not be null")
    if len(args) != 1:
        raise TypeError(f"codec supports only `X | None` unions, not {tp!r}")
    return _decode_type(args[0], data, path)


def _decode_tuple(tp: Any, data: JSON, path: str) -> tuple[Any, ...]:
    if not isinstance(data, list):
        raise _fail(path, f"expected an array, got {_type_name(data)}")
    (item_type, _ellipsis) = typing.get_args(tp)
    return tuple(_decode_type(item_type, item, _join(path, i)) for i, item in enumerate(data))


def _decode_mapping(tp: Any, data: JSON, path: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise _fail(path, f"expected an object, got {_type_name(data)}")
    _key_type, value_type = typing.get_args(tp)
    return {str(k): _decode_type(value_type, v, _join(path, str(k))) for k, v in data.items()}


def _decode_int(data: JSON, path: str) -> int:
    value = _parse_int(data, path)
    if not INT64_MIN <= value <= INT64_MAX:
        raise _fail(path, f"{data!r} is out of range: integers are signed 64-bit")
    return value


def _parse_int(data: JSON, path: str) -> int:
    if isinstance(data, bool):
        raise _fail(path, "expected an integer, got boolean")
    if isinstance(data, int):
        return data
    if isinstance(data, float) and data.is_integer():
        return int(data)
    # protobuf's JSON mapping renders int64 as a string; accept it for compatibility
    if isinstance(data, str) and _INT_STRING.fullmatch(data.strip()):
        return int(data)
    raise _fail(path, f"expected an integer, got {_type_name(data)} {data!r}")


def _decode_float(data: JSON, path: str) -> float:
    if isinstance(data, bool):
        raise _fail(path, "expected a number, got boolean")
    if isinstance(data, (int, float, str)):
        try:
            value = float(data)
        except (ValueError, OverflowError):
            pass
        else:
            if not math.isfinite(value):
                raise _fail(path, f"expected a finite number, got {data!r}")
            return value
    raise _fail(path, f"expected a number, got {_type_name(data)} {data!r}")


def _decode_str(data: JSON, path: str) -> str:
    if isinstance(data, str):
        return data
    raise _fail(path, f"expected a string, got {_type_name(data)}")


def _decode_bool(data: JSON, path: str) -> bool:
    if isinstance(data, bool):
        return data
    raise _fail(path, f"expected true or false, got {_type_name(data)}")


_SCALARS: dict[Any, Callable[[JSON, str], Any]] = {
    int: _decode_int,
    float: _decode_float,
    str: _decode_str,
    bool: _decode_bool,
}


def _decode_enum(tp: type[enum.Enum], data: JSON, path: str) -> enum.Enum:
    name = _polymorphic_name(data, path) if isinstance(data, dict) else data
    if isinstance(name, str):
        for member in tp:
            if name.lower() in (member.name.lower(), str(member.value).lower()):
                return member
    numbered = enum_from_number(tp, name)
    if numbered is not None:
        return numbered
    known = ", ".join(str(m.value) for m in tp)
    numbers = protobuf_numbers(tp)
    if numbers:
        known += f" (or their numbers {', '.join(str(n) for n in numbers)})"
    raise _fail(path, f"unknown value {name!r}; expected one of {known}")


def protobuf_numbers(tp: type[enum.Enum]) -> tuple[int, ...]:
    """The numbers the original ForestFlow's `.proto` files give `tp`'s members (or none)."""
    return tuple(range(1, len(_PROTOBUF_NUMBERS.get(tp.__name__, ())) + 1))


def enum_from_number(tp: type[E], number: object) -> E | None:
    """The member of `tp` the original's `.proto` files number `number`; None when `number`
    is not an integer that numbers a member."""
    names = _PROTOBUF_NUMBERS.get(tp.__name__, ())
    if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= len(names):
        return None
    return tp[names[number - 1]]


def _polymorphic_name(data: dict[str, Any], path: str) -> str:
    if "type" in data:
        name = data["type"]
        if not isinstance(name, str):
            raise _fail(_join(path, "type"), "expected a string")
        return name
    if len(data) != 1:
        raise _fail(path, 'expected a single-key object like {"Name": {...}} or a "type" field')
    return next(iter(data))


def _decode_polymorphic(base: Any, data: JSON, path: str) -> Any:
    if isinstance(data, str):
        name, body = data, {}
    elif isinstance(data, dict):
        name = _polymorphic_name(data, path)
        if "type" in data:
            body = {k: v for k, v in data.items() if k != "type"}
        else:
            body = data[name] if data[name] is not None else {}
    else:
        raise _fail(
            path, f"expected an object naming the {base.registry.kind}, got {_type_name(data)}"
        )
    cls = base.registry.get(name, field=path or None)
    return _decode_dataclass(cls, body, _join(path, cls.wire_name) if "type" not in data else path)


def _decode_dataclass(cls: Any, data: JSON, path: str) -> Any:
    values = _decode_fields(cls, data, path)
    for field in _fields(cls):
        if field.name not in values and _required(field):
            raise _fail(_join(path, _wire_name(field)), "field required")
    try:
        return cls(**values)
    except ForestFlowError as error:
        raise error.with_field_prefix(path) from None


def _decode_fields(cls: Any, data: JSON, path: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise _fail(path, f"expected an object, got {_type_name(data)}")
    lookup = _field_lookup(cls)
    hints = _hints(cls)
    values: dict[str, Any] = {}
    seen_as: dict[str, str] = {}
    for key, raw in data.items():
        field = lookup.get(_normalise(key))
        if field is None:
            allowed = ", ".join(_wire_name(f) for f in _fields(cls)) or "(none)"
            raise _fail(_join(path, key), f"unknown field; allowed fields: {allowed}")
        if field.name in seen_as:
            raise _fail(_join(path, key), f"given twice (also as '{seen_as[field.name]}')")
        seen_as[field.name] = key
        values[field.name] = _decode_type(hints[field.name], raw, _join(path, _wire_name(field)))
    return values


def _required(field: dataclasses.Field[Any]) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def _normalise(name: str) -> str:
    return name.replace("_", "").replace("-", "").lower()


def _wire_name(field: dataclasses.Field[Any]) -> str:
    name: str = field.metadata.get("wire") or _camel(field.name)
    return name


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


@cache
def _fields(cls: Any) -> tuple[dataclasses.Field[Any], ...]:
    return tuple(f for f in dataclasses.fields(cls) if f.init and not f.metadata.get("internal"))


@cache
def _field_lookup(cls: Any) -> dict[str, dataclasses.Field[Any]]:
    lookup: dict[str, dataclasses.Field[Any]] = {}
    for field in _fields(cls):
        for spelling in (field.name, _wire_name(field), *field.metadata.get("aliases", ())):
            lookup[_normalise(spelling)] = field
    return lookup


@cache
def _hints(cls: Any) -> dict[str, Any]:
    return typing.get_type_hints(cls)
