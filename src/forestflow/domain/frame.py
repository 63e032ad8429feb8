"""`Frame`: the one internal request/response shape every transport converts to and from.

A frame is an ordered mapping of feature name → 1-D numpy column (one entry per row),
plus the request's `configs`. Missing values are NaN in float columns and None in
object columns (strings, bytes, booleans with gaps).

A frame may also hold some of its columns as `Block`s: one 2-D matrix for several columns
of one dtype, the columns being views of it. Parsers produce blocks for typed groups of
fields, `conform` turns a block into the model's input matrix with one gather and one
cast, and flavors feed that matrix to the model without stacking columns per request.
Blocks are only a faster representation: the columns say the same thing.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import final

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
class Block:
    """Columns `names` of one dtype held as one 2-D matrix: rows × len(names)."""

    names: tuple[str, ...]
    matrix: Column

    def columns(self) -> dict[str, Column]:
        """Each column as a view of the matrix."""
        matrix = self.matrix
        return {name: matrix[:, j] for j, name in enumerate(self.names)}


@final  # `Frame.in_blocks` checks for this very type
class BlockColumns(Mapping[str, Column]):
    """The columns of some blocks, in block order, each made (a view) when asked for: a
    frame that is only passed on as matrices never builds its column views."""

    __slots__ = ("_blocks", "_index")

    def __init__(self, blocks: tuple[Block, ...]) -> None:
        self._blocks = blocks
        self._index: dict[str, tuple[Column, int]] | None = None

    def _lookup(self) -> dict[str, tuple[Column, int]]:
        if self._index is None:
            self._index = {
                name: (block.matrix, j)
                for block in self._blocks
                for j, name in enumerate(block.names)
            }
        return self._index

    def __getitem__(self, name: str) -> Column:
        matrix, j = self._lookup()[name]
        return matrix[:, j]

    def __contains__(self, name: object) -> bool:
        return name in self._lookup()

    def __iter__(self) -> Iterator[str]:
        for block in self._blocks:
            yield from block.names

    def __len__(self) -> int:
        return sum(len(block.names) for block in self._blocks)


Layout = tuple[tuple[object, ...], ...]
"""What two frames must share to be stacked: names and dtypes, block by block."""


@dataclass(frozen=True, slots=True)
class Frame:
    """Named columns of equal length, plus the request's `configs` (string → string).

    `blocks`, when given, hold some of the columns as matrices (see the module doc); the
    columns of a block are views of its matrix, in the block's order.
    """

    columns: Mapping[str, Column]
    configs: Mapping[str, str] = field(default_factory=dict)
    blocks: tuple[Block, ...] = ()

    def __post_init__(self) -> None:
        if not self.in_blocks and len(self.columns) > 1:
            lengths = {len(c) for c in self.columns.values()}
            if len(lengths) > 1:
                raise ValueError(f"frame columns differ in length: {sorted(lengths)}")

    @classmethod
    def of_blocks(
        cls, blocks: tuple[Block, ...], configs: Mapping[str, str] | None = None
    ) -> Frame:
        """A frame of `blocks`' columns, in order (blocks of equal row counts)."""
        if len({block.matrix.shape[0] for block in blocks}) > 1:
            raise ValueError("frame blocks differ in length")
        return cls(BlockColumns(blocks), configs if configs is not None else {}, blocks)

    @property
    def in_blocks(self) -> bool:
        """Whether `blocks` hold every column (`columns` is their `BlockColumns`)."""
        # an exact type check: `isinstance` against a Mapping subclass takes the slow ABC
        # path, and this is asked per request and per row batch
        return type(self.columns) is BlockColumns

    @property
    def layout(self) -> Layout:
        """Names and dtypes of the columns (by block when blocks hold them all)."""
        blocks = self.blocks
        if self.in_blocks or (blocks and sum(len(b.names) for b in blocks) == len(self.columns)):
            if len(blocks) == 1:  # most requests: one matrix
                return ((blocks[0].names, blocks[0].matrix.dtype.str),)
            return tuple((b.names, b.matrix.dtype.str) for b in blocks)
        return tuple((name, column.dtype.str) for name, column in self.columns.items())

    def matrix(self, names: Sequence[str], dtype: np.dtype[np.generic]) -> Column:
        """Columns `names` side by side as one 2-D matrix of `dtype`; a block that holds
        exactly these columns is used as it is (no copy when its dtype is `dtype`)."""
        for block in self.blocks:
            if block.names == tuple(names):
                return block.matrix.astype(dtype, copy=False)
        return np.column_stack([np.asarray(self.columns[name], dtype=dtype) for name in names])

    @property
    def n_rows(self) -> int:
        """Number of rows (0 for a frame without columns)."""
        if self.blocks:
            return int(self.blocks[0].matrix.shape[0])
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
