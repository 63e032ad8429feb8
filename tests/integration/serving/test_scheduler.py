"""The served-before-shadow scheduler on real threads (no sleeps: jobs block on events)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from forestflow.serving.scheduler import ShadowBatch, WorkScheduler


@pytest.fixture
def scheduler_factory() -> Iterator[Callable[..., WorkScheduler]]:
    made: list[WorkScheduler] = []

    def make(
        workers: int = 2, queue: int = 10, shadow_workers: int = 1, **options: Any
    ) -> WorkScheduler:
        scheduler = WorkScheduler(workers, queue, shadow_workers, **options)
        made.append(scheduler)
        return scheduler

    yield make
    for scheduler in made:
        scheduler.close()


class _Gate:
    """Jobs that block until released, recording how many run at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.running = 0
        self.peak = 0
        self._lock = threading.Lock()
        self.started = threading.Semaphore(0)

    def job(self) -> str:
        with self._lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        self.started.release()
        self.release.wait(timeout=30)
        with self._lock:
            self.running -= 1
        return "shadow"


def _ignore(_outcome: Any) -> None:
    pass


async def _takes_and_completes_one(scheduler: WorkScheduler) -> None:
    """A shadow request offered now is taken and completed."""
    gate = _Gate()
    gate.release.set()
    assert scheduler.offer_shadow(gate.job, _ignore)
    await scheduler.shadow_idle()
    assert scheduler.stats.shadow_completed == 1


class TestServedBeforeShadow:
    async def test_served_work_runs_while_shadow_work_holds_its_share(
        self, scheduler_factory: Callable[..., WorkScheduler]
    ) -> None:
        scheduler = scheduler_factory(workers=2, queue=10, shadow_workers=1)
        gate = _Gate()
        for _ in range(5):
            assert scheduler.offer_shadow(gate.job, _ignore)
        await asyncio.to_thread(gate.started.acquire, timeout=10)
        # one shadow job runs, four wait; served work still gets the other worker
        results = await asyncio.gather(*(scheduler.run(lambda i=i: i * 2) for i in range(20)))
        assert results == [i * 2 for i in range(20)]
        assert scheduler.stats.shadow_running == 1
        assert scheduler.stats.shadow_queued == 4
        gate.release.set()
        await scheduler.shadow_idle()
        assert gate.peak == 1
        assert scheduler.stats.shadow_completed == 5

    async def test_a_full_shadow_queue_drops_and_counts(
        self, scheduler_factory: Callable[..., WorkScheduler]
    ) -> None:
        scheduler = scheduler_factory(workers=2, queue=3, shadow_workers=1)
        gate = _Gate()
        accepted = [scheduler.offer_shadow(gate.job, _ignore) for _ in range(8)]
        # the first is dispatched at once, three wait in the queue, four are dropped
        assert accepted == [True] * 4 + [False] * 4
        assert scheduler.stats.shadow_dropped == 4
        assert await scheduler.run(lambda: "served") == "served"
        gate.release.set()
        await scheduler.shadow_idle()
        assert scheduler.stats.shadow_completed == 4

    async def test_shadow_work_waits_for_pending_served_work(
        self, scheduler_factory: Callable[..., WorkScheduler]
    ) -> None:
        scheduler = scheduler_factory(workers=1, queue=10, shadow_workers=1)
        order: list[str] = []
        served_gate = threading.Event()

        def served() -> None:
            served_gate.wait(timeout=30)
            order.append("served")

        served_task = asyncio.create_task(scheduler.run(served))
        await asyncio.sleep(0)  # let the served job reach the pool
        scheduler.offer_shadow(lambda: order.append("shadow"), _ignore)
        assert scheduler.stats.shadow_queued == 1  # held back: the only worker is busy
        served_gate.set()
        await served_task
        await scheduler.shadow_idle()
        assert order == ["served", "shadow"]

    async def test_completion_callbacks_see_results_and_errors(
        self, scheduler_factory: Callable[..., WorkScheduler]
    ) -> None:
        scheduler = scheduler_factory()
        seen: list[Any] = []

        def boom() -> None:
            raise ValueError("model failed")

        scheduler.offer_shadow(lambda: 42, seen.append)
        scheduler.offer_shadow(boom, lambda error: seen.append(type(error).__name__))
        await scheduler.shadow_idle()
        assert sorted(map(str, seen)) == ["42", "ValueError"]


