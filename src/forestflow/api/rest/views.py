"""JSON views of servable metrics, model metadata (SPEC §4.3), lineage and history."""

from __future__ import annotations

from typing import Any

from forestflow.control.lineage import Lineage, ServableHistory, ServableState
from forestflow.domain.codec import encode
from forestflow.domain.fqrv import FQRV
from forestflow.domain.frame import TensorType
from forestflow.domain.metrics import ServableMetrics
from forestflow.domain.signature import FeatureSpec, ModelSignature


def servable_metrics_body(metrics: ServableMetrics) -> dict[str, Any]:
    """`{"ServableMetrics": {...}}` with camelCase fields."""
    return {"ServableMetrics": encode(metrics)}


def _feature(spec: FeatureSpec) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": spec.name,
        "type": spec.type.value,
        "shape": list(spec.shape),
        "acceptsMissing": spec.accepts_missing,
    }
    if spec.description:
        body["description"] = spec.description
    if spec.domain is not None:
        body["domain"] = list(spec.domain)
    return body


def _input_groups(signature: ModelSignature) -> list[dict[str, Any]]:
    """Inputs grouped by type, as the original's metadata listed them: one schema entry each."""
    groups: dict[TensorType, list[str]] = {}
    for spec in signature.inputs:
        groups.setdefault(spec.type, []).append(spec.name)
    return [
        {
            "name": tensor_type.value.lower(),
            "type": tensor_type.value,
            "shape": [len(names)],
            "fields": names,
            "description": "[" + ",".join(f"{i}:{n}" for i, n in enumerate(names)) + "]",
        }
        for tensor_type, names in groups.items()
    ]


def metadata_body(fqrv: FQRV, signature: ModelSignature, lineage: Lineage) -> dict[str, Any]:
    """`{"BasicMetaData": {...}}`: input tensors by type (ready to copy into a score request's
    `schema`), every feature with its type and missing-value support, the outputs, and
    where the model came from."""
    names = signature.input_names
    description = (
        f"inputs in order: {', '.join(names)}"
        if names
        else "the model names no inputs: it takes the request's fields in request order"
    )
    return {
        "BasicMetaData": {
            "fqrv": encode(fqrv),
            "servableFQRV": str(fqrv),
            "server": "ForestFlow",
            "name": "prediction",
            "description": description,
            "inputs": _input_groups(signature),
            "features": [_feature(spec) for spec in signature.inputs],
            "outputs": [_feature(spec) for spec in signature.outputs],
            "lineage": encode(lineage),
        }
    }


def policy_text(policy: object) -> str:
    """A policy as one line: `KeepLatest(servablesToKeep=2)`."""
    ((name, parameters),) = encode(policy).items()
    return f"{name}({', '.join(f'{k}={v}' for k, v in parameters.items())})"


def _removal_body(history: ServableHistory) -> dict[str, Any] | None:
    removal = history.removal
    if removal is None:
        return None
    body: dict[str, Any] = encode(removal)
    if removal.policy is not None:
        body["description"] = f"expired by {policy_text(removal.policy)}"
    elif removal.reason is ServableState.DELETED:
        who = removal.by or "a client (authentication was off)"
        body["description"] = f"deleted by {who}"
    else:
        body["description"] = "expired (its policy was not recorded)"
    return body


def servable_history_body(history: ServableHistory) -> dict[str, Any]:
    """One servable of a contract's history: its lineage, where it is now, how it left."""
    body: dict[str, Any] = {
        "seq": history.seq,
        "fqrv": encode(history.fqrv),
        "servableFQRV": str(history.fqrv),
        "lineage": encode(history.lineage),
        "state": history.state.value,
        "removal": _removal_body(history),
    }
    if history.failure is not None:
        body["failure"] = history.failure
    return body
