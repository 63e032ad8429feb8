"""Test support shipped with the package: a controllable clock and prediction capture."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from forestflow.predictionlog.events import PredictionEvent
from forestflow.predictionlog.sinks import MemorySink


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now_ms: int = 1_700_000_000_000) -> None:
        self._now_ms = now_ms

    def now_ms(self) -> int:
        """The current fake time, epoch milliseconds."""
        return self._now_ms

    def advance(self, *, ms: int = 0, seconds: float = 0) -> int:
        """Move time forward and return the new time."""
        if ms < 0 or seconds < 0:
            raise ValueError("time only moves forward")
        self._now_ms += ms + round(seconds * 1000)
        return self._now_ms

    def set(self, now_ms: int) -> None:
        """Jump to `now_ms` (forward only)."""
        if now_ms < self._now_ms:
            raise ValueError("time only moves forward")
        self._now_ms = now_ms


@contextlib.contextmanager
def capture_predictions(sink: MemorySink) -> Iterator[list[PredictionEvent]]:
    """Collect the prediction events `sink` receives inside the block."""
    start = sink.stats().emitted
    captured: list[PredictionEvent] = []
    try:
        yield captured
    finally:
        new = sink.stats().emitted - start
        captured.extend(list(sink.events)[-new:] if new else [])
