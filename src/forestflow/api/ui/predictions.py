"""A contract's recent prediction events, as the dashboard lists them.

They come from the app's `RingSink` (predictionlog/ring.py) — the ring that also serves
`GET /prediction-log/events` and `forestflow tail` — so the dashboard keeps no copy of its
own: each look reads the contract's last few records from the ring and summarises them
(the first row's features and prediction, cut to a few values each).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from forestflow.domain.fqrv import Contract
from forestflow.predictionlog.ring import HeldEvent, RingSink

PREVIEW_VALUES = 6
"""Columns of the first row shown of a request's features and of its prediction."""
PREVIEW_TEXT = 40
"""Characters of one previewed value."""
READ_SLICE = 256


@dataclass(frozen=True, slots=True)
class RecentPrediction:
    """A short summary of one prediction event."""

    seq: int
    release: str
    served_request: bool
    timestamp_ms: int
    latency_ms: float
    key: str | None
    rows: int
    features: tuple[tuple[str, str], ...]
    """The first row's features, `PREVIEW_VALUES` at most, as text."""
    prediction: tuple[tuple[str, str], ...]
    """The first row's prediction, `PREVIEW_VALUES` at most, as text."""
    more_features: bool
    """Whether the request has more features than shown."""
    more_outputs: bool
    """Whether the prediction has more columns than shown."""

    @classmethod
    def of(cls, held: HeldEvent) -> RecentPrediction:
        """The summary of one held event (its record in the prediction-log schema)."""
        record: dict[str, Any] = orjson.loads(held.record)
        features = (record.get("request") or {}).get("features") or {}
        prediction = record.get("prediction") or {}
        shown_features, more_features = _preview(features)
        shown_prediction, more_outputs = _preview(prediction)
        first: object = next(iter(features.values()), [])
        return cls(
            seq=held.seq,
            release=held.fqrv.release_version,
            served_request=bool(record.get("servedRequest")),
            timestamp_ms=int(record.get("timestampMS", 0)),
            latency_ms=float(record.get("latencyMS", 0.0)),
            key=record.get("key"),
            rows=len(first) if isinstance(first, list) else 1,
            features=shown_features,
            prediction=shown_prediction,
            more_features=more_features,
            more_outputs=more_outputs,
        )


def recent_predictions(ring: RingSink, contract: Contract, limit: int) -> list[RecentPrediction]:
    """The contract's last `limit` events the ring holds, newest first."""

    def ours(held: HeldEvent) -> bool:
        return held.fqrv.contract == contract

    cursor = ring.last(limit, lambda fqrv: fqrv.contract == contract)
    found: list[HeldEvent] = []
    while True:  # bounded: the ring holds at most its capacity after any cursor
        part = ring.read(cursor, READ_SLICE)
        found += filter(ours, part.events)
        if len(part.events) < READ_SLICE:
            break
        cursor = part.cursor
    return [RecentPrediction.of(held) for held in reversed(found[-limit:])]


def _preview(columns: Mapping[str, Any]) -> tuple[tuple[tuple[str, str], ...], bool]:
    """The first value of each of the first `PREVIEW_VALUES` columns, as short text."""
    shown: list[tuple[str, str]] = []
    for name, values in columns.items():
        if len(shown) == PREVIEW_VALUES:
            return tuple(shown), True
        first = values[0] if isinstance(values, list) and values else values
        shown.append((str(name), _text(first)))
    return tuple(shown), False


def _text(value: object) -> str:
    """A value as text of at most `PREVIEW_TEXT` characters ("" for a missing value)."""
    text = "" if value is None else str(value)
    return text if len(text) <= PREVIEW_TEXT else text[: PREVIEW_TEXT - 1] + "…"
