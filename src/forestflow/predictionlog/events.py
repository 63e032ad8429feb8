"""Prediction events (SPEC §5): one per scored request, served or shadow, and their schema.

`event_record` renders an event in the documented, versioned wire schema that every sink
writes (docs/prediction-log.md). Bump `SCHEMA_VERSION` on any change a reader would notice.
`encode_event` turns it into bytes once, for every sink: the JSON is built in one place.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from forestflow.domain.codec import encode
from forestflow.domain.fqrv import FQRV
from forestflow.domain.frame import Column, Frame
from forestflow.domain.settings import LoggingSettings

SCHEMA_VERSION = 1
"""Version of the record layout written by `event_record`."""


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


@dataclass(frozen=True, slots=True)
class EncodedEvent:
    """One event encoded once for every sink: its JSON record and what routing needs."""

    fqrv: FQRV
    """The servable, for a sink's routing (Kafka's topic per contract, its `fqrv` header)."""
    key: str | None
    """The record key (Kafka's message key)."""
    timestamp_ms: int
    """When the prediction was made (Kafka's message timestamp)."""
    value: bytes
    """`event_record(event)` as compact UTF-8 JSON, without a newline: a Kafka message
    value as it is, a line of the JSON Lines files with `\\n` appended."""


def encode_record(event: PredictionEvent) -> bytes:
    """`event_record(event)` as compact UTF-8 JSON; raises if a value has no JSON form."""
    return orjson.dumps(event_record(event), option=orjson.OPT_SERIALIZE_NUMPY)


def encode_event(event: PredictionEvent) -> EncodedEvent:
    """`event` encoded for the sinks (see `encode_record`)."""
    return EncodedEvent(event.fqrv, event.key, event.timestamp_ms, encode_record(event))


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
            parts.append(_key_part(request[name][0]))
        else:
            parts.append("")
    return settings.key_features_separator.join(parts)


def _key_part(value: Any) -> str:
    """A cell as key text: the shortest text of its own precision (a Float32 14.96 is
    "14.96", not 14.960000038146973), bytes as base64, missing as ""."""
    if value is None or (isinstance(value, float | np.floating) and math.isnan(value)):
        return ""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, np.bool_ | bool):
        return str(bool(value)).lower()
    return str(value)


def event_record(event: PredictionEvent) -> dict[str, Any]:
    """The event as JSON-ready data in schema `SCHEMA_VERSION` (columnar features/prediction)."""
    return {
        "schemaVersion": SCHEMA_VERSION,
        "fqrv": encode(event.fqrv),
        "servedRequest": event.served_request,
        "timestampMS": event.timestamp_ms,
        "latencyMS": round(event.latency_ms, 3),
        "key": event.key,
        "request": {
            "features": _columns(event.request),
            "configs": dict(event.request.configs),
        },
        "prediction": _columns(event.prediction),
    }


def _columns(frame: Frame) -> dict[str, list[Any]]:
    return {name: _values(column) for name, column in frame.columns.items()}


def _values(column: Column) -> list[Any]:
    array = np.asarray(column)
    if array.dtype.kind == "f":
        return [None if math.isnan(v) else v for v in array.tolist()]
    if array.dtype.kind in "iub":
        return array.tolist()  # type: ignore[no-any-return]
    return [_plain(v) for v in array.tolist()]


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, np.generic):
        return _plain(value.item())
    return value
