"""BASIC REST inference JSON (SPEC §4.1) ⇄ `Frame`.

Request: `schema` lists typed groups of field names; each `datum` is one row whose
`tensors` follow the schema order, one value per field. Response: the prediction's
columns grouped by type in the same shape.

What the original ForestFlow's protobuf JSON accepted is accepted too: a schema type by
its `Tensor.proto` number (`{"type": 3, ...}` is Float64), a bytes tensor under the name
`Byte` (the original's `Tensor` field), integer values as strings (protobuf JSON renders
int64 as strings).
"""

from __future__ import annotations

import base64
import binascii
import functools
import itertools
import math
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from forestflow.domain.codec import encode, enum_from_number
from forestflow.domain.frame import Block, Column, Frame, TensorType
from forestflow.errors import InvalidField

# "Byte": the bytes field of the original's `Tensor` message
_TYPES = {t.value.lower(): t for t in TensorType} | {"byte": TensorType.Bytes}
_INT_STRING = re.compile(r"-?[0-9]+")


def _invalid(field: str, message: str) -> InvalidField:
    return InvalidField(message, field=field)


def parse_inference_request(body: Any) -> Frame:
    """Turn a BASIC inference request body into a frame; errors name the field path."""
    if not isinstance(body, dict):
        raise _invalid("", "expected a JSON object with 'schema' and 'datum'")
    unknown = set(body) - {"schema", "datum", "configs"}
    if unknown:
        raise _invalid(sorted(unknown)[0], "unknown field; allowed: schema, datum, configs")
    schema = _parse_schema(body.get("schema"))
    datum = body.get("datum")
    if not isinstance(datum, list):
        raise _invalid("datum", "expected an array of rows")
    if not datum:
        raise _invalid("datum", "is empty: send at least one row")
    rows = [_plain_row(row, schema) or _row_tensors(row, i, schema) for i, row in enumerate(datum)]
    parts: list[Block | dict[str, Column]] = []
    for g, (tensor_type, fields) in enumerate(schema):
        group = [row[g] for row in rows]
        block = _block(group, tensor_type, fields)
        if block is None:
            block_or_columns: Block | dict[str, Column] = {
                name: _column([data[f] for data in group], tensor_type, name)
                for f, name in enumerate(fields)
            }
        else:
            block_or_columns = block
        parts.append(block_or_columns)
    configs = _parse_configs(body.get("configs"))
    blocks = tuple(part for part in parts if isinstance(part, Block))
    if len(blocks) == len(parts):
        return Frame.of_blocks(blocks, configs)
    columns: dict[str, Column] = {}
    for part in parts:  # in schema order
        columns.update(part.columns() if isinstance(part, Block) else part)
    return Frame(columns, configs, blocks)


_FLOAT_KINDS = frozenset({float, int, type(None)})
_INTEGER_KINDS = frozenset({int})
_BOOL_KINDS = frozenset({bool})


def _block(
    group: list[list[Any]], tensor_type: TensorType, fields: tuple[str, ...]
) -> Block | None:
    """A typed group's values as one matrix (rows × fields) when they are plainly valid:
    numbers (or null) for floats, integers in range, booleans without gaps. None when any
    value needs a closer look: the column-by-column path then accepts it or names it."""
    kinds = set(map(type, itertools.chain.from_iterable(group)))
    try:
        if tensor_type.is_float and kinds <= _FLOAT_KINDS:
            matrix = np.array(group, dtype=np.float64)  # null → NaN
            if tensor_type is not TensorType.Float64:
                if np.abs(matrix).max(initial=0.0) > _RANGES[tensor_type][1]:
                    return None  # out of the type's range: refused by the column path
                matrix = matrix.astype(tensor_type.dtype)
        elif tensor_type.is_integer and kinds <= _INTEGER_KINDS:
            matrix = np.array(group, dtype=np.int64)  # OverflowError beyond int64
            if tensor_type is not TensorType.Int64:
                low, high = _RANGES[tensor_type]
                if matrix.min() < low or matrix.max() > high:
                    return None
                matrix = matrix.astype(tensor_type.dtype)
        elif tensor_type is TensorType.Bool and kinds == _BOOL_KINDS:
            matrix = np.array(group, dtype=bool)
        else:
            return None
    except (OverflowError, ValueError):
        return None
    return Block(tuple(fields), matrix)


Schema = tuple[tuple[TensorType, tuple[str, ...]], ...]

_SCHEMAS: dict[tuple[tuple[Any, tuple[Any, ...]], ...], Schema] = {}
_MAX_SCHEMAS = 256
_MAX_CACHED_FIELDS = 4096


def _parse_schema(schema: Any) -> Schema:
    """The validated schema; clients send the same few schemas over and over, so each is
    validated once and then found by its content."""
    key = _schema_key(schema)
    parsed = _SCHEMAS.get(key) if key is not None else None
    if parsed is None:
        parsed = _validate_schema(schema)
        if key is not None:
            if len(_SCHEMAS) >= _MAX_SCHEMAS:
                _SCHEMAS.clear()
            _SCHEMAS[key] = parsed
    return parsed


