"""Prediction events (SPEC §5): one per scored request, served or shadow."""

from __future__ import annotations

from dataclasses import dataclass

from forestflow.domain.fqrv import FQRV
from forestflow.domain.frame import Frame
from forestflow.domain.settings import LoggingSettings


@dataclass(frozen=True, slots=True)
class PredictionEvent:
    """What one servable predicted for one request."""

    fqrv: FQRV
    served_request: bool
    timestamp_ms: int
    request: Frame
    prediction: Frame
    latency_ms: float
    key: str | None


def record_key(settings: LoggingSettings, request: Frame) -> str | None:
    """The record key: each `keyFeatures` name looked up in `configs`, then in the request's
    first row, joined with `keyFeaturesSeparator`; None when no key features are set."""
    if not settings.key_features:
        return None
    parts: list[str] = []
    for name in settings.key_features:
        if name in request.configs:
            parts.append(str(request.configs[name]))
        elif name in request and request.n_rows:
            value = request.row_value(name, 0)
            parts.append("" if value is None else str(value))
        else:
            parts.append("")
    return settings.key_features_separator.join(parts)
