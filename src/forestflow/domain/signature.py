"""Model signatures and `conform`: matching a request's fields to a model's inputs by name.

Rules (SPEC §4.1): fields are matched by name, never position; extra fields are ignored
(they may be key features or configs); numbers are cast to the input's numeric type;
a `null` or a field left out is a missing value, accepted only by inputs that have a
notion of missing (NaN for floats), else the request is refused naming the field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from forestflow.domain.frame import Block, Column, Frame, Layout, TensorType
from forestflow.errors import InferenceRequestInvalidError


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """One model input or output column."""

    name: str
    type: TensorType
    shape: tuple[int, ...] = (-1,)
    description: str = ""
    accepts_missing: bool = False
    domain: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class ModelSignature:
    """What a loaded model takes and gives. Empty `inputs` = takes fields in request order."""

    inputs: tuple[FeatureSpec, ...]
    outputs: tuple[FeatureSpec, ...]

    @property
    def input_names(self) -> list[str]:
        """Input names in the model's order."""
        return [spec.name for spec in self.inputs]


def _invalid(message: str, field: str | None = None) -> InferenceRequestInvalidError:
    return InferenceRequestInvalidError(message, field=field)


def check_complete(frame: Frame, inputs: Sequence[str]) -> None:
    """Refuse a frame that leaves out one of `inputs` or holds a missing value (`null`,
    NaN) in one, naming the first such input (a contract's `missingValues: refuse`)."""
    for name in inputs:
        if name not in frame:
            raise _invalid(
                "the input is left out, and this contract refuses missing values "
                "(missingValues: refuse)",
                name,
            )
        column = frame[name]
        kind = column.dtype.kind
        if kind == "f":
            gaps = np.flatnonzero(np.isnan(column))
        elif kind == "O":
            gaps = np.flatnonzero([_is_missing(value) for value in column])
        else:
            continue
        if gaps.size:
            raise _invalid(
                f"row {int(gaps[0])}: the value is missing, and this contract refuses "
                "missing values (missingValues: refuse)",
                name,
            )


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and value != value)  # noqa: PLR0124


def conform(frame: Frame, signature: ModelSignature) -> Frame:
    """The frame restricted to the model's inputs, in order, cast to their types.

    Raises `InferenceRequestInvalidError` naming the field for a type mismatch, a missing
    value the input cannot take, or a feature that is absent while unknown fields are
    present (most likely a misspelt name).
    """
    if frame.n_rows == 0:
        raise _invalid("the request holds no rows", "datum")
    if not signature.inputs:
        return frame
    conformed = conform_by_plan(frame, signature)
    if conformed is not None:
        return conformed
    absent = [spec for spec in signature.inputs if spec.name not in frame]
    if absent:
        _check_absent(frame, signature, absent)
    columns = {spec.name: _input_column(frame, spec) for spec in signature.inputs}
    return Frame(columns, frame.configs)


def conform_by_plan(frame: Frame, signature: ModelSignature) -> Frame | None:
    """`conform(frame, signature)` when the frame's layout has a matrix plan (see
    `_MatrixPlan`) and no value needs a look; None otherwise, and then `conform` decides,
    naming the field at fault. Its work is elementwise: the rows of frames stacked together
    conform as each frame's own rows would."""
    if not frame.blocks or not signature.inputs or frame.n_rows == 0:
        return None
    plan = _plan(signature, frame)
    return None if plan is None else plan.apply(frame)


def _check_absent(frame: Frame, signature: ModelSignature, absent: Sequence[FeatureSpec]) -> None:
    names = ", ".join(repr(spec.name) for spec in absent)
    unknown = [name for name in frame.names if name not in set(signature.input_names)]
    if unknown and len(unknown) == len(frame.names):
        raise _invalid(
            f"none of the request's fields ({', '.join(map(repr, unknown))}) is an input of "
            f"the model; its inputs are {', '.join(map(repr, signature.input_names))}",
            absent[0].name,
        )
    refused = [spec for spec in absent if not spec.accepts_missing]
    if refused:
        hint = (
            f"; the request also has unknown fields {', '.join(map(repr, unknown))}"
            if unknown
            else ""
        )
        raise _invalid(
            f"missing feature(s) {', '.join(repr(s.name) for s in refused)} "
            f"required by the model{hint}",
            refused[0].name,
        )
    if unknown:
        raise _invalid(
            f"feature(s) {names} are absent while the request has fields the model does not "
            f"know ({', '.join(map(repr, unknown))}); check the spelling, or send null for a "
            "missing value",
            absent[0].name,
        )


def _input_column(frame: Frame, spec: FeatureSpec) -> Column:
    if spec.name not in frame:
        return _missing_column(spec, frame.n_rows)
    column = frame[spec.name]
    if column.dtype == object and all(value is None for value in column):
        _check_missing(np.ones(len(column), dtype=bool), spec)
        return _missing_column(spec, len(column))
    given = TensorType.of_column(column)
    if spec.type.is_numeric:
        return _numeric_column(column, given, spec)
    if given is not spec.type:
        raise _invalid(f"expects {spec.type.value} values, got {given.value}", spec.name)
    if column.dtype == object:
        _check_missing(np.array([value is None for value in column], dtype=bool), spec)
    return column


def _numeric_column(column: Column, given: TensorType, spec: FeatureSpec) -> Column:
    if not given.is_numeric:
        raise _invalid(f"expects {spec.type.value} values, got {given.value}", spec.name)
    missing = np.isnan(column) if column.dtype.kind == "f" else None
    if missing is not None:
        _check_missing(missing, spec)
    if spec.type.is_float:
        return _float_column(column, spec)
    _check_integers(column if missing is None else column[~missing], spec)
    if missing is not None and missing.any():
        return column  # NaN stays: an integer input that takes missing values
    return column.astype(spec.type.dtype, copy=False)


