# mypy: disable-error-code="no-untyped-call"
# (flatc 2.0.8 writes no type hints: the generated accessors and builders are untyped)
"""GraphPipe messages ⇄ plain values, through the classes `flatc` generated from the schema.

`read_request` checks a body (`verifier.py`) and then reads it with the generated accessors;
the `write_*` functions build responses with the generated builders. Nothing here knows
models or frames: `tensors.py` maps GraphPipe tensors to the protocol-neutral tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import flatbuffers
import numpy as np

from forestflow.api.graphpipe._generated import (
    Error,
    InferRequest,
    InferResponse,
    IOMetadata,
    MetadataResponse,
    Request,
    Tensor,
)
from forestflow.api.graphpipe.verifier import REQ_INFER, malformed, verify_request


@dataclass(frozen=True, slots=True)
class GraphPipeTensor:
    """A tensor as it travels: `type` a value of the schema's `Type`, `data` the raw
    little-endian elements (numeric types), `strings` the elements of a String tensor."""

    type: int
    shape: tuple[int, ...]
    data: bytes = b""
    strings: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class InferCall:
    """An `InferRequest`: config, tensors, and the names given to inputs and outputs."""

    config: str
    input_names: tuple[str, ...]
    tensors: tuple[GraphPipeTensor, ...]
    output_names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MetadataCall:
    """A `MetadataRequest` (it carries nothing)."""


@dataclass(frozen=True, slots=True)
class IOSpec:
    """One `IOMetadata`: an input or output of the model."""

    name: str
    description: str
    shape: tuple[int, ...]
    type: int


@dataclass(frozen=True, slots=True)
class Metadata:
    """A `MetadataResponse`."""

    name: str
    version: str
    server: str
    description: str
    inputs: tuple[IOSpec, ...]
    outputs: tuple[IOSpec, ...]


def read_request(raw: bytes) -> InferCall | MetadataCall:
    """The request in a body; 400 (`MalformedRequest`) for one that is not a `Request`."""
    kind = verify_request(raw)
    if kind != REQ_INFER:
        return MetadataCall()
    union = Request.Request.GetRootAs(raw, 0).Req()
    infer = InferRequest.InferRequest()
    infer.Init(union.Bytes, union.Pos)
    return InferCall(
        config=_text(infer.Config() or b"", "config"),
        input_names=tuple(
            _text(infer.InputNames(i), f"input_names[{i}]") for i in range(infer.InputNamesLength())
        ),
        tensors=tuple(_tensor(infer.InputTensors(i)) for i in range(infer.InputTensorsLength())),
        output_names=tuple(
            _text(infer.OutputNames(i), f"output_names[{i}]")
            for i in range(infer.OutputNamesLength())
        ),
    )


def _tensor(tensor: Tensor.Tensor) -> GraphPipeTensor:
    shape = tuple(int(tensor.Shape(j)) for j in range(tensor.ShapeLength()))
    data = b"" if tensor.DataIsNone() else tensor.DataAsNumpy().tobytes()
    strings = tuple(tensor.StringVal(j) for j in range(tensor.StringValLength()))
    return GraphPipeTensor(int(tensor.Type()), shape, data, strings)


def _text(value: bytes, field: str) -> str:
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise malformed("a string is not UTF-8", field) from None


# --- responses ---------------------------------------------------------------------------


def write_infer_response(tensors: Sequence[GraphPipeTensor]) -> bytes:
    """An `InferResponse` holding `tensors`, in order."""
    builder = flatbuffers.Builder(1024 + sum(len(t.data) for t in tensors))
    offsets = [_write_tensor(builder, tensor) for tensor in tensors]
    outputs = _vector(builder, InferResponse.StartOutputTensorsVector, offsets)
    InferResponse.Start(builder)
    InferResponse.AddOutputTensors(builder, outputs)
    builder.Finish(InferResponse.End(builder))
    return bytes(builder.Output())


def write_error_response(code: int, message: str) -> bytes:
    """An `InferResponse` whose `errors` hold one `Error` {code, message}, and no tensors."""
    builder = flatbuffers.Builder(256 + len(message))
    text = builder.CreateString(message)
    Error.Start(builder)
    Error.AddCode(builder, code)
    Error.AddMessage(builder, text)
    errors = _vector(builder, InferResponse.StartErrorsVector, [Error.End(builder)])
    InferResponse.Start(builder)
    InferResponse.AddErrors(builder, errors)
    builder.Finish(InferResponse.End(builder))
    return bytes(builder.Output())


def write_metadata_response(metadata: Metadata) -> bytes:
    """A `MetadataResponse`."""
    builder = flatbuffers.Builder(1024)
    inputs = [_write_io(builder, spec) for spec in metadata.inputs]
    outputs = [_write_io(builder, spec) for spec in metadata.outputs]
    inputs_vector = _vector(builder, MetadataResponse.StartInputsVector, inputs)
    outputs_vector = _vector(builder, MetadataResponse.StartOutputsVector, outputs)
    texts = [
        builder.CreateString(value)
        for value in (metadata.name, metadata.version, metadata.server, metadata.description)
    ]
    MetadataResponse.Start(builder)
    MetadataResponse.AddName(builder, texts[0])
    MetadataResponse.AddVersion(builder, texts[1])
    MetadataResponse.AddServer(builder, texts[2])
    MetadataResponse.AddDescription(builder, texts[3])
    MetadataResponse.AddInputs(builder, inputs_vector)
    MetadataResponse.AddOutputs(builder, outputs_vector)
    builder.Finish(MetadataResponse.End(builder))
    return bytes(builder.Output())


def _write_io(builder: flatbuffers.Builder, spec: IOSpec) -> int:
    name = builder.CreateString(spec.name)
    description = builder.CreateString(spec.description)
    shape = builder.CreateNumpyVector(np.asarray(spec.shape, dtype="<i8"))
    IOMetadata.Start(builder)
    IOMetadata.AddName(builder, name)
    IOMetadata.AddDescription(builder, description)
    IOMetadata.AddShape(builder, shape)
    IOMetadata.AddType(builder, spec.type)
    return int(IOMetadata.End(builder))


def _write_tensor(builder: flatbuffers.Builder, tensor: GraphPipeTensor) -> int:
    shape = builder.CreateNumpyVector(np.asarray(tensor.shape, dtype="<i8"))
    strings = None
    data = None
    if tensor.strings:
        offsets = [builder.CreateString(value) for value in tensor.strings]
        strings = _vector(builder, Tensor.StartStringValVector, offsets)
    else:
        data = builder.CreateByteVector(tensor.data)
    Tensor.Start(builder)
    Tensor.AddType(builder, tensor.type)
    Tensor.AddShape(builder, shape)
    if strings is not None:
        Tensor.AddStringVal(builder, strings)
    if data is not None:
        Tensor.AddData(builder, data)
    return int(Tensor.End(builder))


def _vector(
    builder: flatbuffers.Builder, start: Callable[[Any, int], Any], offsets: Sequence[int]
) -> int:
    """A vector of `offsets` (tables or strings), begun by the generated `start`."""
    start(builder, len(offsets))
    for offset in reversed(offsets):
        builder.PrependUOffsetTRelative(offset)
    return int(builder.EndVector())
