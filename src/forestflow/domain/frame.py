"""`Frame`: the one internal request/response shape every transport converts to and from.

A frame is an ordered mapping of feature name → 1-D numpy column (one entry per row),
plus the request's `configs`. Missing values are NaN in float columns and None in
object columns (strings, bytes, booleans with gaps).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

Column = npt.NDArray[np.generic]


class TensorType(enum.Enum):
    """The tensor types of the BASIC REST API (SPEC §4.1)."""

    Float16 = "Float16"
    Float32 = "Float32"
    Float64 = "Float64"
    Int8 = "Int8"
    Int16 = "Int16"
    Int32 = "Int32"
    Int64 = "Int64"
    String = "String"
    Bool = "Bool"
    Bytes = "Bytes"

    @property
    def dtype(self) -> np.dtype[np.generic]:
        """The numpy dtype that holds values of this type (object for strings and bytes)."""
        return np.dtype(_DTYPES[self])

    @property
    def is_float(self) -> bool:
        """Whether values are floating point (and so can carry NaN as missing)."""
        return self in (TensorType.Float16, TensorType.Float32, TensorType.Float64)

    @property
    def is_integer(self) -> bool:
        """Whether values are integers."""
        return self in (TensorType.Int8, TensorType.Int16, TensorType.Int32, TensorType.Int64)

    @property
    def is_numeric(self) -> bool:
        """Whether values are numbers (integers or floats)."""
        return self.is_float or self.is_integer

    @classmethod
    def of_column(cls, column: Column) -> TensorType:  # noqa: PLR0911 - one per kind
        """The tensor type that best describes a numpy column."""
        kind = column.dtype.kind
        if kind == "f":
            return {2: cls.Float16, 4: cls.Float32}.get(column.dtype.itemsize, cls.Float64)
        if kind in "iu":
            return {1: cls.Int8, 2: cls.Int16, 4: cls.Int32}.get(column.dtype.itemsize, cls.Int64)
        if kind == "b":
            return cls.Bool
        if kind == "S":
            return cls.Bytes
        first = (
            next((value for value in column if value is not None), None) if kind == "O" else None
        )
        if isinstance(first, bool | np.bool_):
            return cls.Bool
        if isinstance(first, bytes):
            return cls.Bytes
        return cls.String


_DTYPES: dict[TensorType, str] = {
    TensorType.Float16: "float16",
    TensorType.Float32: "float32",
    TensorType.Float64: "float64",
    TensorType.Int8: "int8",
    TensorType.Int16: "int16",
    TensorType.Int32: "int32",
    TensorType.Int64: "int64",
    TensorType.String: "object",
    TensorType.Bool: "bool",
    TensorType.Bytes: "object",
}


@dataclass(frozen=True, slots=True)
class Frame:
    """Named columns of equal length, plus the request's `configs` (string → string)."""

    columns: Mapping[str, Column]
    configs: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        lengths = {len(c) for c in self.columns.values()}
        if len(lengths) > 1:
            raise ValueError(f"frame columns differ in length: {sorted(lengths)}")

    @property
    def n_rows(self) -> int:
        """Number of rows (0 for a frame without columns)."""
        return len(next(iter(self.columns.values()))) if self.columns else 0

    @property
    def names(self) -> list[str]:
        """Column names in order."""
        return list(self.columns)

    def __iter__(self) -> Iterator[str]:
        return iter(self.columns)

    def __contains__(self, name: object) -> bool:
        return name in self.columns

    def __getitem__(self, name: str) -> Column:
        return self.columns[name]

    def row_value(self, name: str, row: int) -> object:
        """One cell as a plain Python value (None for missing)."""
        value = self.columns[name][row]
        if isinstance(value, float | np.floating) and np.isnan(value):
            return None
        return value.item() if isinstance(value, np.generic) else value
