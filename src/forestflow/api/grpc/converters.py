"""Protobuf messages of `grpc_predict_v2.proto` ⇄ the protocol's transport-neutral values.

Inputs come in typed `contents` or in `raw_input_contents` (one entry per input); outputs
always go back as `raw_output_contents`, as Triton sends them: that is what stock clients
read for every datatype.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from forestflow.api.grpc._generated import grpc_predict_v2_pb2 as pb
from forestflow.api.openinference.codec import InferRequest, configs_of
from forestflow.api.openinference.datatypes import (
    DTYPES,
    InputTensor,
    datatype_name,
    element_count,
    from_raw,
    invalid,
    to_raw,
)
from forestflow.api.openinference.models import Inferred, ModelMetadata, TensorMetadata
from forestflow.domain.frame import Column

CONTENTS: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
"""The `InferTensorContents` field of each datatype; FP16 travels only as raw contents."""


def infer_request(message: pb.ModelInferRequest) -> InferRequest:
    """A `ModelInferRequest` as a transport-neutral request."""
    raw = list(message.raw_input_contents)
    if raw and len(raw) != len(message.inputs):
        raise invalid(
            f"raw_input_contents has {len(raw)} entries for {len(message.inputs)} inputs; "
            "give one per input, or none",
            "raw_input_contents",
        )
    inputs = tuple(
        _input(tensor, raw[i] if raw else None, f"inputs[{i}]")
        for i, tensor in enumerate(message.inputs)
    )
    wanted = tuple(output.name for output in message.outputs) or None
    parameters = parameter_values(message.parameters, "parameters")
    return InferRequest(inputs, configs_of(parameters), wanted, message.id)


def parameter_values(parameters: Any, field: str) -> dict[str, Any]:
    """A protobuf parameter map as plain values."""
    values: dict[str, Any] = {}
    for key, parameter in parameters.items():
        choice = parameter.WhichOneof("parameter_choice")
        if choice is None:
            raise invalid("only bool, int64 and string parameters are supported", f"{field}.{key}")
        values[key] = getattr(parameter, choice)
    return values


def _input(
    tensor: pb.ModelInferRequest.InferInputTensor, raw: bytes | None, field: str
) -> InputTensor:
    datatype = datatype_name(tensor.datatype, f"{field}.datatype")
    shape, count = element_count(list(tensor.shape), f"{field}.shape")
    if raw is not None:
        if tensor.HasField("contents"):
            raise invalid("give raw_input_contents or contents, not both", f"{field}.contents")
        return InputTensor(tensor.name, datatype, shape, from_raw(raw, datatype, count, field))
    name = CONTENTS.get(datatype)
    if name is None:
        raise invalid(f"{datatype} data must come in raw_input_contents", f"{field}.contents")
    data = _elements(getattr(tensor.contents, name), datatype, f"{field}.contents.{name}")
    if len(data) != count:
        raise invalid(
            f"shape {list(shape)} holds {count} element(s), contents has {len(data)}",
            f"{field}.contents",
        )
    return InputTensor(tensor.name, datatype, shape, data)


def _elements(values: Any, datatype: str, field: str) -> Column:
    if datatype == "BYTES":
        array = np.empty(len(values), dtype=object)
        array[:] = list(values)
        return array
    dtype = DTYPES[datatype]
    if datatype in ("INT8", "INT16", "UINT8", "UINT16"):  # carried in 32-bit fields
        wide = np.array(values, dtype=np.int64)
        info = np.iinfo(dtype)
        if wide.size and (wide.min() < info.min or wide.max() > info.max):
            raise invalid(f"numbers out of range for {datatype} [{info.min}, {info.max}]", field)
        return wide.astype(dtype)
    return np.array(values, dtype=dtype)


def infer_response(result: Inferred, request_id: str) -> pb.ModelInferResponse:
    """A `ModelInferResponse` with every output in `raw_output_contents`."""
    response = pb.ModelInferResponse(
        model_name=result.model_name, model_version=result.model_version, id=request_id
    )
    for tensor in result.outputs:
        response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        response.raw_output_contents.append(to_raw(tensor))
    return response


def metadata_response(metadata: ModelMetadata) -> pb.ModelMetadataResponse:
    """A `ModelMetadataResponse` (the protocol's message has no room for `parameters`)."""
    return pb.ModelMetadataResponse(
        name=metadata.name,
        versions=metadata.versions,
        platform=metadata.platform,
        inputs=[_tensor(t) for t in metadata.inputs],
        outputs=[_tensor(t) for t in metadata.outputs],
    )


def _tensor(tensor: TensorMetadata) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(
        name=tensor.name, datatype=tensor.datatype, shape=tensor.shape
    )