def _schema_key(schema: Any) -> tuple[tuple[Any, tuple[Any, ...]], ...] | None:
    try:
        key = tuple((group["type"], tuple(group["fields"])) for group in schema)
        if sum(len(fields) for _, fields in key) > _MAX_CACHED_FIELDS:
            return None
        hash(key)
    except (TypeError, KeyError):  # not the expected shape: validation says what is wrong
        return None
    return key


def _validate_schema(schema: Any) -> Schema:
    if not isinstance(schema, list) or not schema:
        raise _invalid("schema", 'expected a non-empty array of {"type", "fields"}')
    parsed: list[tuple[TensorType, tuple[str, ...]]] = []
    seen: set[str] = set()
    for i, group in enumerate(schema):
        path = f"schema[{i}]"
        if not isinstance(group, dict):
            raise _invalid(path, "expected an object with 'type' and 'fields'")
        tensor_type = _tensor_type(group.get("type"), f"{path}.type")
        fields = group.get("fields")
        if not isinstance(fields, list) or not fields:
            raise _invalid(f"{path}.fields", "expected a non-empty array of field names")
        for j, name in enumerate(fields):
            if not isinstance(name, str) or not name:
                raise _invalid(f"{path}.fields[{j}]", "expected a non-empty string")
            if name in seen:
                raise _invalid(f"{path}.fields[{j}]", f"field {name!r} appears twice in the schema")
            seen.add(name)
        parsed.append((tensor_type, tuple(fields)))
    return tuple(parsed)


def _tensor_type(name: Any, path: str) -> TensorType:
    if isinstance(name, str):
        tensor_type = _TYPES.get(name.lower())
    else:
        tensor_type = enum_from_number(TensorType, name)
    if tensor_type is None:
        known = ", ".join(t.value for t in TensorType)
        numbers = f"or their numbers 1 to {len(TensorType)}"
        raise _invalid(path, f"unknown tensor type {name!r}; expected one of {known} ({numbers})")
    return tensor_type


def _plain_row(row: Any, schema: Schema) -> list[list[Any]] | None:
    """The row's data lists when it has the plain form (`{"tensors": [{"Float64": {"data":
    [...]}}, ...]}`, type names as the API spells them); None for anything else, which
    `_row_tensors` then accepts in its other forms or refuses with the field at fault."""
    tensors = row.get("tensors") if type(row) is dict else None
    if type(tensors) is not list or len(tensors) != len(schema):
        return None
    found = []
    for tensor, (tensor_type, fields) in zip(tensors, schema, strict=True):
        body = tensor.get(tensor_type.value) if type(tensor) is dict and len(tensor) == 1 else None
        data = body.get("data") if type(body) is dict else None
        if type(data) is not list or len(data) != len(fields):
            return None
        found.append(data)
    return found


def _row_tensors(
    row: Any, index: int, schema: Sequence[tuple[TensorType, tuple[str, ...]]]
) -> list[list[Any]]:
    path = f"datum[{index}]"
    tensors = row.get("tensors") if isinstance(row, dict) else None
    if not isinstance(tensors, list):
        raise _invalid(path, "expected an object with a 'tensors' array")
    if len(tensors) != len(schema):
        raise _invalid(
            f"{path}.tensors",
            f"ragged datum: expected {len(schema)} tensor(s), one per schema entry, "
            f"got {len(tensors)}",
        )
    return [
        _tensor_data(tensor, f"{path}.tensors[{g}]", tensor_type, fields)
        for g, (tensor, (tensor_type, fields)) in enumerate(zip(tensors, schema, strict=True))
    ]


def _tensor_data(
    tensor: Any, path: str, expected: TensorType, fields: tuple[str, ...]
) -> list[Any]:
    if not isinstance(tensor, dict) or not tensor:
        raise _invalid(path, f'expected {{"{expected.value}": {{"data": [...]}}}}')
    if "type" in tensor:
        name, body = tensor["type"], tensor
    elif len(tensor) == 1:
        name, body = next(iter(tensor.items()))
    else:
        raise _invalid(path, f'expected {{"{expected.value}": {{"data": [...]}}}}')
    if _tensor_type(name, path) is not expected:
        raise _invalid(path, f"tensor type {name!r} does not match the schema's {expected.value}")
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        raise _invalid(f"{path}.data", "expected an array of values")
    if len(data) != len(fields):
        raise _invalid(
            f"{path}.data",
            f"ragged datum: expected {len(fields)} value(s) for fields {list(fields)}, "
            f"got {len(data)}",
        )
    return data


