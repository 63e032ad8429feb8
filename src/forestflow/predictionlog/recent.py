"""`RecentPredictions`: the last prediction events, in memory, for people to look at.

A sink like the others (the app's `PredictionEmitter` hands it every event), that keeps a
bounded ring of short summaries — when, which servable, served or shadow, latency, rows,
key, and the first row's features and prediction cut to a few values. The dashboard
(`api/ui`) reads it; nothing is written anywhere and nothing survives a restart.

`emit` runs on the serving path: it appends the event to a bounded queue and returns
(O(1)). The summaries are made in `catch_up`, on the emitter's thread, so the ring never
holds a request's frames longer than one emitter batch, however large the requests are.
When more events arrive than the queue holds between two batches, the oldest are
overwritten: only the most recent ones matter here, and those are counted as `dropped`.
"""

from __future__ import annotations

import collections
import itertools
import threading
from dataclasses import dataclass
from typing import ClassVar

from forestflow.domain.fqrv import FQRV, Contract
from forestflow.domain.frame import Frame
from forestflow.predictionlog.events import PredictionEvent
from forestflow.predictionlog.sinks import PredictionSink, SinkStats

DEFAULT_CAPACITY = 200
"""Summaries kept, all servables together."""
PREVIEW_VALUES = 6
"""Columns of the first row shown of a request's features and of its prediction."""
PREVIEW_TEXT = 40
"""Characters of one previewed value."""


@dataclass(frozen=True, slots=True)
class RecentPrediction:
    """A short summary of one prediction event."""

    fqrv: FQRV
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
    def of(cls, event: PredictionEvent) -> RecentPrediction:
        """The summary of `event` (reads its first row only)."""
        features, more_features = _preview(event.request)
        prediction, more_outputs = _preview(event.prediction)
        return cls(
            fqrv=event.fqrv,
            served_request=event.served_request,
            timestamp_ms=event.timestamp_ms,
            latency_ms=event.latency_ms,
            key=event.key,
            rows=event.request.n_rows,
            features=features,
            prediction=prediction,
            more_features=more_features,
            more_outputs=more_outputs,
        )


class RecentPredictions(PredictionSink):
    """The most recent prediction events, as summaries.

    Thread-safe: `emit` is called on the serving path, `catch_up` on the emitter's thread,
    the readers from anywhere; one lock guards the queues, held for O(1) by `emit` and for
    a copy by the readers.
    """

    wire_name: ClassVar[str] = "recent"

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self._lock = threading.Lock()
        self._pending: collections.deque[PredictionEvent] = collections.deque(maxlen=capacity)
        self._ring: collections.deque[RecentPrediction] = collections.deque(maxlen=capacity)
        self._emitted = self._written = self._dropped = 0

    def emit(self, event: PredictionEvent) -> None:
        """Queue `event` for `catch_up` (O(1)); the oldest queued one goes when full."""
        with self._lock:
            if len(self._pending) == self._pending.maxlen:
                self._dropped += 1
            self._pending.append(event)
            self._emitted += 1

    def catch_up(self) -> None:
        """Summarise the queued events (on the emitter's thread)."""
        with self._lock:
            events, self._pending = self._pending, collections.deque(maxlen=self._pending.maxlen)
        summaries = [RecentPrediction.of(event) for event in events]
        with self._lock:
            self._ring.extend(summaries)
            self._written += len(summaries)

    def recent(self, contract: Contract | None = None, limit: int = 50) -> list[RecentPrediction]:
        """The latest summaries, newest first, of one contract's servables (or all)."""
        with self._lock:
            ring = list(self._ring)
        found: list[RecentPrediction] = []
        for summary in reversed(ring):
            if contract is None or summary.fqrv.contract == contract:
                found.append(summary)
                if len(found) == limit:
                    break
        return found

    def stats(self) -> SinkStats:
        """`emitted` every event, `written` those summarised, `dropped` those overwritten
        in the queue before they were."""
        with self._lock:
            return SinkStats(emitted=self._emitted, written=self._written, dropped=self._dropped)


def _preview(frame: Frame) -> tuple[tuple[tuple[str, str], ...], bool]:
    """The first row of `frame`, `PREVIEW_VALUES` columns at most, each value as short text."""
    if frame.n_rows == 0:
        return (), False
    shown = list(itertools.islice(frame, PREVIEW_VALUES + 1))
    preview = tuple((name, _text(frame.row_value(name, 0))) for name in shown[:PREVIEW_VALUES])
    return preview, len(shown) > PREVIEW_VALUES


def _text(value: object) -> str:
    """A cell as text of at most `PREVIEW_TEXT` characters ("" for a missing value)."""
    if value is None:
        text = ""
    elif isinstance(value, bytes):
        text = f"<{len(value)} bytes>"
    else:
        text = str(value)
    return text if len(text) <= PREVIEW_TEXT else text[: PREVIEW_TEXT - 1] + "…"
