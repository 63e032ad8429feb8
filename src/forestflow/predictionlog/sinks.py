"""Prediction sinks: where prediction events go. Emitting never blocks and never raises.

Each sink kind is registered by name (`files`, `kafka`, `memory`) and built by the app from
the configuration. A sink owns a bounded buffer: when it is full, or the destination is
down long enough for buffered events to expire, events are dropped and counted.

The app hands events to its sinks through one `PredictionEmitter` (emitter.py). A sink that
writes the JSON record (`takes_encoded`) gets it from the emitter's thread, encoded once for
all of them, through `write_encoded`; any other sink gets `emit(event)` on the serving path,
as before, and may leave work for `catch_up`, which the emitter's thread calls.
"""

from __future__ import annotations

import collections
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from forestflow.domain.registry import Registry
from forestflow.predictionlog.events import EncodedEvent, PredictionEvent


@dataclass(frozen=True, slots=True)
class SinkStats:
    """Counters of one sink since start-up."""

    emitted: int
    """Events handed to the sink."""
    written: int
    """Events the destination acknowledged (written to a file, acked by the broker)."""
    dropped: int
    """Events lost: buffer full, destination down past the retry limit, or unencodable."""


class PredictionSink(ABC):
    """Receives prediction events from the serving path."""

    registry: ClassVar[Registry[PredictionSink]]
    wire_name: ClassVar[str]
    takes_encoded: ClassVar[bool] = False
    """True: the emitter hands this sink encoded records (`write_encoded`, `count_dropped`)
    from its thread. False: the emitter calls `emit` on the serving path, then `catch_up`."""

    @abstractmethod
    def emit(self, event: PredictionEvent) -> None:
        """Accept one event without blocking; count it as dropped if it cannot be kept."""

    def emit_many(self, events: Sequence[PredictionEvent]) -> None:
        """Accept several events, as `emit` does each (a sink may take them at once)."""
        for event in events:
            self.emit(event)

    @abstractmethod
    def stats(self) -> SinkStats:
        """The sink's counters (safe to call from any thread)."""

    def write_encoded(self, records: Sequence[EncodedEvent]) -> None:
        """Accept events already encoded, without blocking (sinks that `takes_encoded`)."""
        raise NotImplementedError(f"{type(self).__name__} does not take encoded events")

    def count_dropped(self, count: int) -> None:
        """Count `count` events meant for this sink that were dropped before reaching it
        (sinks that `takes_encoded`: the emitter's buffer was full, or no JSON form)."""
        raise NotImplementedError(f"{type(self).__name__} does not take encoded events")

    def catch_up(self) -> None:  # noqa: B027 - optional hook
        """Do the work `emit` put off; the emitter's thread calls it between the slices of
        events it encodes (so at least once per batch)."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect or open files; called once before the first `emit`."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Flush what is buffered (within a bounded time) and release resources."""


PredictionSink.registry = Registry("prediction sink")
for _name, _target in (
    ("files", "forestflow.predictionlog.files:FileSink"),
    ("kafka", "forestflow.predictionlog.kafka:KafkaSink"),
):
    PredictionSink.registry.register_lazy(_name, _target)


@PredictionSink.registry.register("memory")
class MemorySink(PredictionSink):
    """Keeps the most recent events in memory (for tests and embedding)."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.events: collections.deque[PredictionEvent] = collections.deque(maxlen=capacity)
        self._emitted = 0
        self._dropped = 0

    def emit(self, event: PredictionEvent) -> None:
        """Keep `event`, evicting the oldest one when full (evictions count as drops)."""
        if len(self.events) == self.events.maxlen:
            self._dropped += 1
        self.events.append(event)
        self._emitted += 1

    def stats(self) -> SinkStats:
        """Every event is written; evictions are drops."""
        return SinkStats(emitted=self._emitted, written=self._emitted, dropped=self._dropped)