class TestShadowBatches:
    async def test_queued_requests_of_one_servable_share_a_call_and_get_their_own_outcome(
        self,
    ) -> None:
        scheduler = WorkScheduler(1, 20, 1, max_shadow_batch=4)
        gate = _Gate()
        calls: list[tuple[str, list[int]]] = []

        def run(key: str) -> Callable[[list[int]], list[Any]]:
            def score(items: list[int]) -> list[Any]:
                calls.append((key, items))
                return [ValueError(f"bad {i}") if i < 0 else i * 10 for i in items]

            return score

        seen: dict[int, object] = {}

        def done(item: int) -> Callable[[Any], None]:
            def record(outcome: Any) -> None:
                seen[item] = outcome

            return record

        try:
            assert scheduler.offer_shadow(gate.job, _ignore)  # holds the only worker
            assert await asyncio.to_thread(gate.started.acquire, timeout=10)
            for item in (1, 2, -3, 4, 5, 6):
                assert scheduler.offer_shadow(ShadowBatch("a", item, run("a")), done(item))
            for item in (7, 8):
                assert scheduler.offer_shadow(ShadowBatch("b", item, run("b")), done(item))
            assert scheduler.stats.shadow_queued == 8
            gate.release.set()
            await asyncio.wait_for(scheduler.shadow_idle(), 10)
        finally:
            scheduler.close()

        # servables take turns; a call takes at most max_shadow_batch requests
        assert calls == [("a", [1, 2, -3, 4]), ("b", [7, 8]), ("a", [5, 6])]
        assert {k: v for k, v in seen.items() if k != -3} == {
            1: 10,
            2: 20,
            4: 40,
            5: 50,
            6: 60,
            7: 70,
            8: 80,
        }
        assert str(seen[-3]) == "bad -3"
        assert scheduler.stats.shadow_completed == 9


