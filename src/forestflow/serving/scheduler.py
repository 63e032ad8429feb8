"""Work scheduling: served requests before shadow requests, on a bounded thread pool.

Served work goes straight to the pool. Shadow work waits in a bounded queue and is
handed to the pool only when a worker is idle and fewer than `max_shadow_workers`
shadow jobs run, so at least one worker is always free for served traffic (when the
pool has more than one). When the shadow queue is full, new shadow work is dropped and
counted; served work is never dropped.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from forestflow.control.runner import ShadowDone

log = logging.getLogger(__name__)

T = TypeVar("T")


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

    def __init__(self, workers: int, shadow_queue_size: int, max_shadow_workers: int) -> None:
        self.workers = max(1, workers)
        self.max_shadow_workers = max(1, min(max_shadow_workers, self.workers))
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="forestflow-model")
        self._shadow: collections.deque[tuple[Callable[[], Any], ShadowDone]] = collections.deque(
            maxlen=None
        )
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

    def offer_shadow(self, job: Callable[[], Any], done: ShadowDone) -> bool:
        """Queue a shadow job; False (and a counted drop) when the shadow queue is full.

        `done` is called on the event loop with the job's finished future.
        """
        if len(self._shadow) >= self._shadow_queue_size:
            self.stats.shadow_dropped += 1
            return False
        self._shadow.append((job, done))
        self.stats.shadow_queued = len(self._shadow)
        self._shadow_idle.clear()
        self._dispatch_shadow(asyncio.get_running_loop())
        return True

    def _dispatch_shadow(self, loop: asyncio.AbstractEventLoop) -> None:
        while self._shadow and self._has_room_for_shadow():
            job, done = self._shadow.popleft()
            self.stats.shadow_queued = len(self._shadow)
            self.stats.shadow_running += 1
            future = loop.run_in_executor(self._pool, job)
            future.add_done_callback(functools.partial(self._shadow_finished, loop, done=done))

    def _has_room_for_shadow(self) -> bool:
        busy = self.stats.served_running + self.stats.shadow_running
        return busy < self.workers and self.stats.shadow_running < self.max_shadow_workers

    def _shadow_finished(
        self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], *, done: ShadowDone
    ) -> None:
        self.stats.shadow_running -= 1
        self.stats.shadow_completed += 1
        try:
            done(future)
        except Exception:  # a broken callback must not stop the shadow pipeline
            log.exception("shadow completion callback failed")
        self._dispatch_shadow(loop)
        if not self._shadow and not self.stats.shadow_running:
            self._shadow_idle.set()

    async def shadow_idle(self) -> None:
        """Wait until no shadow work is queued or running."""
        await self._shadow_idle.wait()

    async def drain(self) -> None:
        """Drop queued shadow work and wait for running shadow jobs (used at shutdown)."""
        self._shadow.clear()
        self.stats.shadow_queued = 0
        if not self.stats.shadow_running:
            self._shadow_idle.set()
        await self._shadow_idle.wait()

    def close(self) -> None:
        """Stop the worker threads once their current jobs finish."""
        self._shadow.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)
