"""The protocol's tensor datatypes and tensors, as numpy arrays, whatever the transport.

A tensor's elements are flattened in row-major order. Raw (binary) contents are the
elements little-endian, one byte per BOOL, and each BYTES element as a 4-byte little-endian
length followed by its bytes — the layout of gRPC `raw_*_contents` and of the REST binary
tensor data extension alike.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from forestflow.domain.frame import Column, TensorType
from forestflow.errors import InferenceRequestInvalidError

DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
"""Every datatype ForestFlow accepts, with the numpy dtype that holds its elements."""

_OF_TENSOR_TYPE: dict[TensorType, str] = {
    TensorType.Float16: "FP16",
    TensorType.Float32: "FP32",
    TensorType.Float64: "FP64",
    TensorType.Int8: "INT8",
    TensorType.Int16: "INT16",
    TensorType.Int32: "INT32",
    TensorType.Int64: "INT64",
    TensorType.Bool: "BOOL",
    TensorType.String: "BYTES",
    TensorType.Bytes: "BYTES",
}

_LENGTH = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class InputTensor:
    """One input of a request: `data` holds the flattened elements (`shape`'s product of them).

    Numbers, booleans and raw contents come as arrays of the datatype's dtype; BYTES, and
    JSON data with nulls (missing values), as object arrays (str or bytes, None).
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: Column


@dataclass(frozen=True, slots=True)
class OutputTensor:
    """One output of a response: a prediction column, `shape` [rows]."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: Column


def invalid(message: str, field: str | None = None) -> InferenceRequestInvalidError:
    """The error for a request the protocol or the model cannot take."""
    return InferenceRequestInvalidError(message, field=field)


def datatype_name(datatype: Any, field: str) -> str:
    """`datatype` if it names a supported datatype; refused naming the supported ones."""
    if not isinstance(datatype, str) or datatype not in DTYPES:
        raise invalid(f"unsupported datatype {datatype!r}; supported: {', '.join(DTYPES)}", field)
    return datatype


def element_count(shape: Any, field: str) -> tuple[tuple[int, ...], int]:
    """The shape as a tuple of non-negative ints, and its element count."""
    if type(shape) is not list and (
        not isinstance(shape, Sequence) or isinstance(shape, str | bytes)
    ):
        raise invalid("expected an array of dimensions", field)
    dims = tuple(shape)
    if not all(type(d) is int and d >= 0 for d in dims):  # a bool is no dimension
        raise invalid(f"dimensions must be integers >= 0, got {list(dims)}", field)
    return dims, math.prod(dims)


def datatype_of_tensor_type(tensor_type: TensorType) -> str:
    """The datatype a model input or output of `tensor_type` travels as."""
    return _OF_TENSOR_TYPE[tensor_type]


def output_tensor(name: str, column: Column) -> OutputTensor:
    """A prediction column as an output tensor; object columns get the type of their values."""
    datatype, data = _typed(column)
    return OutputTensor(name, datatype, (len(data),), data)


def _typed(column: Column) -> tuple[str, Column]:  # noqa: PLR0911 - one answer per kind
    kind = column.dtype.kind
    if kind == "f":
        return {2: "FP16", 4: "FP32"}.get(column.dtype.itemsize, "FP64"), column
    if kind in "iu":
        prefix = "INT" if kind == "i" else "UINT"
        return f"{prefix}{column.dtype.itemsize * 8}", column
    if kind == "b":
        return "BOOL", column
    if kind in "SU":
        return "BYTES", column.astype(object)
    first = next((value for value in column if value is not None), None)
    if isinstance(first, bool | np.bool_):
        return "BOOL", column
    if isinstance(first, int | np.integer) and not any(value is None for value in column):
        return "INT64", column.astype(np.int64)
    if isinstance(first, float | int | np.number):
        return "FP64", np.array([math.nan if v is None else v for v in column], dtype=np.float64)
    return "BYTES", column


def from_raw(raw: bytes, datatype: str, count: int, field: str) -> Column:
    """Decode raw contents of `count` elements of `datatype`."""
    if datatype == "BYTES":
        return _bytes_elements(raw, count, field)
    dtype = DTYPES[datatype]
    if len(raw) != count * dtype.itemsize:
        raise invalid(
            f"{len(raw)} bytes of raw data do not hold {count} {datatype} element(s) "
            f"({count * dtype.itemsize} bytes)",
            field,
        )
    if datatype == "BOOL":
        flags: Column = np.frombuffer(raw, dtype=np.uint8) != 0
        return flags
    elements: Column = np.frombuffer(raw, dtype=dtype.newbyteorder("<"))
    return elements.astype(dtype, copy=False)


def _bytes_elements(raw: bytes, count: int, field: str) -> Column:
    elements = np.empty(count, dtype=object)
    offset = 0
    for i in range(count):
        if offset + 4 > len(raw):
            raise invalid(f"raw BYTES data ends before element {i} of {count}", field)
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise invalid(f"raw BYTES element {i} runs past the end of the data", field)
        elements[i] = raw[offset : offset + length]
        offset += length
    if offset != len(raw):
        raise invalid(f"raw BYTES data holds more than {count} element(s)", field)
    return elements


def to_raw(tensor: OutputTensor) -> bytes:
    """The raw contents of an output tensor (a missing BYTES or BOOL element as empty/false)."""
    if tensor.datatype == "BYTES":
        parts: list[bytes] = []
        for value in tensor.data:
            element = _as_bytes(value)
            parts.append(_LENGTH.pack(len(element)))
            parts.append(element)
        return b"".join(parts)
    if tensor.datatype == "BOOL" and tensor.data.dtype == object:
        return np.array([v is not None and bool(v) for v in tensor.data], dtype=np.bool_).tobytes()
    dtype = DTYPES[tensor.datatype].newbyteorder("<")
    return np.ascontiguousarray(tensor.data, dtype=dtype).tobytes()


def _as_bytes(value: Any) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    return str(value).encode()
