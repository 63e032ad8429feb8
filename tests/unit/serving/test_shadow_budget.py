"""`ShadowBudget`: shadow calls take at most their share of the time while served work runs."""

from __future__ import annotations

from forestflow.serving.scheduler import ShadowBudget


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_call_starts_while_the_reserve_lasts_and_pays_after() -> None:
    clock = Clock()
    budget = ShadowBudget(0.25, reserve_s=0.05, clock=clock)

    assert budget.allows()
    budget.spend(0.2)  # a long call: the reserve goes negative, no lower than -reserve
    assert not budget.allows()
    clock.now += 0.3  # 0.3 s at 25% refills 0.075 s: from -0.05 to 0.025
    assert budget.allows()
    budget.spend(0.03)
    assert not budget.allows()


def test_over_time_calls_take_their_share() -> None:
    clock = Clock()
    budget = ShadowBudget(0.25, reserve_s=0.05, clock=clock)
    busy = 0.0
    for _ in range(10_000):  # a 1 ms tick; a shadow call of 4 ms whenever allowed
        if budget.allows():
            clock.now += 0.004
            budget.spend(0.004)
            busy += 0.004
        else:
            clock.now += 0.001
    elapsed = clock.now - 100.0

    assert 0.24 <= busy / elapsed <= 0.26


def test_a_share_of_one_never_limits() -> None:
    budget = ShadowBudget(1.0, clock=Clock())
    budget.spend(10.0)
    assert budget.allows()
