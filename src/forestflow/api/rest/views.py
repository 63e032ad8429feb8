"""JSON views of servable metrics and model metadata (SPEC §4.3)."""

from __future__ import annotations

from typing import Any

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


def metadata_body(fqrv: FQRV, signature: ModelSignature) -> dict[str, Any]:
    """`{"BasicMetaData": {...}}`: input tensors by type (ready to copy into a score request's
    `schema`), every feature with its type and missing-value support, and the outputs."""
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
        }
    }
