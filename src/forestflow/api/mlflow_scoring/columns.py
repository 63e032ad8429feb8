"""Plain values (JSON or CSV cells) as typed frame columns, and rows as frame blocks.

MLflow's payloads carry untyped values: a column's type is read from its values the way
pandas would read them (integers, else numbers with `null` as NaN, booleans, text), and
the model's declared inputs decide only what values cannot say: a `String` input keeps
CSV digits as text, and a `Bytes` input takes base64 text (as MLflow sends binary
columns). Everything else is checked by `conform`, which names the input at fault.
"""

from __future__ import annotations

import base64
import binascii
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from forestflow.domain.frame import Block, Column, Frame, TensorType
from forestflow.errors import InferenceRequestInvalidError

_INTEGER = frozenset({int})
_NUMBER = frozenset({int, float, type(None)})
_BOOL = frozenset({bool})
_BOOL_OR_NONE = frozenset({bool, type(None)})
_TEXT = frozenset({str, type(None)})


def invalid(message: str, field: str | None = None) -> InferenceRequestInvalidError:
    """The error for a payload the protocol or the model cannot take (answered as 400)."""
    return InferenceRequestInvalidError(message, field=field)


def column_of(values: Sequence[Any], spec: TensorType | None, field: str) -> Column:
    """One column's JSON values as a numpy column; `spec` is the input's declared type."""
    kinds = set(map(type, values))
    try:
        if kinds <= _INTEGER:
            return np.array(values, dtype=np.int64)
        if kinds <= _NUMBER and kinds != {type(None)}:
            return np.array(values, dtype=np.float64)  # null → NaN
    except OverflowError:
        raise invalid("an integer is out of the 64-bit range", field) from None
    if kinds <= _BOOL:
        return np.array(values, dtype=bool)
    column = np.empty(len(values), dtype=object)
    column[:] = values
    if kinds <= _TEXT:
        return _bytes_column(column, field) if spec is TensorType.Bytes else column
    if kinds <= _BOOL_OR_NONE:
        return column
    nested = next((k for k in kinds if k in (list, dict)), None)
    if nested is not None:
        row = next(i for i, value in enumerate(values) if type(value) is nested)
        raise invalid(
            f"row {row}: expected a single value, got an {'array' if nested is list else 'object'}"
            " (inputs of more than one value per row are not supported)",
            field,
        )
    names = sorted({_KIND_NAMES.get(k, k.__name__) for k in kinds - {type(None)}})
    raise invalid(f"the column mixes {' and '.join(names)}; send one kind of value", field)


_KIND_NAMES = {int: "numbers", float: "numbers", str: "strings", bool: "booleans"}


def _bytes_column(column: Column, field: str) -> Column:
    """Base64 text as bytes, for an input that takes bytes (MLflow sends binary as base64)."""
    for row, value in enumerate(column):
        if value is None:
            continue
        try:
            column[row] = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise invalid(f"row {row}: expected base64 text for a Bytes input", field) from None
    return column


def frame_of_columns(
    columns: Mapping[str, Sequence[Any]],
    types: Mapping[str, TensorType],
    configs: Mapping[str, str],
    field: str,
) -> Frame:
    """A frame of named columns of JSON values (all of one length, checked by the caller)."""
    typed = {
        name: column_of(values, types.get(name), f"{field}.{name}")
        for name, values in columns.items()
    }
    return Frame(typed, configs)


def frame_of_rows(
    names: Sequence[str],
    rows: Sequence[Sequence[Any]],
    types: Mapping[str, TensorType],
    configs: Mapping[str, str],
    field: str,
) -> Frame:
    """A frame of rows of JSON values (each `len(names)` long, checked by the caller).

    Rows of numbers become one matrix (a frame block) at once, without a column per
    feature, so that `conform` can hand it to the model as it is.
    """
    kinds = set(map(type, itertools.chain.from_iterable(rows)))
    byte_inputs = any(types.get(name) is TensorType.Bytes for name in names)
    if not byte_inputs and kinds <= _NUMBER and kinds != {type(None)}:
        try:
            dtype = np.int64 if kinds <= _INTEGER else np.float64
            return Frame.of_blocks((Block(tuple(names), np.array(rows, dtype=dtype)),), configs)
        except OverflowError:
            pass  # the column path names the column with the out-of-range integer
    by_column = list(zip(*rows, strict=True))
    columns = {name: by_column[j] for j, name in enumerate(names)}
    return frame_of_columns(columns, types, configs, field)