def _float_column(column: Column, spec: FeatureSpec) -> Column:
    # a finite value that overflows the input's type would silently reach the model as inf
    with np.errstate(over="ignore"):
        cast = column.astype(spec.type.dtype, copy=False)
    if np.any(np.isinf(cast) & ~np.isinf(column)):
        raise _invalid(f"expects {spec.type.value} values, got numbers out of its range", spec.name)
    return cast


def _check_integers(values: Column, spec: FeatureSpec) -> None:
    # checked before casting: numpy wraps out-of-range integers (300 → 44 for Int8) silently
    kind = spec.type.value
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values)):
            raise _invalid(f"expects {kind} values, got infinite numbers", spec.name)
        if not np.all(np.mod(values, 1) == 0):
            raise _invalid(f"expects {kind} values, got fractional numbers", spec.name)
    info = np.iinfo(spec.type.dtype.name)
    if values.size and (values.min().item() < info.min or values.max().item() > info.max):
        raise _invalid(
            f"expects {kind} values, got numbers outside [{info.min}, {info.max}]", spec.name
        )


def _check_missing(missing: Column, spec: FeatureSpec) -> None:
    if spec.accepts_missing or not missing.any():
        return
    row = int(np.argmax(missing))
    raise _invalid(
        f"missing value in row {row}: this model has no notion of missing for this "
        f"{spec.type.value} input",
        spec.name,
    )


def _missing_column(spec: FeatureSpec, n_rows: int) -> Column:
    if spec.type.is_numeric:
        return np.full(n_rows, np.nan, dtype=spec.type.dtype if spec.type.is_float else np.float64)
    return np.full(n_rows, None, dtype=object)


@dataclass(frozen=True, slots=True)
class _MatrixPlan:
    """How a frame of one layout becomes a model's input matrix, decided once per layout:
    float inputs of one dtype, each found in one of the frame's blocks.

    `apply` gathers the inputs' columns into one matrix, casts it once and checks it once
    (missing values where refused, overflow when narrowing); when a check finds anything,
    it returns None and the column-by-column path names the field at fault.
    """

    signature: ModelSignature
    names: tuple[str, ...]
    dtype: np.dtype[np.generic]
    gathers: tuple[tuple[int, Any, Any], ...]
    """(block index, columns in the block, positions in the input matrix)"""
    refusing_missing: Column
    """Positions of the inputs that take no missing values."""
    whole: bool
    """The one block is the inputs, in order: used as it is."""

    def apply(self, frame: Frame) -> Frame | None:
        blocks = frame.blocks
        if len(self.gathers) == 1:
            index, columns, _ = self.gathers[0]
            source = blocks[index].matrix
            matrix = source if self.whole else source[:, columns]
        else:
            matrix = np.empty((frame.n_rows, len(self.names)), dtype=self.dtype)
            for index, columns, positions in self.gathers:
                matrix[:, positions] = blocks[index].matrix[:, columns]
        if matrix.dtype != self.dtype:
            with np.errstate(over="ignore"):
                cast = matrix.astype(self.dtype)
            if np.isinf(cast).any():  # overflow, or an infinity sent: the columns path decides
                return None
            matrix = cast
        if self.refusing_missing.size and np.isnan(matrix[:, self.refusing_missing]).any():
            return None
        return Frame.of_blocks((Block(self.names, matrix),), frame.configs)


_PLANS: dict[tuple[int, Layout], _MatrixPlan | None] = {}
_MAX_PLANS = 1024


def _plan(signature: ModelSignature, frame: Frame) -> _MatrixPlan | None:
    """The cached plan for this signature and the frame's layout (None: no plan fits)."""
    key = (id(signature), frame.layout)
    plan = _PLANS.get(key, _MISSING)
    if plan is not _MISSING and (plan is None or plan.signature is signature):
        return plan  # type: ignore[no-any-return]
    plan = _make_plan(signature, frame)
    if len(_PLANS) >= _MAX_PLANS:
        _PLANS.clear()
    _PLANS[key] = plan
    return plan


_MISSING: Any = object()


def _make_plan(signature: ModelSignature, frame: Frame) -> _MatrixPlan | None:
    types = {spec.type for spec in signature.inputs}
    if len(types) != 1 or not next(iter(types)).is_float:
        return None
    where: dict[str, tuple[int, int]] = {}
    for b, block in enumerate(frame.blocks):
        if block.matrix.dtype.kind not in "fiu":
            return None
        for j, name in enumerate(block.names):
            where[name] = (b, j)
    if any(spec.name not in where for spec in signature.inputs):
        return None
    by_block: dict[int, tuple[list[int], list[int]]] = {}
    for position, spec in enumerate(signature.inputs):
        b, j = where[spec.name]
        columns, positions = by_block.setdefault(b, ([], []))
        columns.append(j)
        positions.append(position)
    gathers = tuple(
        (b, np.array(columns, dtype=np.intp), np.array(positions, dtype=np.intp))
        for b, (columns, positions) in by_block.items()
    )
    (first, first_columns, _), *others = gathers
    whole = not others and first_columns.tolist() == list(range(len(frame.blocks[first].names)))
    refusing = [i for i, spec in enumerate(signature.inputs) if not spec.accepts_missing]
    return _MatrixPlan(
        signature,
        tuple(signature.input_names),
        next(iter(types)).dtype,
        gathers,
        np.array(refusing, dtype=np.intp),
        whole,
    )
