"""Protocol requests ⇄ `Frame`, for REST and gRPC alike.

Inputs come either as one tensor per feature, named like the model's input ([rows] or
[rows, 1]), or as one 2-D tensor [rows, n_features] whose columns are the model's inputs in
the model's order (any name that is not an input's). Other tensors may sit beside them:
fields the model ignores but `keyFeatures` can read. Request `parameters` become the frame's
`configs`, as BASIC `configs` do. BYTES become text (UTF-8) unless the model's input takes
bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from forestflow.api.openinference.datatypes import InputTensor, OutputTensor, invalid, output_tensor
from forestflow.domain.frame import Block, Column, Frame, TensorType
from forestflow.domain.signature import FeatureSpec, ModelSignature

MAX_2D = 2


@dataclass(frozen=True, slots=True)
class InputLayout:
    """What decoding a request needs from a model's signature, worked out once per model:
    its input names in order, each input's spec, and the outputs it names."""

    names: tuple[str, ...]
    specs: Mapping[str, FeatureSpec]
    outputs: tuple[str, ...]

    @classmethod
    def of(cls, signature: ModelSignature) -> InputLayout:
        """The layout of a model with `signature`."""
        return cls(
            tuple(signature.input_names),
            {spec.name: spec for spec in signature.inputs},
            tuple(spec.name for spec in signature.outputs),
        )


@dataclass(frozen=True, slots=True)
class InferRequest:
    """A decoded inference request, before it meets a model."""

    inputs: tuple[InputTensor, ...]
    configs: Mapping[str, str]
    outputs: tuple[str, ...] | None = None
    """The outputs asked for, in order; None for all of them."""
    id: str = ""


def configs_of(parameters: Mapping[str, Any], field: str = "parameters") -> dict[str, str]:
    """Request parameters as frame configs, the way BASIC `configs` are: text as it is,
    numbers and booleans as their JSON text (`true`, `3`), as MLflow's `params` are."""
    configs: dict[str, str] = {}
    for key, value in parameters.items():
        if value is None or isinstance(value, dict | list):
            raise invalid("expected a string, number or boolean", f"{field}.{key}")
        configs[key] = value if isinstance(value, str) else orjson.dumps(value).decode()
    return configs


def to_frame(request: InferRequest, layout: InputLayout) -> Frame:
    """The request's tensors as the columns of one frame (rows = the first dimension).

    Numeric and BOOL tensors become the frame's blocks (a 2-D tensor one matrix), so that
    `conform` hands them to the model without stacking columns.
    """
    if not request.inputs:
        raise invalid("the request has no input tensors", "inputs")
    if len(request.inputs) == 1:  # the common case: one tensor, one block, no name twice
        names, matrix = _layout(request.inputs[0], layout, "inputs[0]")
        if matrix.dtype != object:
            return Frame.of_blocks((Block(names, matrix),), request.configs)
    specs = layout.specs
    parts: list[Block | dict[str, Column]] = []
    seen: set[str] = set()
    rows: int | None = None
    for i, tensor in enumerate(request.inputs):
        field = f"inputs[{i}]"
        names, matrix = _layout(tensor, layout, field)
        twice = seen.intersection(names)
        if twice:
            raise invalid(f"feature {min(twice)!r} is given twice", field)
        seen.update(names)
        if matrix.dtype != object:
            parts.append(Block(names, matrix))
        else:
            parts.append(
                {n: _typed_column(matrix[:, j], specs.get(n), field) for j, n in enumerate(names)}
            )
        n_rows = tensor.shape[0]
        if rows is not None and n_rows != rows:
            raise invalid(
                f"tensor {tensor.name!r} has {n_rows} row(s), the tensors before it {rows}",
                field,
            )
        rows = n_rows
    blocks = tuple(part for part in parts if isinstance(part, Block))
    if len(blocks) == len(parts):
        return Frame.of_blocks(blocks, request.configs)
    columns: dict[str, Column] = {}
    for part in parts:  # in request order
        columns.update(part.columns() if isinstance(part, Block) else part)
    return Frame(columns, request.configs, blocks)


def _layout(tensor: InputTensor, layout: InputLayout, field: str) -> tuple[tuple[str, ...], Column]:
    """The feature names a tensor carries, and its data as a matrix [rows, features]."""
    shape = tensor.shape
    if not 1 <= len(shape) <= MAX_2D:
        raise invalid(
            f"tensor {tensor.name!r} has shape {list(shape)}: send [rows] or [rows, 1] per "
            "feature, or one [rows, n_features] tensor",
            f"{field}.shape",
        )
    names = layout.names
    if len(shape) == 1 or (shape[1] == 1 and (tensor.name in layout.specs or not names)):
        return (tensor.name,), tensor.data.reshape(shape[0], 1)
    matrix = tensor.data.reshape(shape)
    if not names:  # the model takes fields in request order
        return tuple(f"{tensor.name}[{j}]" for j in range(shape[1])), matrix
    if shape[1] != len(names):
        raise invalid(
            f"a 2-D tensor's columns are the model's {len(names)} inputs in order "
            f"({', '.join(names)}); tensor {tensor.name!r} has {shape[1]}",
            f"{field}.shape",
        )
    return names, matrix


def _typed_column(column: Column, spec: FeatureSpec | None, field: str) -> Column:
    """BYTES as text unless the input takes bytes; everything else as it came."""
    if column.dtype != object:
        return column
    wants_bytes = spec is not None and spec.type is TensorType.Bytes
    converted = np.empty(len(column), dtype=object)
    for row, value in enumerate(column):
        converted[row] = _as_bytes(value) if wants_bytes else _as_text(value, row, field)
    return converted


def _as_bytes(value: Any) -> Any:
    return value.encode() if isinstance(value, str) else value


def _as_text(value: Any, row: int, field: str) -> Any:
    if not isinstance(value, bytes):
        return value
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise invalid(f"row {row}: BYTES element is not UTF-8 text", field) from None


def outputs_of(prediction: Frame, wanted: Sequence[str] | None) -> list[OutputTensor]:
    """The prediction's columns as output tensors: all of them, or those `wanted`, in order."""
    names = list(prediction.columns) if wanted is None else list(wanted)
    unknown = [name for name in names if name not in prediction]
    if unknown:
        raise invalid(
            f"unknown output(s) {', '.join(map(repr, unknown))}; the model gives "
            f"{', '.join(map(repr, prediction.columns))}",
            "outputs",
        )
    return [output_tensor(name, np.asarray(prediction[name])) for name in names]


def check_outputs(layout: InputLayout, wanted: Sequence[str] | None) -> None:
    """Refuse unknown requested outputs before scoring, when the model names its outputs."""
    if wanted is None or not layout.outputs:
        return
    unknown = [name for name in wanted if name not in layout.outputs]
    if unknown:
        raise invalid(
            f"unknown output(s) {', '.join(map(repr, unknown))}; the model gives "
            f"{', '.join(map(repr, layout.outputs))}",
            "outputs",
        )
