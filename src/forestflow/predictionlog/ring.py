"""`RingSink`: the most recent prediction events, held in memory for readers that follow
them as they happen (`GET /prediction-log/events`, `forestflow tail`).

The ring is one more sink of the emitter, and one that `takes_encoded`: it gets each event
from the emitter's thread, as the JSON record the file and Kafka sinks write, and keeps a
reference to those bytes. Nothing is done on the serving path and nothing is encoded for
it alone unless no other sink takes encoded events.

Each event gets a sequence number (1, 2, … since the server started). The ring is bounded,
by count and by bytes: the oldest events are evicted, whether or not every reader has seen
them. A reader never holds the writer back; one that falls behind learns how many events
it missed (`Slice.missed`), counted from the sequence numbers, and goes on from the oldest
event still held. Events the emitter dropped before they reached the ring (its buffer was
full) leave the same gap in the numbering, so they count as missed too.

Readers wait on the event loop (`wait`); the emitter's thread wakes them with
`call_soon_threadsafe`, and only when someone waits. `close` wakes everyone for good.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from forestflow.domain.fqrv import FQRV
from forestflow.predictionlog.events import EncodedEvent, PredictionEvent, encode_event
from forestflow.predictionlog.sinks import PredictionSink, SinkStats

DEFAULT_CAPACITY = 1000
"""Events held at most."""
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
"""Bytes of encoded records held at most (the newest event is kept whatever its size)."""


@dataclass(slots=True)  # one per event: not frozen, as `events.PredictionEvent`
class HeldEvent:
    """One event in the ring: its sequence number, its servable and its JSON record."""

    seq: int
    fqrv: FQRV
    record: bytes
    """`event_record(event)` as compact UTF-8 JSON (the line the file sink writes)."""


@dataclass(frozen=True, slots=True)
class Slice:
    """What a reader gets from one `read`: the events after its cursor, in order."""

    events: list[HeldEvent]
    missed: int
    """Events after the cursor no longer held (evicted or dropped) — matching or not."""
    cursor: int
    """The sequence number to read after next time."""


class RingSink(PredictionSink):
    """Holds the latest events for readers; never blocks the emitter (see the module doc)."""

    wire_name: ClassVar[str] = "events"
    takes_encoded: ClassVar[bool] = True

    def __init__(
        self, capacity: int = DEFAULT_CAPACITY, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        if capacity < 1 or max_bytes < 1:
            raise ValueError("capacity and max_bytes must be positive")
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._held: collections.deque[HeldEvent] = collections.deque()
        self._bytes = 0
        self._head = 0  # the sequence number of the newest event (held or dropped)
        self._received = self._dropped = 0
        self._waiting: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._closed = False

    @property
    def head(self) -> int:
        """The sequence number of the newest event: reading after it waits for the next."""
        with self._lock:
            return self._head

    @property
    def closed(self) -> bool:
        """Whether readers were stopped for good (the server is shutting down)."""
        with self._lock:
            return self._closed

    def emit(self, event: PredictionEvent) -> None:
        """Encode and keep `event` (the emitter calls `write_encoded` instead)."""
        self.write_encoded([encode_event(event)])

    def write_encoded(self, records: Sequence[EncodedEvent]) -> None:
        """Number and keep `records`, evicting the oldest beyond the bounds; wake readers."""
        if not records:
            return
        with self._lock:
            for record in records:
                self._head += 1
                self._held.append(HeldEvent(self._head, record.fqrv, record.value))
                self._bytes += len(record.value)
            self._received += len(records)
            while len(self._held) > self.capacity or (
                self._bytes > self.max_bytes and len(self._held) > 1
            ):
                self._bytes -= len(self._held.popleft().record)
            waiting, self._waiting = self._waiting, []
        _wake(waiting)

    def count_dropped(self, count: int) -> None:
        """Events dropped before the ring: a gap in the numbering that readers see as missed."""
        with self._lock:
            self._head += count
            self._dropped += count
            waiting, self._waiting = self._waiting, []
        _wake(waiting)

    def stats(self) -> SinkStats:
        """Events received and dropped before the ring (evictions are not drops)."""
        with self._lock:
            received, dropped = self._received, self._dropped
        return SinkStats(emitted=received + dropped, written=received, dropped=dropped)

    def read(self, after: int, limit: int = 256) -> Slice:
        """At most `limit` held events after sequence number `after`, oldest first.

        An `after` beyond the newest event is from before a restart (numbering starts again
        with the server): such a reader starts from the oldest event held.
        """
        with self._lock:
            if after > self._head:
                after = 0
            events: list[HeldEvent] = []
            missed, cursor = 0, after
            start = bisect.bisect_right(self._held, after, key=_seq)
            for index in range(start, min(len(self._held), start + limit)):
                held = self._held[index]
                missed += held.seq - cursor - 1
                events.append(held)
                cursor = held.seq
            if len(events) < limit:  # read to the end: what is past the last held was dropped
                missed += self._head - cursor
                cursor = self._head
        return Slice(events, missed, cursor)

    def last(self, count: int, match: Callable[[FQRV], bool]) -> int:
        """The cursor from which a read yields the last `count` held events that `match`."""
        with self._lock:
            cursor = self._head
            for held in reversed(self._held):
                if count <= 0:
                    break
                if match(held.fqrv):
                    count -= 1
                    cursor = held.seq - 1
        return cursor

    async def wait(self, after: int, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for an event after `after`. False: the ring is closed and
        holds nothing after `after` (the reader is done); True: read again."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._head != after:
                return True  # something to read, closed or not
            if self._closed:
                return False
            self._waiting.append((loop, future))
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(future, timeout_s)
        finally:
            with self._lock:
                if (loop, future) in self._waiting:
                    self._waiting.remove((loop, future))
        with self._lock:
            return self._head != after or not self._closed

    def stop_readers(self) -> None:
        """Wake every reader for good: the streams end (events are still kept)."""
        with self._lock:
            self._closed = True
            waiting, self._waiting = self._waiting, []
        _wake(waiting)

    async def close(self) -> None:
        """`stop_readers`, as the emitter closes its sinks."""
        self.stop_readers()


def _wake(waiting: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]) -> None:
    """Resolve each waiter's future on its own loop (from any thread)."""
    for loop, future in waiting:
        with contextlib.suppress(RuntimeError):  # its loop has closed: nobody waits any more
            loop.call_soon_threadsafe(_resolve, future)


def _seq(held: HeldEvent) -> int:
    return held.seq


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
