"""Contracts and releases as the protocol's models: names, metadata, readiness, inference.

A model is a contract, named `org.project.n`, scored through its router; a model version
is one release of it, scored directly (SPEC §4.2). Organization and project names may hold
dots themselves: a name that splits more than one way is matched against the contracts
that exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from forestflow.api.openinference.codec import (
    InferRequest,
    InputLayout,
    check_outputs,
    outputs_of,
    to_frame,
)
from forestflow.api.openinference.datatypes import OutputTensor, datatype_of_tensor_type, invalid
from forestflow.control.plane import ControlPlane
from forestflow.control.routes import ContractRoute
from forestflow.domain.fqrv import FQRV, Contract
from forestflow.domain.signature import FeatureSpec, ModelSignature
from forestflow.errors import ForestFlowError, NoActiveServablesForContract, UnknownContract
from forestflow.serving.inference import InferenceService

PLATFORM = "forestflow"
MAX_REMEMBERED = 4096
"""Model names and scoring targets remembered; only those that existed are, and the memory
starts over when it is full."""


@dataclass(frozen=True, slots=True)
class TensorMetadata:
    """One input or output as metadata lists it."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    """What the metadata endpoints answer for a model (or one version of it)."""

    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorMetadata, ...]
    outputs: tuple[TensorMetadata, ...]
    parameters: dict[str, str | int | bool] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Inferred:
    """The outputs of one request, and the release that made them."""

    model_name: str
    model_version: str
    outputs: list[OutputTensor]


@dataclass(frozen=True, slots=True)
class _Target:
    """Where a model name and version score, as of one route of the contract."""

    route: ContractRoute
    fqrv: FQRV
    """The release named, or the one whose signature stands for the contract."""
    layout: InputLayout


class ModelCatalog:
    """The protocol's view of the control plane and the inference service.

    What a request to a model resolves to (its contract, the release that describes it and
    that release's input layout) is worked out once per route of the contract: a route is
    replaced whole whenever what the contract serves changes, so a target made for the
    current route is current.
    """

    def __init__(self, control: ControlPlane, inference: InferenceService) -> None:
        self._control = control
        self._inference = inference
        self._names: dict[str, Contract] = {}
        self._targets: dict[tuple[str, str], _Target] = {}

    def contract(self, name: str) -> Contract:
        """The contract a model name stands for; 404 when there is none."""
        known = self._names.get(name)
        if known is not None:
            return self._known(known)
        contract = self._parse(name)
        if name.count(".") == 2:  # splits one way only: the name always means this contract
            if len(self._names) >= MAX_REMEMBERED:
                self._names.clear()
            self._names[name] = contract
        return contract

    def _parse(self, name: str) -> Contract:
        prefix, _, number = name.rpartition(".")
        if not (prefix and "." in prefix and number.isascii() and number.isdigit()):
            raise invalid(
                f"model name {name!r} is not a contract: expected organization.project.number",
                "model_name",
            )
        splits = [(prefix[:i], prefix[i + 1 :]) for i, c in enumerate(prefix) if c == "."]
        if len(splits) == 1:
            return self._known(Contract(*splits[0], int(number)))
        known = set(self._control.contracts())
        matches = [c for org, project in splits if (c := _contract(org, project, number)) in known]
        if len(matches) > 1:
            raise invalid(f"model name {name!r} names {len(matches)} contracts", "model_name")
        if not matches:
            raise UnknownContract(name)
        return matches[0]

    def _known(self, contract: Contract) -> Contract:
        self._control.route(contract)  # 404 for an unknown contract
        return contract

    def servable(self, name: str, version: str) -> FQRV:
        """The release a model name and version stand for; 404 when it is not loaded."""
        fqrv = FQRV(self.contract(name), version)
        self._control.servable_route(fqrv)
        return fqrv

    def ready(self, name: str, version: str = "") -> bool:
        """A version: loaded. A model: some release of it takes traffic."""
        if version:
            self.servable(name, version)
            return True
        return bool(self._control.route(self.contract(name)).plan.shares())

    def metadata(self, name: str, version: str = "") -> ModelMetadata:
        """Inputs and outputs of the version, or of the release taking most of the traffic."""
        contract = self.contract(name)
        fqrv = (
            self.servable(name, version) if version else described_release(self._control, contract)
        )
        failed = self._control.load_errors()
        versions = [f.release_version for f in self._control.releases(contract) if f not in failed]
        signature = self._control.signature(fqrv)
        return ModelMetadata(
            name=name,
            versions=tuple(versions),
            platform=PLATFORM,
            inputs=tuple(_tensor(spec) for spec in signature.inputs),
            outputs=tuple(_tensor(spec) for spec in signature.outputs),
            parameters=layout_parameters(fqrv, signature),
        )

    async def infer(self, name: str, version: str, request: InferRequest) -> Inferred:
        """Score the request on the version, or on the contract through its router."""
        target = self._target(name, version)
        check_outputs(target.layout, request.outputs)
        frame = to_frame(request, target.layout)
        if version:
            scored = await self._inference.score_servable(target.fqrv, frame)
        else:
            scored = await self._inference.score(target.fqrv.contract, frame)
        outputs = outputs_of(scored.prediction, request.outputs)
        return Inferred(name, scored.fqrv.release_version, outputs)

    def _target(self, name: str, version: str) -> _Target:
        contract = self._names.get(name) or self.contract(name)
        route = self._control.route(contract)  # 404 for a contract deleted since
        target = self._targets.get((name, version))
        if target is not None and target.route is route:
            return target
        fqrv = (
            self.servable(name, version) if version else described_release(self._control, contract)
        )
        target = _Target(route, fqrv, InputLayout.of(self._control.signature(fqrv)))
        if len(self._targets) >= MAX_REMEMBERED:
            self._targets.clear()
        self._targets[(name, version)] = target
        return target


def described_release(control: ControlPlane, contract: Contract) -> FQRV:
    """The release whose signature stands for `contract` in every protocol: the largest
    traffic share (the newer on a tie), else the newest loaded release."""
    shares = control.route(contract).plan.shares()
    if shares:
        largest = max(shares.values())
        top = [fqrv for fqrv, share in shares.items() if share == largest]
        if len(top) == 1:
            return top[0]
    failed = control.load_errors()
    releases = [f for f in control.releases(contract) if f not in failed]
    if shares:
        return max(top, key=lambda f: releases.index(f) if f in releases else -1)
    if not releases:
        raise NoActiveServablesForContract(contract)
    return releases[-1]


def _contract(organization: str, project: str, number: str) -> Contract | None:
    try:
        return Contract(organization, project, int(number))
    except ForestFlowError:  # not a valid contract id: it names none
        return None


def _tensor(spec: FeatureSpec) -> TensorMetadata:
    return TensorMetadata(spec.name, datatype_of_tensor_type(spec.type), (-1,))


def layout_parameters(fqrv: FQRV, signature: ModelSignature) -> dict[str, str | int | bool]:
    """How the model takes its inputs, for the metadata's `parameters`."""
    names = signature.input_names
    parameters: dict[str, str | int | bool] = {"servable_fqrv": str(fqrv)}
    if not names:
        parameters["input_layout"] = (
            "the model names no inputs: it takes the request's features in request order, "
            "as tensors [rows] or as one 2-D tensor [rows, n_features]"
        )
        parameters["accepts_2d_tensor"] = True
        return parameters
    datatype = _common_datatype(signature)
    parameters["input_order"] = ",".join(names)
    parameters["accepts_2d_tensor"] = datatype is not None
    if datatype is None:
        parameters["input_layout"] = (
            "one tensor [rows] per input, named like it (inputs of different kinds: no 2-D tensor)"
        )
        return parameters
    parameters["tensor_2d_datatype"] = datatype
    parameters["input_layout"] = (
        f"one tensor [rows] per input, named like it, or one {datatype} tensor "
        f"[rows, {len(names)}] whose columns are the inputs in input_order"
    )
    return parameters


def _common_datatype(signature: ModelSignature) -> str | None:
    """The datatype one 2-D tensor can carry every input in, if there is one."""
    datatypes = {datatype_of_tensor_type(spec.type) for spec in signature.inputs}
    if len(datatypes) == 1:
        return datatypes.pop()
    numeric = all(spec.type.is_numeric for spec in signature.inputs)
    return "FP64" if numeric else None
