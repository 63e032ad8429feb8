"""JSON views of servable metrics and model metadata (SPEC §4.3)."""

from __future__ import annotations

from typing import Any

from forestflow.domain.codec import encode
from forestflow.domain.fqrv import FQRV
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


def metadata_body(fqrv: FQRV, signature: ModelSignature) -> dict[str, Any]:
    """`{"ServableMetaData": {...}}`: inputs in the model's order and outputs."""
    names = signature.input_names
    description = (
        f"inputs in order: {', '.join(names)}"
        if names
        else "the model takes the request's fields in request order"
    )
    return {
        "ServableMetaData": {
            "fqrv": encode(fqrv),
            "servableFQRV": str(fqrv),
            "description": description,
            "inputs": [_feature(spec) for spec in signature.inputs],
            "outputs": [_feature(spec) for spec in signature.outputs],
        }
    }