def _column(values: list[Any], tensor_type: TensorType, name: str) -> Column:
    if tensor_type.is_integer:
        values = [_int_of_string(v) for v in values]
    check = _CHECKS[tensor_type]
    for row, value in enumerate(values):
        if value is not None and not check(value):
            raise _invalid(name, f"row {row}: {value!r} is not a valid {tensor_type.value} value")
    has_missing = any(value is None for value in values)
    if tensor_type.is_integer or tensor_type.is_float:
        _check_range(values, tensor_type, name)
    if tensor_type.is_float or (tensor_type.is_integer and has_missing):
        dtype = tensor_type.dtype if tensor_type.is_float else np.dtype(np.float64)
        return np.array([math.nan if v is None else v for v in values], dtype=dtype)
    if tensor_type.is_integer:
        return np.array(values, dtype=tensor_type.dtype)
    if tensor_type is TensorType.Bool and not has_missing:
        return np.array(values, dtype=bool)
    if tensor_type is TensorType.Bytes:
        values = [None if v is None else _b64(v, name) for v in values]
    column = np.empty(len(values), dtype=object)
    column[:] = values
    return column


_RANGES: dict[TensorType, tuple[float, float]] = {
    TensorType.Int8: (-(2**7), 2**7 - 1),
    TensorType.Int16: (-(2**15), 2**15 - 1),
    TensorType.Int32: (-(2**31), 2**31 - 1),
    TensorType.Int64: (-(2**63), 2**63 - 1),
    TensorType.Float16: (-65504.0, 65504.0),
    TensorType.Float32: (float(np.finfo(np.float32).min), float(np.finfo(np.float32).max)),
    TensorType.Float64: (-sys.float_info.max, sys.float_info.max),
}
"""The values each numeric type holds; anything outside would wrap around or become inf."""


def _check_range(values: list[Any], tensor_type: TensorType, name: str) -> None:
    """Refuse values the column's dtype cannot hold (instead of wrapping or becoming inf)."""
    low, high = _RANGES[tensor_type]
    for row, value in enumerate(values):
        if value is not None and not low <= value <= high:
            raise _invalid(
                name,
                f"row {row}: {value!r} is out of range for {tensor_type.value} [{low}, {high}]",
            )


def _int_of_string(value: Any) -> Any:
    """`value` as an int when it is an integer's decimal text (protobuf JSON's int64), else
    unchanged (to be checked)."""
    if isinstance(value, str) and _INT_STRING.fullmatch(value.strip()):
        return int(value)
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_integer(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


_CHECKS: dict[TensorType, Callable[[Any], bool]] = {
    **{t: _is_number for t in TensorType if t.is_float},
    **{t: _is_integer for t in TensorType if t.is_integer},
    TensorType.String: lambda v: isinstance(v, str),
    TensorType.Bytes: lambda v: isinstance(v, str),
    TensorType.Bool: lambda v: isinstance(v, bool),
}


def _b64(value: str, name: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(name, f"{value[:20]!r} is not valid base64") from None


def _parse_configs(configs: Any) -> dict[str, str]:
    if configs is None:
        return {}
    if not isinstance(configs, dict):
        raise _invalid("configs", "expected an object of string values")
    parsed: dict[str, str] = {}
    for key, value in configs.items():
        if isinstance(value, dict | list):
            raise _invalid(f"configs.{key}", "expected a string, number or boolean")
        parsed[key] = value if isinstance(value, str) else str(value)
    return parsed


@functools.lru_cache(maxsize=4096)
def _fqrv_fields(fqrv: Any) -> tuple[Any, str]:
    """A servable's `fqrv` object and text as responses carry them (shared, read-only)."""
    return encode(fqrv), str(fqrv)


def prediction_body(fqrv: Any, prediction: Frame) -> dict[str, Any]:
    """The `Prediction` response for `prediction`, made by servable `fqrv`."""
    groups: dict[TensorType, list[str]] = {}
    cells: dict[str, list[Any]] = {}
    for name, column in prediction.columns.items():
        tensor_type = TensorType.of_column(column)
        groups.setdefault(tensor_type, []).append(name)
        cells[name] = _json_values(column, tensor_type)
    schema = [{"type": t.value, "fields": names} for t, names in groups.items()]
    datum = [
        {
            "tensors": [
                {t.value: {"data": [cells[name][row] for name in names]}}
                for t, names in groups.items()
            ]
        }
        for row in range(prediction.n_rows)
    ]
    encoded, text = _fqrv_fields(fqrv)
    return {
        "Prediction": {
            "fqrv": encoded,
            "servableFQRV": text,
            "schema": schema,
            "datum": datum,
        }
    }


def _json_values(column: Column, tensor_type: TensorType) -> list[Any]:
    values: list[Any] = column.tolist()
    if tensor_type.is_float:
        return [None if isinstance(v, float) and not math.isfinite(v) else v for v in values]
    if tensor_type is TensorType.Bytes:
        return [None if v is None else base64.b64encode(v).decode("ascii") for v in values]
    if tensor_type is TensorType.String:
        return [v if v is None or isinstance(v, str) else str(v) for v in values]
    return values
