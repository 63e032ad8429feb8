"""GraphPipe requests against a contract (routed) or one release of it (direct).

An `InferRequest` becomes the same frame as the other tensor protocols make
(`openinference.codec.to_frame`) and is scored by the same `InferenceService` as
`POST /{org}/{project}/{n}/score`: routed, counted, shadowed and logged, or — for a release —
scored directly. Its tensors are named by `input_names`; without names, one tensor
[rows, n_inputs] is the 2-D layout, and otherwise the tensors are the model's inputs in the
model's order (GraphPipe servers take unnamed inputs as their default inputs, which is what
the metadata lists). `config` becomes the frame's configs: a JSON object's entries, or else
the whole text under the key `config`.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from forestflow.api.graphpipe.messages import GraphPipeTensor, InferCall, IOSpec, Metadata
from forestflow.api.graphpipe.tensors import TYPE_NAMES, input_tensor, output_tensors, type_of
from forestflow.api.openinference.codec import (
    InferRequest,
    InputLayout,
    check_outputs,
    configs_of,
    outputs_of,
    to_frame,
)
from forestflow.api.openinference.datatypes import InputTensor
from forestflow.api.openinference.models import described_release
from forestflow.control.plane import ControlPlane
from forestflow.domain.fqrv import FQRV, Contract
from forestflow.domain.frame import Frame
from forestflow.domain.signature import FeatureSpec, ModelSignature
from forestflow.errors import (
    ForestFlowError,
    InferenceRequestInvalidError,
    MalformedRequest,
)
from forestflow.serving.inference import InferenceService

SERVER = "ForestFlow"
MATRIX_NAME = "input"
"""The name an unnamed 2-D tensor gets: not an input's name, so its columns are the inputs."""
CONFIG_KEY = "config"
"""The configs key that holds a `config` which is not a JSON object."""


@dataclass(frozen=True, slots=True)
class Inferred:
    """The output tensors of one request, and the release that made them."""

    fqrv: FQRV
    tensors: list[GraphPipeTensor]


class GraphPipeService:
    """GraphPipe's view of the control plane and the inference service."""

    def __init__(self, control: ControlPlane, inference: InferenceService) -> None:
        self._control = control
        self._inference = inference

    def release(self, contract: Contract, release: str | None) -> FQRV:
        """The release named (404 unless loaded), or the one that stands for the contract:
        the largest traffic share (the newer on a tie), else the newest loaded release."""
        if release is not None:
            fqrv = FQRV(contract, release)
            self._control.servable_route(fqrv)
            return fqrv
        return described_release(self._control, contract)

    async def infer(self, contract: Contract, release: str | None, call: InferCall) -> Inferred:
        """Score `call` on the release, or on the contract through its router."""
        described = self.release(contract, release)
        signature = self._control.signature(described)
        wanted = call.output_names or None
        request = InferRequest(_inputs(call, signature), configs(call.config), wanted)
        try:
            layout = InputLayout.of(signature)
            check_outputs(layout, wanted)
            frame: Frame = to_frame(request, layout)
        except ForestFlowError as error:
            raise _renamed(error) from None
        if release is None:
            scored = await self._inference.score(contract, frame)
        else:
            scored = await self._inference.score_servable(described, frame)
        try:
            outputs = outputs_of(scored.prediction, wanted)
        except ForestFlowError as error:
            raise _renamed(error) from None
        return Inferred(scored.fqrv, output_tensors(outputs))

    def metadata(self, contract: Contract, release: str | None) -> tuple[FQRV, Metadata]:
        """The release that would answer, and the `MetadataResponse` describing it."""
        fqrv = self.release(contract, release)
        signature = self._control.signature(fqrv)
        return fqrv, Metadata(
            name=str(contract),
            version=fqrv.release_version,
            server=SERVER,
            description=layout_description(fqrv, signature),
            inputs=tuple(_io(spec) for spec in signature.inputs),
            outputs=tuple(_io(spec) for spec in signature.outputs),
        )


def configs(config: str) -> dict[str, str]:
    """The frame configs of a request's `config`: a JSON object's entries (scalars, as text),
    else the whole text under `config`; none for an empty one."""
    if not config:
        return {}
    try:
        parsed = orjson.loads(config)
    except orjson.JSONDecodeError:
        return {CONFIG_KEY: config}
    if not isinstance(parsed, dict):
        return {CONFIG_KEY: config}
    try:
        return configs_of(parsed, "config")
    except ForestFlowError as error:
        raise MalformedRequest(
            f"config is a JSON object, so its values must be strings, numbers or booleans: "
            f"{error.message}",
            field=error.field,
        ) from None


def _inputs(call: InferCall, signature: ModelSignature) -> tuple[InputTensor, ...]:
    """The request's tensors, named."""
    names = _names(call, signature)
    return tuple(
        input_tensor(name, tensor, f"input_tensors[{i}]")
        for i, (name, tensor) in enumerate(zip(names, call.tensors, strict=True))
    )


def _names(call: InferCall, signature: ModelSignature) -> tuple[str, ...]:
    tensors, given = call.tensors, call.input_names
    if not tensors:
        raise MalformedRequest("the InferRequest has no input tensors", field="input_tensors")
    if given:
        if len(given) != len(tensors):
            raise MalformedRequest(
                f"{len(given)} input_names for {len(tensors)} input_tensors: name every "
                "tensor, or none",
                field="input_names",
            )
        return given
    inputs = signature.input_names
    if not inputs:  # the model takes the request's fields in request order
        return tuple(f"{MATRIX_NAME}{i}" for i in range(len(tensors)))
    shape = tensors[0].shape
    if len(tensors) == 1 and len(shape) == 2 and len(inputs) > 1:
        return (MATRIX_NAME,)
    if len(tensors) != len(inputs):
        raise _invalid_layout(len(tensors), inputs)
    return tuple(inputs)


def _invalid_layout(count: int, inputs: list[str]) -> ForestFlowError:
    return InferenceRequestInvalidError(
        f"{count} unnamed input tensor(s) for a model of {len(inputs)} input(s): send "
        f"input_names, one tensor per input in the model's order ({', '.join(inputs)}), or "
        f"one [rows, {len(inputs)}] tensor",
        field="input_tensors",
    )


def _renamed(error: ForestFlowError) -> ForestFlowError:
    """`error` with the codec's field names (`inputs`, `outputs`) as GraphPipe's."""
    field = error.field or ""
    for theirs, ours in (("inputs", "input_tensors"), ("outputs", "output_names")):
        if field == theirs or field.startswith((theirs + ".", theirs + "[")):
            error.field = ours + field[len(theirs) :]
            break
    return error


def _io(spec: FeatureSpec) -> IOSpec:
    return IOSpec(spec.name, spec.description, (-1,), type_of(spec.type))


def layout_description(fqrv: FQRV, signature: ModelSignature) -> str:
    """How the release takes its inputs, for the metadata's description."""
    names = signature.input_names
    if not names:
        return f"{fqrv}: the model names no inputs; it takes the request's tensors in request order"
    kinds = {type_of(spec.type) for spec in signature.inputs}
    matrix = ""
    if all(spec.type.is_numeric for spec in signature.inputs):
        kind = TYPE_NAMES[kinds.pop()] if len(kinds) == 1 else "Float64"
        matrix = f", or one {kind} tensor [rows, {len(names)}] whose columns are the inputs"
    return (
        f"{fqrv}: one tensor [rows] per input, named by input_names or in this order "
        f"({', '.join(names)}){matrix}"
    )
