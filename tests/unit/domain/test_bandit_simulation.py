"""The issue's acceptance for the bandit routers, simulated at unit level with seeded RNGs.

Two servables with true accuracies 0.70 and 0.80 answer 5,000 requests; every answer gets
its feedback at once (a Bernoulli reward with the chosen servable's accuracy), which updates
that servable's `rewardSuccesses`, `rewardFailures` and cumulative `accuracy` with the samples
behind it (`accuracySamples`) as the feedback loop does, so the routers' default `minSamples`
(30) holds back their first decisions. The plan is rebuilt after every request, or every 10
requests as an evaluation pass would. Routing and the environment draw from separate seeded
RNGs, so a router's choices never change the rewards the environment has in store.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

import pytest

from forestflow.domain.metrics import (
    ACCURACY,
    FEEDBACK_COUNT,
    REWARD_FAILURES,
    REWARD_SUCCESSES,
    ServableMetrics,
    samples_name,
)
from forestflow.domain.routers import (
    EpsilonGreedyRouter,
    FairPhaseInPctBasedRouter,
    RoutePlan,
    Router,
    ThompsonSamplingRouter,
)
from tests.builders import make_metrics

TRUE_ACCURACY = {"better": 0.80, "worse": 0.70}
REQUESTS = 5_000
TAIL = 1_000
EPSILON = 0.1
SEEDS = [11, 2_024, 777_777]
REBUILD_EVERY = [1, 10]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a simulation ends with."""

    better_share_of_tail: float
    """Share of the last 1,000 requests answered by the better servable."""
    final_plan: RoutePlan
    final_metrics: dict[str, ServableMetrics]


def with_feedback(servable: ServableMetrics, success: bool) -> ServableMetrics:
    """`servable` after one more joined prediction, as the feedback loop maintains it."""
    metrics = dict(servable.performance_metrics)
    successes = metrics.get(REWARD_SUCCESSES, 0.0) + success
    failures = metrics.get(REWARD_FAILURES, 0.0) + (not success)
    metrics.update(
        {
            REWARD_SUCCESSES: successes,
            REWARD_FAILURES: failures,
            FEEDBACK_COUNT: successes + failures,
            ACCURACY: successes / (successes + failures),
            samples_name(ACCURACY): successes + failures,
        }
    )
    return dataclasses.replace(servable, performance_metrics=metrics)


def simulate(router: Router, *, rebuild_every: int, seed: int) -> Outcome:
    """Route 5,000 requests with immediate feedback; see the module docstring."""
    routing = random.Random(seed)
    environment = random.Random(seed ^ 0x5EED)
    # the worse servable is the newer one, so every tie (e.g. both unmeasured) favours it
    servables = {
        "better": make_metrics("better", became_valid_at_ms=1, current_phase_in_pct=100),
        "worse": make_metrics("worse", became_valid_at_ms=2, current_phase_in_pct=100),
    }
    plan = router.plan(list(servables.values()))
    better_in_tail = 0
    for request in range(REQUESTS):
        if request % rebuild_every == 0:
            plan = router.plan(list(servables.values()))
        chosen = plan.choose(routing)
        assert chosen is not None
        release = chosen.release_version
        success = environment.random() < TRUE_ACCURACY[release]
        servables[release] = with_feedback(servables[release], success)
        if request >= REQUESTS - TAIL and release == "better":
            better_in_tail += 1
    return Outcome(better_in_tail / TAIL, router.plan(list(servables.values())), servables)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("rebuild_every", REBUILD_EVERY)
class TestBanditSimulation:
    def test_thompson_sampling_sends_at_least_90_percent_to_the_better(
        self, rebuild_every: int, seed: int
    ) -> None:
        outcome = simulate(ThompsonSamplingRouter(), rebuild_every=rebuild_every, seed=seed)
        assert outcome.better_share_of_tail >= 0.90
        better = outcome.final_metrics["better"].fqrv
        assert outcome.final_plan.shares()[better] >= 0.90

    def test_epsilon_greedy_exploits_and_keeps_exploring(
        self, rebuild_every: int, seed: int
    ) -> None:
        outcome = simulate(
            EpsilonGreedyRouter(ACCURACY, EPSILON), rebuild_every=rebuild_every, seed=seed
        )
        assert outcome.better_share_of_tail >= 1 - EPSILON - 0.03
        # converged on the better one: it gets 1 − ε + ε/2, the worse one still ε/2
        assert abs(outcome.better_share_of_tail - (1 - EPSILON / 2)) <= 0.03

    def test_a_naive_router_would_fail_the_thresholds(self, rebuild_every: int, seed: int) -> None:
        # both at 100%: the phase-in router ignores feedback and stays near 50/50
        outcome = simulate(FairPhaseInPctBasedRouter(), rebuild_every=rebuild_every, seed=seed)
        assert abs(outcome.better_share_of_tail - 0.5) <= 0.05
        assert outcome.better_share_of_tail < 1 - EPSILON - 0.03


class TestEnvironment:
    def test_feedback_keeps_the_counters_and_the_cumulative_accuracy(self) -> None:
        servable = make_metrics("a")
        for success in (True, False, True, True):
            servable = with_feedback(servable, success)
        assert servable.performance_metrics == {
            REWARD_SUCCESSES: 3,
            REWARD_FAILURES: 1,
            FEEDBACK_COUNT: 4,
            ACCURACY: 0.75,
            samples_name(ACCURACY): 4,
        }

    def test_the_better_servable_really_is_better(self) -> None:
        # sanity for the simulation: over the run, observed accuracies match the true ones
        outcome = simulate(
            EpsilonGreedyRouter(ACCURACY, 1.0), rebuild_every=REBUILD_EVERY[0], seed=SEEDS[0]
        )
        for release, accuracy in TRUE_ACCURACY.items():
            observed = outcome.final_metrics[release].performance_metrics[ACCURACY]
            assert abs(observed - accuracy) <= 0.03
