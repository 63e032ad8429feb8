"""The model inputs a scoring request is read against: one release's, or a contract's.

Which release of a contract answers is decided by its router after the request is read,
so data without column names can be read in "the model's input order" only when every
release the router may pick takes the same inputs in the same order.
"""

from __future__ import annotations

from collections.abc import Mapping

from forestflow.api.mlflow_scoring.payloads import ModelInputs
from forestflow.control.plane import ControlPlane
from forestflow.domain.fqrv import FQRV, Contract
from forestflow.domain.frame import TensorType
from forestflow.domain.signature import ModelSignature
from forestflow.errors import ForestFlowError, NoActiveServablesForContract


def servable_inputs(control: ControlPlane, fqrv: FQRV) -> ModelInputs:
    """The inputs of one loaded release; 404 when it is unknown or not loaded."""
    control.servable_route(fqrv)
    return inputs_of({fqrv: control.signature(fqrv)}, str(fqrv))


def contract_inputs(control: ControlPlane, contract: Contract) -> ModelInputs:
    """The inputs of the releases the contract's router may pick; 404 for an unknown
    contract, `NoActiveServablesForContract` when none takes traffic."""
    candidates = control.route(contract).plan.shares()
    if not candidates:
        raise NoActiveServablesForContract(contract)
    signatures: dict[FQRV, ModelSignature] = {}
    for fqrv in candidates:
        try:
            signatures[fqrv] = control.signature(fqrv)
        except ForestFlowError:  # unloaded since the last evaluation: it will not answer
            continue
    return inputs_of(signatures, f"contract {contract}")


def inputs_of(signatures: Mapping[FQRV, ModelSignature], what: str) -> ModelInputs:
    """The input order the signatures agree on (a model naming none agrees with any)."""
    types: dict[str, TensorType] = {}
    orders: dict[tuple[str, ...], list[str]] = {}
    for fqrv, signature in signatures.items():
        for spec in signature.inputs:
            types.setdefault(spec.name, spec.type)
        if signature.inputs:
            orders.setdefault(tuple(signature.input_names), []).append(fqrv.release_version)
    if len(orders) <= 1:
        return ModelInputs(next(iter(orders), ()), types)
    described = "; ".join(
        f"{', '.join(releases)}: {', '.join(order)}" for order, releases in orders.items()
    )
    return ModelInputs(
        None,
        types,
        conflict=(
            f"values without column names are read in the model's input order, and the "
            f"releases serving {what} take different inputs ({described}); name the columns, "
            "or score one release at /{organization}/{project}/{n}/{release}/invocations"
        ),
    )
