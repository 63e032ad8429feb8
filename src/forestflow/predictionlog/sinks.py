"""Prediction sinks: where prediction events go. Emitting never blocks and never raises."""

from __future__ import annotations

import collections
from abc import ABC, abstractmethod

from forestflow.predictionlog.events import PredictionEvent


class PredictionSink(ABC):
    """Receives prediction events from the serving path."""

    emitted: int = 0
    dropped: int = 0

    @abstractmethod
    def emit(self, event: PredictionEvent) -> None:
        """Accept one event without blocking; count it as dropped if it cannot be kept."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Flush and release resources at shutdown."""


class MemorySink(PredictionSink):
    """Keeps the most recent events in memory (the embedded default until file logs land)."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.events: collections.deque[PredictionEvent] = collections.deque(maxlen=capacity)
        self.emitted = 0
        self.dropped = 0

    def emit(self, event: PredictionEvent) -> None:
        """Keep `event`, evicting the oldest one when full (evictions count as drops)."""
        if len(self.events) == self.events.maxlen:
            self.dropped += 1
        self.events.append(event)
        self.emitted += 1
