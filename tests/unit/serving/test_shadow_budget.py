"""`ShadowBudget`: shadow work takes its share of the CPU, plus what the process leaves idle."""

from __future__ import annotations

from forestflow.serving.scheduler import ShadowBudget


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Busy:
    """A process that uses the CPU all the time: its CPU time follows the wall clock."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def __call__(self) -> float:
        return self.clock.now


def busy_budget(share: float, clock: Clock) -> ShadowBudget:
    return ShadowBudget(share, reserve_s=0.05, clock=clock, cpu_clock=Busy(clock))


def test_work_is_taken_while_the_reserve_lasts_and_its_debt_paid_in_full() -> None:
    clock = Clock()
    budget = busy_budget(0.25, clock)

    assert budget.allows()
    budget.spend(0.2)  # costly work: from 0.05 to -0.15
    assert not budget.allows()
    clock.now += 0.5  # 0.5 s at 25% pays back 0.125 s: still -0.025
    assert not budget.allows()
    clock.now += 0.2  # 0.05 s more: 0.025
    assert budget.allows()
    budget.spend(0.03)
    assert not budget.allows()


def test_over_time_a_busy_process_gives_shadows_their_share() -> None:
    clock = Clock()
    budget = busy_budget(0.25, clock)
    spent = 0.0
    for _ in range(10_000):  # a 1 ms tick; 4 ms of shadow CPU whenever allowed
        if budget.allows():
            clock.now += 0.004
            budget.spend(0.004)
            spent += 0.004
        else:
            clock.now += 0.001
    elapsed = clock.now - 100.0

    assert 0.24 <= spent / elapsed <= 0.26


def test_the_time_an_idle_process_leaves_is_credited() -> None:
    clock = Clock()
    cpu = [0.0]  # the process uses no CPU at all
    budget = ShadowBudget(0.01, reserve_s=0.05, clock=clock, cpu_clock=lambda: cpu[0])
    budget.spend(0.06)  # from 0.05 to -0.01
    assert not budget.allows()

    clock.now += 0.02  # 20 ms idle: 20 ms credited (and 0.2 ms of share)
    assert budget.allows()

    budget.spend(0.03)
    cpu[0] += 0.02  # the next 20 ms fully busy: only the share comes back
    clock.now += 0.02
    assert not budget.allows()


def test_what_a_meter_counts_is_charged() -> None:
    clock = Clock()
    budget = busy_budget(0.5, clock)
    elsewhere = [3.0]  # CPU seconds spent on shadow work by another thread so far
    budget.meter(lambda: elsewhere[0])

    elsewhere[0] += 0.06  # it spent 60 ms: the 50 ms reserve and 10 ms more
    clock.now += 0.002  # refilled by 1 ms: -9 ms
    assert not budget.allows()
    clock.now += 0.02  # 10 ms more at 50%: back above zero
    assert budget.allows()


def test_the_reserve_is_refilled_at_most_once_a_millisecond() -> None:
    clock = Clock()
    budget = busy_budget(0.5, clock)
    budget.spend(0.0501)  # -0.1 ms
    for _ in range(10):
        clock.now += 0.0001  # 0.1 ms steps add up; none is lost
        budget.allows()
    clock.now += 0.0001
    assert budget.allows()  # 1.1 ms at 50%: 0.55 ms, more than the 0.1 ms owed


def test_a_share_of_one_never_limits() -> None:
    budget = ShadowBudget(1.0, clock=Clock())
    budget.spend(10.0)
    assert budget.allows()
