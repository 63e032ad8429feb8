"""Work scheduling: served requests before shadow requests, on a bounded thread pool.

Served work goes straight to the pool. Shadow work waits in a bounded queue and is
handed to the pool only when a worker is idle and fewer than `max_shadow_workers`
shadow jobs run, so at least one worker is always free for served traffic (when the
pool has more than one). Served work is never dropped.

Shadow work offered as a `ShadowBatch` item (one servable's request) is batched: a call
takes the requests queued for the same servable, up to `max_shadow_batch`, and runs them
in one call. While served requests are in progress (the runner announces them:
`served_started`, `served_finished`), such a call waits until `max_shadow_batch` requests
are queued or the oldest has waited `shadow_batch_wait_s` (by `clock`, a monotonic time;
a timer comes back then): a shadow call costs about as much for one request as for
hundreds (scikit-learn's checks, thread hand-offs), and nobody waits for a shadow's
answer. With no served request in progress, a call starts as soon as a worker is free, so
an idle server scores shadows at once. Servables take turns.

A `ShadowBudget` decides at the door which shadow requests are taken: shadow work may use
`shadow_time_share` of the CPU time, plus whatever CPU the process leaves idle. What a
shadow request costs is measured where it is spent: the CPU time of its model call (on
the worker), of its completion on the event loop (counting and logging it), and of its
prediction event on the emitter's thread (a meter). A request offered while the budget is
spent, or while the queue is full, is dropped at once and counted: a drop costs almost
nothing, whereas a request held back in the queue keeps its objects alive and is scored
anyway. With one interpreter lock, shadow work on its own threads would otherwise take
about as much of the CPU as all served work together.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from forestflow.control.runner import ShadowDone

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(slots=True)  # one per shadow request: not frozen, as `PredictionEvent`
class ShadowBatch:
    """A shadow request that may share a call with others of the same `key`:
    `run(items)` scores them together and returns one outcome (a result or an exception)
    per item, in order. After a call, once each job's `done` has had its outcome,
    `finished(n)` of the call's first job is told how many jobs the call held."""

    key: Hashable
    item: Any
    run: Callable[[list[Any]], list[Any]]
    finished: Callable[[int], None] | None = None


_Queued = tuple[Callable[[], Any] | ShadowBatch, ShadowDone, float]
"""A shadow job, what gets its outcome, and when it was queued (`clock`)."""


class ShadowBudget:
    """CPU time shadow work may take: `share` of the time passing, plus the time the
    process leaves idle, with a reserve of at most `reserve_s` (a token bucket).

    A shadow request may be taken while the reserve is positive; what it costs is paid
    after (`spend`, and the `meter`s: cumulative CPU seconds spent on shadow work
    elsewhere, read when the reserve is refilled), so the reserve may go negative: a debt
    paid back in full before the next request is taken (a 1 s shadow call at a share of
    0.1 on a busy process holds the next one back 10 s). Idle time is the wall time the
    process did not use the CPU (`cpu_clock`: its CPU time), counted for one core: a
    process that runs Python on more than one core at once has no idle time here. The
    reserve is refilled at most once per `REFILL_S`.
    """

    REFILL_S = 0.001

    def __init__(
        self,
        share: float,
        *,
        reserve_s: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.process_time,
    ) -> None:
        self.share = share
        self.reserve_s = reserve_s
        self._clock = clock
        self._cpu_clock = cpu_clock
        self._reserve = reserve_s
        self._at = clock()
        self._cpu_at = cpu_clock()
        self._meters: list[tuple[Callable[[], float], list[float]]] = []

    def meter(self, spent: Callable[[], float]) -> None:
        """Also charge what `spent()` (cumulative CPU seconds of shadow work) grows by."""
        self._meters.append((spent, [spent()]))

    def allows(self) -> bool:
        """Whether a shadow request may be taken now."""
        return self.share >= 1 or self._refilled() > 0

    def spend(self, seconds: float) -> None:
        """Pay for shadow work that took `seconds` of CPU."""
        self._reserve -= seconds

    def _refilled(self) -> float:
        now = self._clock()
        elapsed = now - self._at
        if elapsed < self.REFILL_S:
            return self._reserve
        cpu = self._cpu_clock()
        idle = max(0.0, elapsed - (cpu - self._cpu_at))
        spent = 0.0
        for read, last in self._meters:
            total = read()
            spent += total - last[0]
            last[0] = total
        self._at, self._cpu_at = now, cpu
        reserve = self._reserve + elapsed * self.share + idle - spent
        self._reserve = min(self.reserve_s, reserve)
        return self._reserve


