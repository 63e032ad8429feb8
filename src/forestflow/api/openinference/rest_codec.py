"""The protocol's REST JSON (and its binary tensor data extension) ⇄ requests and outputs.

A JSON tensor's `data` is flat or nested in row-major order; `null` is a missing value.
With the binary extension the body is the JSON header (`Inference-Header-Content-Length`
bytes of it) followed by the raw contents of each input whose parameters name a
`binary_data_size`, in input order; outputs asked for with `binary_data` (or every output,
with the request parameter `binary_data_output`) come back the same way.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from forestflow.api.openinference.codec import InferRequest, configs_of
from forestflow.api.openinference.datatypes import (
    DTYPES,
    InputTensor,
    OutputTensor,
    datatype_name,
    element_count,
    from_raw,
    invalid,
    to_raw,
)
from forestflow.api.openinference.models import Inferred
from forestflow.api.rest.bodies import parse_json
from forestflow.domain.frame import Column
from forestflow.errors import MalformedRequest

BINARY_OUTPUT = "binary_data_output"
"""The request parameter asking for every output in binary; not passed on as a config."""


@dataclass(frozen=True, slots=True)
class RestInferRequest:
    """A decoded REST request: what to score, and which outputs to send as binary."""

    request: InferRequest
    binary_outputs: frozenset[str]
    binary_by_default: bool

    def binary(self, output: str) -> bool:
        """Whether `output` goes back as binary data."""
        return output in self.binary_outputs or self.binary_by_default


def split_binary(body: bytes, header_length: str) -> tuple[Any, bytes]:
    """The JSON header (parsed) and the binary data after it."""
    if not header_length.isdigit() or int(header_length) > len(body):
        raise MalformedRequest(
            f"Inference-Header-Content-Length {header_length!r} is not a length within the "
            f"body ({len(body)} bytes)"
        )
    length = int(header_length)
    return parse_json(body[:length]), body[length:]


def parse_infer(body: Any, binary: bytes = b"") -> RestInferRequest:
    """Decode an inference request body; errors name the field path."""
    if not isinstance(body, dict):
        raise invalid("expected a JSON object with 'inputs'")
    unknown = body.keys() - _REQUEST_FIELDS
    if unknown:
        raise invalid("unknown field; allowed: id, parameters, inputs, outputs", min(unknown))
    parameters = _object(body.get("parameters"), "parameters")
    binary_by_default = parameters.pop(BINARY_OUTPUT, False) is True
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise invalid("expected a non-empty array of tensors", "inputs")
    chunks = _Chunks(binary)
    tensors = tuple([_input(tensor, f"inputs[{i}]", chunks) for i, tensor in enumerate(inputs)])
    chunks.check_consumed()
    wanted, binary_outputs = _outputs(body.get("outputs"))
    request_id = body.get("id", "")
    if not isinstance(request_id, str):
        raise invalid("expected a string", "id")
    configs = configs_of(parameters) if parameters else {}
    request = InferRequest(tensors, configs, wanted, request_id)
    return RestInferRequest(request, binary_outputs, binary_by_default)


_REQUEST_FIELDS = frozenset({"id", "parameters", "inputs", "outputs"})
_NO_OUTPUTS: tuple[None, frozenset[str]] = (None, frozenset())


def _object(value: Any, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid("expected an object", field)
    return dict(value)


class _Chunks:
    """The binary data after the JSON header, handed out in order."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._offset = 0

    def take(self, size: Any, field: str) -> bytes:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise invalid("expected a byte count >= 0", field)
        if self._offset + size > len(self._data):
            raise invalid(
                f"{size} bytes of binary data expected, {len(self._data) - self._offset} left "
                "after the JSON header (see Inference-Header-Content-Length)",
                field,
            )
        chunk = self._data[self._offset : self._offset + size]
        self._offset += size
        return chunk

    def check_consumed(self) -> None:
        if self._offset != len(self._data):
            raise invalid(
                f"{len(self._data) - self._offset} bytes of binary data after the JSON header "
                "belong to no input (binary_data_size)"
            )


def _input(tensor: Any, field: str, chunks: _Chunks) -> InputTensor:
    if not isinstance(tensor, dict):
        raise invalid("expected a tensor object with name, shape, datatype and data", field)
    name = tensor.get("name")
    if not isinstance(name, str) or not name:
        raise invalid("expected a non-empty string", f"{field}.name")
    datatype = datatype_name(tensor.get("datatype"), f"{field}.datatype")
    shape, count = element_count(tensor.get("shape"), f"{field}.shape")
    parameters = tensor.get("parameters")
    if parameters is not None:
        parameters = _object(parameters, f"{field}.parameters")
    if parameters and "binary_data_size" in parameters:
        raw = chunks.take(parameters["binary_data_size"], f"{field}.parameters.binary_data_size")
        return InputTensor(name, datatype, shape, from_raw(raw, datatype, count, f"{field}.data"))
    data = tensor.get("data")
    if not isinstance(data, list):
        raise invalid("expected an array of elements (or binary_data_size)", f"{field}.data")
    flat = list(_flatten(data)) if data and isinstance(data[0], list) else data
    if len(flat) != count:
        raise invalid(
            f"shape {list(shape)} holds {count} element(s), data has {len(flat)}", f"{field}.data"
        )
    return InputTensor(name, datatype, shape, json_elements(flat, datatype, f"{field}.data"))


