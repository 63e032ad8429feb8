"""`PredictionEmitter`: the one way prediction events leave the serving path (SPEC §5).

The serving path calls `emit(event)` (or `emit_many(events)`: the outcomes of one shadow
call) and moves on; the response never waits for logging.
The emitter hands each event to every sink it was built with:

- a sink that `takes_encoded` (files, Kafka) gets the event from the emitter's own thread,
  encoded once for all of them (`encode_event`: the record built and turned into JSON
  bytes once), in batches through `write_encoded`, so the JSON Lines line and the Kafka
  message of one event are the same bytes;
- any other sink (the feedback joiner, a `MemorySink`, a plugin sink written for `emit`)
  gets `emit(event)` (`emit_many(events)`) at once, on the serving path, which it promises
  to do in O(1) per event; after each batch the emitter's thread calls its `catch_up`,
  where it does the rest.

What takes time per row is done on the emitter's thread, never on the serving path: the
record with the key of each row of the request (`rowKeys`, built once per event by its
`RowKeys` and shared by the record and the feedback joiner's entries per key).

The CPU time the thread spends on shadow requests' events is counted
(`shadow_cpu_seconds`): the scheduler's shadow budget charges it to shadow work.

`emit` holds a lock for O(1) (an append to a bounded buffer; `emit_many` holds it once for
all its events) and signals the thread only when it is parked, not once per event. A full
buffer (the thread cannot keep up), a closed emitter or an event without a JSON form drops
the event: it is counted in the emitter's `stats()` and, through `count_dropped`, in the
counters of every sink that takes encoded events, so each sink's `emitted` still counts
every event meant for it.

`close` lets the thread drain the buffer for at most `timeout_s`, counts what is left as
dropped, then closes the sinks (each flushes within its own bound). Events emitted before
`start` wait in the buffer; an emitter that was never started drops its buffer on `close`.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import ClassVar

from forestflow.predictionlog.events import EncodedEvent, PredictionEvent, encode_event
from forestflow.predictionlog.sinks import PredictionSink, SinkStats

log = logging.getLogger(__name__)

DEFAULT_BUFFER_SIZE = 10_000
DEFAULT_CLOSE_TIMEOUT_S = 5.0
DELIVERY_SLICE = 256
"""Events encoded and handed to the sinks at a time, between two `catch_up` calls."""


class PredictionEmitter(PredictionSink):
    """Hands every event to each sink: encoded once, off the serving path, where it can be.

    Counters (`stats()`): `emitted` every event given to `emit`; `written` those passed on
    to the sinks (encoded and handed to every sink that takes encoded events; with no such
    sink, every event at once); `dropped` those lost here (buffer full, closed, no JSON
    form). `emitted − written − dropped` is what the emitter holds now.
    """

    wire_name: ClassVar[str] = "emitter"

    def __init__(
        self, sinks: Sequence[PredictionSink], *, buffer_size: int = DEFAULT_BUFFER_SIZE
    ) -> None:
        if buffer_size < 1:
            raise ValueError("buffer_size must be positive")
        self.sinks = list(sinks)
        self.buffer_size = buffer_size
        self._encoded = tuple(sink for sink in self.sinks if sink.takes_encoded)
        self._direct = tuple(sink for sink in self.sinks if not sink.takes_encoded)
        # guards the buffer, the counters and the flags; never held while encoding or
        # while a sink works, so `emit` waits at most for a deque swap
        mutex = threading.Lock()
        self._lock = threading.Condition(mutex)  # the thread waits on it for work
        self._delivered = threading.Condition(mutex)  # `flush` waits on it
        self._buffer: collections.deque[PredictionEvent] = collections.deque()
        self._due = False  # something was emitted since the thread last took a batch
        self._parked = False  # the thread waits for `_due`
        self._overflowing = False  # dropping since the buffer was last empty
        self._emitted = self._written = self._dropped = 0
        # events 1..n emitted are in the batch being delivered (taken) or were (done)
        self._taken_through = self._done_through = 0
        self._closed = self._abandoned = False
        self._thread: threading.Thread | None = None
        self._warned_encoding = False
        self._shadow_cpu = 0.0

    def emit(self, event: PredictionEvent) -> None:
        """Give `event` to the `emit` sinks and buffer it for the others; never blocks."""
        for sink in self._direct:
            try:
                sink.emit(event)
            except Exception:  # a sink never raises into the serving path; a plugin might
                log.exception("prediction sink %s raised from emit", type(sink).__name__)
        self._buffer_all((event,))

    def emit_many(self, events: Sequence[PredictionEvent]) -> None:
        """`emit` each of `events`, taking the lock once."""
        for sink in self._direct:
            try:
                sink.emit_many(events)
            except Exception:  # a sink never raises into the serving path; a plugin might
                log.exception("prediction sink %s raised from emit", type(sink).__name__)
        self._buffer_all(events)

    def _buffer_all(self, events: Sequence[PredictionEvent]) -> None:
        count, dropped = len(events), 0
        with self._lock:
            self._emitted += count
            room = 0 if self._closed else self.buffer_size - len(self._buffer)
            if not self._encoded:
                self._written += count  # nothing to encode for: passed on already
            elif count <= room:
                self._buffer.extend(events)
            else:  # full: what does not fit is dropped
                room = max(room, 0)
                self._buffer.extend(events[:room])
                dropped = count - room
                self._dropped += dropped
            self._due = True
            if self._parked:
                self._parked = False
                self._lock.notify()
            warn = dropped and not self._overflowing and not self._closed
            self._overflowing = self._overflowing or bool(dropped)
        if dropped:
            self._tell_dropped(dropped)
        if warn:
            log.warning(
                "prediction events are emitted faster than they can be encoded: the "
                "emitter's buffer of %d events is full, new events are dropped and counted",
                self.buffer_size,
            )

    def stats(self) -> SinkStats:
        """The emitter's own counters (see the class docstring); each sink has its own."""
        with self._lock:
            return SinkStats(emitted=self._emitted, written=self._written, dropped=self._dropped)

    async def flush(self, timeout_s: float = DEFAULT_CLOSE_TIMEOUT_S) -> bool:
        """Wait until every event emitted before the call was handed to the sinks (and
        their `catch_up` ran); False if that took longer than `timeout_s`."""
        with self._lock:
            target = self._emitted
        return await asyncio.to_thread(self._wait_delivered, target, timeout_s)

    def _wait_delivered(self, target: int, timeout_s: float) -> bool:
        with self._lock:
            return self._delivered.wait_for(lambda: self._done_through >= target, timeout_s)

    async def start(self) -> None:
        """Start the sinks, then the emitter's thread."""
        for sink in self.sinks:
            await sink.start()
        with self._lock:
            if self._thread is not None or self._closed:
                return
            self._thread = threading.Thread(
                target=self._run, name="forestflow-prediction-emitter", daemon=True
            )
            self._thread.start()

    async def close(self, timeout_s: float = DEFAULT_CLOSE_TIMEOUT_S) -> None:
        """Deliver what is buffered within `timeout_s` (the rest is dropped), then close
        the sinks. Idempotent; events emitted afterwards are dropped and counted."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._lock.notify_all()
            thread = self._thread
        if thread is not None:
            await asyncio.to_thread(thread.join, timeout_s)
        with self._lock:
            self._abandoned = True  # the thread finishes at most the batch it holds
            left = len(self._buffer)
            self._buffer.clear()
            self._dropped += left
        if left:
            self._tell_dropped(left)
        if thread is not None and thread.is_alive():
            log.warning(
                "prediction emitter still busy after %.1f s; %d buffered events were dropped",
                timeout_s,
                left,
            )
        for sink in self.sinks:
            try:
                await sink.close()
            except Exception:  # one failing sink must not keep the others open
                log.exception("closing prediction sink %s failed", type(sink).__name__)

    # --- the emitter's thread -------------------------------------------------------

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                self._deliver(batch)
            except Exception:  # unexpected (a bug): the thread must outlive one bad batch
                log.exception("prediction emitter: a batch of %d events was lost", len(batch))
                with self._lock:
                    self._dropped += len(batch)
                self._tell_dropped(len(batch))
            with self._lock:
                self._done_through = self._taken_through
                self._delivered.notify_all()

    def _next_batch(self) -> collections.deque[PredictionEvent] | None:
        """Wait until something was emitted and take the buffer; None once closed and
        drained (or abandoned)."""
        with self._lock:
            while not self._due and not self._closed:
                self._overflowing = False
                self._parked = True
                self._lock.wait()
            if self._abandoned or not self._due:
                return None
            self._due = False
            self._taken_through = self._emitted
            batch, self._buffer = self._buffer, collections.deque()
            return batch

    @property
    def shadow_cpu_seconds(self) -> float:
        """CPU time this thread spent on shadow requests' events so far (each slice's time
        shared among its events), for the shadow budget."""
        return self._shadow_cpu

    def _deliver(self, batch: collections.deque[PredictionEvent]) -> None:
        # in slices, each after a `catch_up`: what feedback joins need is never further
        # behind than one slice, however long the whole batch takes to encode
        events = list(batch)
        for start in range(0, max(len(events), 1), DELIVERY_SLICE):
            started = time.thread_time()
            for sink in self._direct:
                _guarded(sink.catch_up, sink)
            part = events[start : start + DELIVERY_SLICE]
            if not part:
                return
            records = self._encode(part)
            for sink in self._encoded:
                _guarded(functools.partial(sink.write_encoded, records), sink)
            with self._lock:
                self._written += len(records)
            shadows = sum(1 for event in part if not event.served_request)
            if shadows:  # one writer: this thread; readers see the old or the new total
                self._shadow_cpu += (time.thread_time() - started) * shadows / len(part)

    def _encode(self, batch: list[PredictionEvent]) -> list[EncodedEvent]:
        records: list[EncodedEvent] = []
        for event in batch:
            try:
                records.append(encode_event(event))
            except Exception as error:  # no JSON form: drop just this event
                # a flavor returning odd values would fail on every request: warn once
                level = logging.DEBUG if self._warned_encoding else logging.WARNING
                self._warned_encoding = True
                log.log(
                    level, "prediction event of %s dropped: cannot encode: %s", event.fqrv, error
                )
        failed = len(batch) - len(records)
        if failed:
            with self._lock:
                self._dropped += failed
            self._tell_dropped(failed)
        return records

    def _tell_dropped(self, count: int) -> None:
        for sink in self._encoded:
            _guarded(functools.partial(sink.count_dropped, count), sink)


def _guarded(call: Callable[[], None], sink: PredictionSink) -> None:
    """Run one sink's hook; a sink that raises (a bug) is logged, never the emitter's end."""
    try:
        call()
    except Exception:
        log.exception("prediction sink %s failed", type(sink).__name__)