class TestShadowCallsWaitToFill:
    """While served requests are in progress, a shadow call waits until its batch is full
    or its oldest request has waited `shadow_batch_wait_s`; an idle server does not wait."""

    @staticmethod
    def _batch(calls: list[list[int]], item: int) -> ShadowBatch:
        def score(items: list[int]) -> list[int]:
            calls.append(items)
            return items

        return ShadowBatch("servable", item, score)

    async def test_a_call_starts_once_its_batch_is_full(
        self, scheduler_factory: Callable[..., WorkScheduler]
    ) -> None:
        scheduler = scheduler_factory(queue=20, max_shadow_batch=3, shadow_batch_wait_s=60)
        calls: list[list[int]] = []
        scheduler.served_started()
        for item in (1, 2):
            assert scheduler.offer_shadow(self._batch(calls, item), _ignore)
        assert await scheduler.run(lambda: "served") == "served"  # a served call ends
        assert (scheduler.stats.shadow_queued, calls) == (2, [])  # still waiting

        assert scheduler.offer_shadow(self._batch(calls, 3), _ignore)
        await scheduler.shadow_idle()
        assert calls == [[1, 2, 3]]

    async def test_a_call_starts_once_its_oldest_request_waited_long_enough(
        self, scheduler_factory: Callable[..., WorkScheduler]
    ) -> None:
        now = [0.0]
        scheduler = scheduler_factory(
            queue=20, max_shadow_batch=64, shadow_batch_wait_s=0.5, clock=lambda: now[0]
        )
        calls: list[list[int]] = []
        scheduler.served_started()
        assert scheduler.offer_shadow(self._batch(calls, 1), _ignore)
        now[0] += 0.3
        assert scheduler.offer_shadow(self._batch(calls, 2), _ignore)
        await scheduler.run(lambda: None)
        assert calls == []

        now[0] += 0.2  # the first has waited 0.5 s
        await scheduler.run(lambda: None)
        await scheduler.shadow_idle()
        assert calls == [[1, 2]]

    async def test_when_the_last_served_request_ends_waiting_calls_start(
        self, scheduler_factory: Callable[..., WorkScheduler]
    ) -> None:
        scheduler = scheduler_factory(queue=20, max_shadow_batch=64, shadow_batch_wait_s=60)
        calls: list[list[int]] = []
        scheduler.served_started()
        scheduler.served_started()
        assert scheduler.offer_shadow(self._batch(calls, 1), _ignore)
        scheduler.served_finished()
        assert scheduler.stats.shadow_queued == 1  # one served request still in progress
        scheduler.served_finished()
        await scheduler.shadow_idle()
        assert calls == [[1]]

        # idle: the next one starts at once, alone
        assert scheduler.offer_shadow(self._batch(calls, 2), _ignore)
        await scheduler.shadow_idle()
        assert calls == [[1], [2]]

    async def test_a_timer_starts_a_waiting_call_when_nothing_else_happens(
        self, scheduler_factory: Callable[..., WorkScheduler]
    ) -> None:
        scheduler = scheduler_factory(queue=20, max_shadow_batch=64, shadow_batch_wait_s=0.01)
        calls: list[list[int]] = []
        scheduler.served_started()  # and nothing else: no served call ends
        assert scheduler.offer_shadow(self._batch(calls, 1), _ignore)
        await asyncio.wait_for(scheduler.shadow_idle(), 10)
        assert calls == [[1]]


class TestShadowBudget:
    """Shadow work takes its share of the CPU (`shadow_time_share`); beyond it, shadow
    requests are dropped at the door."""

    async def test_over_budget_a_shadow_request_is_dropped_at_once(self) -> None:
        busy = [0.0]  # the process uses all the time there is: no idle credit
        scheduler = WorkScheduler(
            2, 10, 1, shadow_time_share=0.1, clock=lambda: busy[0], cpu_clock=lambda: busy[0]
        )
        try:
            scheduler.budget.spend(1.0)  # costly shadow work just ended

            assert not scheduler.offer_shadow(lambda: "shadow", _ignore)
            assert not scheduler.admits_shadow()  # asked before a job is even built
            assert (scheduler.stats.shadow_dropped, scheduler.stats.shadow_queued) == (2, 0)

            busy[0] += 10.0  # 10 s at 10% pay the 0.95 s debt back
            await _takes_and_completes_one(scheduler)
        finally:
            scheduler.close()

    async def test_a_shadow_calls_cpu_time_is_charged(self) -> None:
        frozen = [0.0]  # no time passes: nothing is refilled
        scheduler = WorkScheduler(
            2, 10, 1, shadow_time_share=0.1, clock=lambda: frozen[0], cpu_clock=lambda: 0.0
        )

        def costly() -> int:
            started = time.thread_time()
            spins = 0
            while time.thread_time() - started < 0.06:  # more than the 50 ms reserve
                spins += 1
            return spins

        try:
            assert scheduler.offer_shadow(costly, _ignore)
            await scheduler.shadow_idle()

            assert not scheduler.offer_shadow(costly, _ignore)
            assert scheduler.stats.shadow_dropped == 1
        finally:
            scheduler.close()

    async def test_an_idle_process_takes_every_shadow_request(self) -> None:
        now = [0.0]
        scheduler = WorkScheduler(
            2, 10, 1, shadow_time_share=0.01, clock=lambda: now[0], cpu_clock=lambda: 0.0
        )
        try:
            scheduler.budget.spend(0.1)  # from 50 ms to -50 ms
            now[0] += 0.06  # 60 ms without using the CPU: credited in full
            await _takes_and_completes_one(scheduler)
        finally:
            scheduler.close()