@dataclass(slots=True)
class SchedulerStats:
    """Counters of the scheduler, for `stats` and `/metrics`."""

    served_running: int = 0
    shadow_running: int = 0
    shadow_queued: int = 0
    shadow_dropped: int = 0
    shadow_completed: int = 0


class WorkScheduler:
    """Runs blocking model calls on worker threads, served work first."""

    def __init__(
        self,
        workers: int,
        shadow_queue_size: int,
        max_shadow_workers: int,
        *,
        max_shadow_batch: int = 1,
        shadow_batch_wait_s: float = 0.0,
        shadow_time_share: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.process_time,
    ) -> None:
        self.workers = max(1, workers)
        self.max_shadow_workers = max(1, min(max_shadow_workers, self.workers))
        self._max_shadow_batch = max(1, max_shadow_batch)
        self._batch_wait_s = max(0.0, shadow_batch_wait_s)
        self._clock = clock
        self._timer: asyncio.TimerHandle | None = None
        self._served_requests = 0
        self.budget = ShadowBudget(shadow_time_share, clock=clock, cpu_clock=cpu_clock)
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="forestflow-model")
        # one queue per key (a servable, or a job of its own), and the keys in turn order
        self._queues: dict[Hashable, collections.deque[_Queued]] = {}
        self._turns: collections.deque[Hashable] = collections.deque()
        self._shadow_queue_size = shadow_queue_size
        self._shadow_idle = asyncio.Event()
        self._shadow_idle.set()
        self.stats = SchedulerStats()

    async def run(self, job: Callable[[], T]) -> T:
        """Run a served job on a worker thread and return its result."""
        loop = asyncio.get_running_loop()
        self.stats.served_running += 1
        try:
            return await loop.run_in_executor(self._pool, job)
        finally:
            self.stats.served_running -= 1
            self._dispatch_shadow(loop)

    def served_started(self) -> None:
        """A served request is in progress (waiting for a model call or in one): while any
        is, a shadow call waits for its batch to fill (see the module doc)."""
        self._served_requests += 1

    def served_finished(self) -> None:
        """A served request announced by `served_started` is done."""
        self._served_requests -= 1
        if not self._served_requests and self._turns:
            self._dispatch_shadow(asyncio.get_running_loop())

    def admits_shadow(self) -> bool:
        """Whether a shadow job offered now would be queued; False counts it dropped (the
        shadow queue is full, or the shadow budget is spent). A caller asks before it
        builds a job, so that a dropped request costs next to nothing."""
        if self.stats.shadow_queued >= self._shadow_queue_size or not self.budget.allows():
            self.stats.shadow_dropped += 1
            return False
        return True

    def offer_shadow(self, job: Callable[[], Any] | ShadowBatch, done: ShadowDone) -> bool:
        """Queue a shadow job; False (and a counted drop) when `admits_shadow` says no.

        `done` is called on the event loop with the job's outcome: its result, or the
        exception it raised (`CancelledError` when it was cancelled at shutdown).
        """
        if not self.admits_shadow():
            return False
        self.queue_shadow(job, done)
        return True

    def queue_shadow(self, job: Callable[[], Any] | ShadowBatch, done: ShadowDone) -> None:
        """Queue a shadow job that `admits_shadow` just admitted (see `offer_shadow`)."""
        key = job.key if isinstance(job, ShadowBatch) else object()
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = collections.deque()
            self._turns.append(key)
        now = self._clock()
        queue.append((job, done, now))
        self.stats.shadow_queued += 1
        self._shadow_idle.clear()
        # while a timer is armed, a call that is not due yet waits for it (or a job's end)
        if self._timer is None or self._due(queue, now):
            self._dispatch_shadow(asyncio.get_running_loop())

    def _dispatch_shadow(self, loop: asyncio.AbstractEventLoop) -> None:
        while self._turns and self._has_room_for_shadow():
            taken = self._take_turn(loop)
            if taken is None:
                return
            self.stats.shadow_running += 1
            first = taken[0][0]
            if isinstance(first, ShadowBatch):
                items = [job.item for job, _, _ in taken]  # type: ignore[union-attr]
                future = loop.run_in_executor(self._pool, _on_cpu_clock, first.run, items)
            else:
                future = loop.run_in_executor(self._pool, _on_cpu_clock, first)
            dones = [done for _, done, _ in taken]
            batch = first if isinstance(first, ShadowBatch) else None
            callback = functools.partial(self._shadow_finished, loop, dones=dones, batch=batch)
            future.add_done_callback(callback)

    def _take_turn(self, loop: asyncio.AbstractEventLoop) -> list[_Queued] | None:
        """The first job of the next key whose call is due, with the batchable jobs queued
        behind it; None when no call is due yet (a timer then comes back when one is)."""
        now = self._clock()
        for _ in range(len(self._turns)):
            if self._due(self._queues[self._turns[0]], now):
                break
            self._turns.rotate(-1)
        else:
            self._wake_when_due(loop, now)
            return None
        key = self._turns.popleft()
        queue = self._queues[key]
        taken = [queue.popleft()]
        if isinstance(taken[0][0], ShadowBatch):
            while queue and len(taken) < self._max_shadow_batch:
                taken.append(queue.popleft())
        if queue:
            self._turns.append(key)
        else:
            del self._queues[key]
        self.stats.shadow_queued -= len(taken)
        return taken

    def _due(self, queue: collections.deque[_Queued], now: float) -> bool:
        """Whether a call for `queue` starts now: no served request is in progress (an idle
        server scores shadows at once), or the queue is full, or its oldest job waited long
        enough (a job that is not a `ShadowBatch` never waits)."""
        job, _, queued_at = queue[0]
        return (
            not self._served_requests
            or not isinstance(job, ShadowBatch)
            or len(queue) >= self._max_shadow_batch
            or now - queued_at >= self._batch_wait_s
        )

    def _wake_when_due(self, loop: asyncio.AbstractEventLoop, now: float) -> None:
        """Come back to dispatch when the oldest queued job has waited long enough."""
        if self._timer is not None:
            return  # armed already, for no later than the oldest queued job is due
        oldest = min(self._queues[key][0][2] for key in self._turns)
        delay = max(0.0, oldest + self._batch_wait_s - now)
        self._timer = loop.call_later(delay, self._on_timer, loop)

    def _on_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        self._dispatch_shadow(loop)

    def _has_room_for_shadow(self) -> bool:
        busy = self.stats.served_running + self.stats.shadow_running
        return busy < self.workers and self.stats.shadow_running < self.max_shadow_workers

    def _shadow_finished(
        self,
        loop: asyncio.AbstractEventLoop,
        timed: asyncio.Future[tuple[Any, float]],
        *,
        dones: list[ShadowDone],
        batch: ShadowBatch | None,
    ) -> None:
        started = time.thread_time()
        self.stats.shadow_running -= 1
        self.stats.shadow_completed += len(dones)
        outcomes, call_cpu = _outcomes(timed, len(dones), batched=batch is not None)
        for done, outcome in zip(dones, outcomes, strict=True):
            try:
                done(outcome)
            except Exception:  # a broken callback must not stop the shadow pipeline
                log.exception("shadow completion callback failed")
        if batch is not None and batch.finished is not None:
            try:
                batch.finished(len(dones))
            except Exception:
                log.exception("shadow completion callback failed")
        self._dispatch_shadow(loop)
        if not self._turns and not self.stats.shadow_running:
            self._shadow_idle.set()
        self.budget.spend(call_cpu + time.thread_time() - started)

    @property
    def shadow_queue_size(self) -> int:
        """Shadow jobs the queue holds at most (all keys together)."""
        return self._shadow_queue_size

    def queued(self, key: Hashable) -> int:
        """Shadow jobs of `key` waiting now for a worker."""
        queue = self._queues.get(key)
        return len(queue) if queue is not None else 0

    async def shadow_idle(self) -> None:
        """Wait until no shadow work is queued or running."""
        await self._shadow_idle.wait()

    async def drain(self) -> None:
        """Drop queued shadow work and wait for running shadow jobs (used at shutdown)."""
        self._clear_shadow()
        if not self.stats.shadow_running:
            self._shadow_idle.set()
        await self._shadow_idle.wait()

    def close(self) -> None:
        """Stop the worker threads once their current jobs finish."""
        self._clear_shadow()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _clear_shadow(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._queues.clear()
        self._turns.clear()
        self.stats.shadow_queued = 0


def _on_cpu_clock(call: Callable[..., T], *args: Any) -> tuple[T, float]:
    """`call(*args)` and the CPU time it took on this (worker) thread."""
    started = time.thread_time()
    result = call(*args)
    return result, time.thread_time() - started


def _outcomes(
    timed: asyncio.Future[tuple[Any, float]], n: int, *, batched: bool
) -> tuple[list[Any], float]:
    """The outcome of each of the `n` jobs of one call — its result, or the exception it
    raised — and the CPU time the call took (0 when it failed or was cancelled). A batched
    call's result is one outcome per job; its own failure is every job's."""
    if timed.cancelled():
        return [asyncio.CancelledError()] * n, 0.0
    error = timed.exception()
    if error is not None:
        return [error] * n, 0.0
    result, cpu = timed.result()
    return (list(result) if batched else [result]), cpu
