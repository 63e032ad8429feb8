"""Opportunistic micro-batching of served requests, per servable.

While a servable's model calls are running (at most `max_in_flight` at once), further
requests to it wait; when a call finishes, the next call takes every waiting request (up
to `max_batch_size`) at once. An idle server adds no wait; a busy one pays the per-call
cost once per batch instead of once per request.

Batching never changes a result: requests are conformed one by one, only requests whose
conformed columns have the same names and types share a call, the model sees their rows
stacked and each request gets its own rows back. If a shared call fails, its requests are
scored again one by one, so one bad request fails alone.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import numpy as np

from forestflow.domain.frame import Block, Frame, Layout

Outcome = Frame | BaseException
RunBatch = Callable[[list[Frame]], Awaitable[list[Outcome]]]


def stack(frames: Sequence[Frame]) -> Frame:
    """One frame holding the rows of `frames` in order (same layout: see `shape_key`)."""
    first = frames[0]
    if first.in_blocks:  # then all are: they share one layout
        blocks = tuple(
            Block(block.names, np.concatenate([frame.blocks[b].matrix for frame in frames]))
            for b, block in enumerate(first.blocks)
        )
        return Frame.of_blocks(blocks)
    return Frame({name: np.concatenate([frame[name] for frame in frames]) for name in first.names})


def split(frame: Frame, sizes: Sequence[int]) -> list[Frame]:
    """`frame`'s rows cut into consecutive frames of `sizes` rows."""
    bounds = itertools.pairwise(itertools.accumulate(sizes, initial=0))
    columns = list(frame.columns.items())
    if len(columns) == 1:  # most models: one output column
        ((name, column),) = columns
        return [Frame({name: column[start:end]}) for start, end in bounds]
    return [Frame({name: column[start:end] for name, column in columns}) for start, end in bounds]


def shape_key(frame: Frame) -> Layout:
    """What must be equal for two conformed frames to share a model call."""
    return frame.layout


@dataclass(slots=True)
class BatchStats:
    """How a servable's served requests were grouped into model calls."""

    calls: int = 0
    requests: int = 0
    largest: int = 0

    def count(self, size: int) -> None:
        """Count one model call of `size` requests."""
        self.calls += 1
        self.requests += size
        self.largest = max(self.largest, size)


class ServedBatcher:
    """The served requests of one servable: run at once when a call slot is free, else
    batched into the next call."""

    def __init__(self, run: RunBatch, *, max_in_flight: int, max_batch_size: int) -> None:
        self._run = run
        self._max_in_flight = max(1, max_in_flight)
        self._max_batch_size = max(1, max_batch_size)
        self._in_flight = 0
        self.stats = BatchStats()
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiting: collections.deque[tuple[Frame, asyncio.Future[Frame]]] = collections.deque()

    @property
    def waiting(self) -> int:
        """Requests waiting now for a model call (for `/metrics`)."""
        return len(self._waiting)

    async def submit(self, frame: Frame) -> Frame:
        """The prediction for `frame`, alone or in a batch."""
        if self._in_flight < self._max_in_flight and not self._waiting:
            self._in_flight += 1
            self.stats.count(1)
            try:
                (outcome,) = await self._run([frame])
            finally:
                self._in_flight -= 1
                self._start_waiting()
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome
        future: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._waiting.append((frame, future))
        return await future

    def _start_waiting(self) -> None:
        while self._waiting and self._in_flight < self._max_in_flight:
            batch: list[tuple[Frame, asyncio.Future[Frame]]] = []
            while self._waiting and len(batch) < self._max_batch_size:
                frame, future = self._waiting.popleft()
                if not future.cancelled():  # its client went away
                    batch.append((frame, future))
            if batch:
                self._in_flight += 1
                self.stats.count(len(batch))
                task = asyncio.create_task(self._run_waiting(batch))
                self._tasks.add(task)  # held until done: the loop keeps only weak references
                task.add_done_callback(self._tasks.discard)

    async def _run_waiting(self, batch: list[tuple[Frame, asyncio.Future[Frame]]]) -> None:
        try:
            outcomes = await self._run([frame for frame, _ in batch])
        except BaseException as error:  # the scheduler itself failed (shutdown)
            outcomes = [error] * len(batch)
        finally:
            self._in_flight -= 1
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.cancelled():
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
        self._start_waiting()