def _flatten(data: list[Any]) -> Iterator[Any]:
    for item in data:
        if isinstance(item, list):
            yield from _flatten(item)
        else:
            yield item


_NUMBER = {int, float}


def json_elements(values: list[Any], datatype: str, field: str) -> Column:
    """JSON elements as an array of `datatype` (floats with NaN, or objects, for nulls)."""
    types = set(map(type, values))
    missing = type(None) in types
    types.discard(type(None))
    if datatype == "BYTES":
        return _objects(values, types, {str}, "strings", field)
    if datatype == "BOOL":
        if missing:
            return _objects(values, types, {bool}, "booleans", field)
        _check_types(types, {bool}, "booleans", field)
        return np.array(values, dtype=np.bool_)
    _check_types(types, _NUMBER, "numbers", field)
    dtype = DTYPES[datatype]
    if missing:
        array = np.array([math.nan if v is None else v for v in values], dtype=np.float64)
        present = array[~np.isnan(array)]
    else:
        array = present = np.array(values)
    if array.dtype == object:  # integers beyond 64 bits
        raise invalid(f"numbers out of range for {datatype}", field)
    _check_range(present, dtype, datatype, field)
    return array if missing and dtype.kind in "iu" else _cast(array, dtype, datatype, field)


def _objects(
    values: list[Any], types: set[type], allowed: set[type], what: str, field: str
) -> Column:
    _check_types(types, allowed, what, field)
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def _check_types(types: set[type], allowed: set[type], what: str, field: str) -> None:
    if not types <= allowed:
        wrong = sorted(t.__name__ for t in types - allowed)
        raise invalid(f"expected {what}, got {', '.join(wrong)}", field)


def _check_range(present: Column, dtype: np.dtype[Any], datatype: str, field: str) -> None:
    if dtype.kind not in "iu" or not present.size:
        return
    if present.dtype.kind == "f" and not np.all(np.mod(present, 1) == 0):
        raise invalid(f"{datatype} elements must be whole numbers", field)
    info = np.iinfo(dtype)
    if present.min() < info.min or present.max() > info.max:
        raise invalid(f"numbers out of range for {datatype} [{info.min}, {info.max}]", field)


def _cast(array: Column, dtype: np.dtype[Any], datatype: str, field: str) -> Column:
    if array.dtype == dtype:
        return array
    with np.errstate(over="ignore"):
        cast = array.astype(dtype, copy=False)
    if dtype.kind == "f" and np.any(np.isinf(cast) & ~np.isinf(array)):
        raise invalid(f"numbers out of range for {datatype}", field)
    return cast


def _outputs(outputs: Any) -> tuple[tuple[str, ...] | None, frozenset[str]]:
    if outputs is None:
        return _NO_OUTPUTS
    if not isinstance(outputs, list):
        raise invalid("expected an array of {name, parameters}", "outputs")
    names: list[str] = []
    binary: set[str] = set()
    for i, output in enumerate(outputs):
        field = f"outputs[{i}]"
        name = output.get("name") if isinstance(output, dict) else None
        if not isinstance(name, str):
            raise invalid("expected an object with a string 'name'", field)
        parameters = _object(output.get("parameters"), f"{field}.parameters")
        if parameters.get("classification", 0):
            raise invalid(
                "the classification extension is not supported: ask for the label and "
                "probability outputs instead",
                f"{field}.parameters.classification",
            )
        if parameters.get("binary_data") is True:
            binary.add(name)
        names.append(name)
    return tuple(names), frozenset(binary)


def infer_response(
    result: Inferred, request: RestInferRequest
) -> tuple[dict[str, Any], list[bytes]]:
    """The response's JSON header and the binary data that follows it (maybe none)."""
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for tensor in result.outputs:
        body: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        if request.binary(tensor.name):
            blob = to_raw(tensor)
            body["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            body.update(_json_data(tensor))
        outputs.append(body)
    header: dict[str, Any] = {
        "model_name": result.model_name,
        "model_version": result.model_version,
    }
    if request.request.id:
        header["id"] = request.request.id
    header["outputs"] = outputs
    return header, blobs


def _json_data(tensor: OutputTensor) -> dict[str, Any]:
    """`data` for a JSON output; bytes that are not UTF-8 as base64, said in `parameters`."""
    data = tensor.data
    if data.dtype != object:
        return {"data": np.ascontiguousarray(data)}
    values = data.tolist()
    if tensor.datatype != "BYTES":
        return {"data": values}
    try:
        return {"data": [v.decode() if isinstance(v, bytes) else v for v in values]}
    except UnicodeDecodeError:
        encoded = [None if v is None else base64.b64encode(_raw(v)).decode() for v in values]
        return {"data": encoded, "parameters": {"content_type": "base64"}}


def _raw(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()
