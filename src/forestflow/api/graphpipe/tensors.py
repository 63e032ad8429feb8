"""GraphPipe tensors ⇄ the tensors the inference protocols share (`openinference.datatypes`).

GraphPipe's `Type` names the same element kinds as the Open Inference Protocol's datatypes,
String being BYTES; its numeric data is the elements little-endian, as raw tensor contents
are. So a GraphPipe request meets a model through the same layout rules (`openinference.
codec`): one tensor per feature, or one 2-D tensor whose columns are the model's inputs.
GraphPipe has no boolean type: a boolean output travels as Uint8 (0 or 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from forestflow.api.graphpipe._generated.Type import Type
from forestflow.api.graphpipe.messages import GraphPipeTensor
from forestflow.api.openinference.datatypes import DTYPES, InputTensor, OutputTensor, to_raw
from forestflow.domain.frame import TensorType
from forestflow.errors import InferenceRequestInvalidError, MalformedRequest

DATATYPES: dict[int, str] = {
    Type.Uint8: "UINT8",
    Type.Int8: "INT8",
    Type.Uint16: "UINT16",
    Type.Int16: "INT16",
    Type.Uint32: "UINT32",
    Type.Int32: "INT32",
    Type.Uint64: "UINT64",
    Type.Int64: "INT64",
    Type.Float16: "FP16",
    Type.Float32: "FP32",
    Type.Float64: "FP64",
    Type.String: "BYTES",
}
"""GraphPipe's types (all but Null) and the protocol datatype each one is."""
_OF_DATATYPE = {datatype: kind for kind, datatype in DATATYPES.items()} | {"BOOL": Type.Uint8}
TYPE_NAMES: dict[int, str] = {
    value: name for name, value in vars(Type).items() if isinstance(value, int)
}
_OF_TENSOR_TYPE: dict[TensorType, int] = {
    TensorType.Float16: Type.Float16,
    TensorType.Float32: Type.Float32,
    TensorType.Float64: Type.Float64,
    TensorType.Int8: Type.Int8,
    TensorType.Int16: Type.Int16,
    TensorType.Int32: Type.Int32,
    TensorType.Int64: Type.Int64,
    TensorType.String: Type.String,
    TensorType.Bytes: Type.String,
    TensorType.Bool: Type.Uint8,
}


def type_of(tensor_type: TensorType) -> int:
    """The GraphPipe type a model input or output of `tensor_type` travels as."""
    return _OF_TENSOR_TYPE[tensor_type]


def input_tensor(name: str, tensor: GraphPipeTensor, field: str) -> InputTensor:
    """A request tensor as a protocol tensor named `name`: elements checked against shape."""
    datatype = DATATYPES.get(tensor.type)
    if datatype is None:
        raise InferenceRequestInvalidError(
            f"tensor {name!r} has type {TYPE_NAMES.get(tensor.type, tensor.type)}; "
            f"send one of {', '.join(TYPE_NAMES[kind] for kind in DATATYPES)}",
            field=f"{field}.type",
        )
    if any(dim < 0 for dim in tensor.shape):
        raise MalformedRequest(
            f"tensor {name!r} has shape {list(tensor.shape)}: dimensions must be >= 0",
            field=f"{field}.shape",
        )
    count = math.prod(tensor.shape)
    if datatype == "BYTES":
        if len(tensor.strings) != count:
            raise _mismatch(name, tensor, f"{len(tensor.strings)} string_val element(s)", field)
        strings = np.empty(count, dtype=object)
        strings[:] = tensor.strings
        return InputTensor(name, datatype, tensor.shape, strings)
    dtype = DTYPES[datatype]
    if len(tensor.data) != count * dtype.itemsize:
        raise _mismatch(name, tensor, f"{len(tensor.data)} byte(s) of data", field)
    elements = np.frombuffer(tensor.data, dtype=dtype.newbyteorder("<"))
    return InputTensor(name, datatype, tensor.shape, elements.astype(dtype, copy=False))


def _mismatch(name: str, tensor: GraphPipeTensor, holds: str, field: str) -> MalformedRequest:
    kind = TYPE_NAMES[tensor.type]
    return MalformedRequest(
        f"tensor {name!r} ({kind}, shape {list(tensor.shape)}) holds {holds}, "
        f"not the {math.prod(tensor.shape)} element(s) of its shape",
        field=field,
    )


def output_tensors(outputs: Sequence[OutputTensor]) -> list[GraphPipeTensor]:
    """Prediction columns as GraphPipe tensors of shape [rows]; a missing string as ""."""
    return [_output(output) for output in outputs]


def _output(output: OutputTensor) -> GraphPipeTensor:
    kind = _OF_DATATYPE[output.datatype]
    if kind != Type.String:
        return GraphPipeTensor(kind, output.shape, data=to_raw(output))
    strings = tuple(_as_bytes(value) for value in output.data)
    return GraphPipeTensor(kind, output.shape, strings=strings)


def _as_bytes(value: object) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    return str(value).encode()
