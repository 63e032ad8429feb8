from __future__ import annotations

import dataclasses
import json
import math
import random
import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forestflow.domain.codec import decode, encode
from forestflow.domain.evaluation import evaluate_contract
from forestflow.domain.expiration import KeepLatest, KeepTopRanked
from forestflow.domain.fqrv import FQRV
from forestflow.domain.metrics import (
    ACCURACY,
    DEFAULT_MIN_SAMPLES,
    MAE,
    REWARD_FAILURES,
    REWARD_SUCCESSES,
    Ordering,
    ServableMetrics,
    samples_name,
)
from forestflow.domain.routers import (
    NO_ROUTE,
    THOMPSON_SHARE_SAMPLES,
    BestPerformerRouter,
    EpsilonGreedyRouter,
    RoutePlan,
    Router,
    ThompsonPlan,
    ThompsonSamplingRouter,
)
from forestflow.domain.settings import ContractSettings
from forestflow.domain.validity import NeverValid
from forestflow.errors import InvalidField
from tests.builders import make_metrics, make_policy, names, orderings

DRAWS = 10_000
TOLERANCE = 0.02  # ±2 percentage points (SPEC §1.4)
# ThompsonPlan.shares() is a Monte Carlo estimate: 4 standard errors at its sample count
ESTIMATE_TOLERANCE = 4 * 0.5 / math.sqrt(THOMPSON_SHARE_SAMPLES)
SEED = 20_240_601

# statistical properties run on a fixed set of examples: with a seeded RNG each example is
# deterministic, and derandomize keeps the whole test from being flaky across runs
statistical = settings(max_examples=25, derandomize=True, deadline=None)


def servable(
    release: str,
    pct: int = 100,
    became: int = 1,
    created: int = 0,
    **performance: float,
) -> ServableMetrics:
    return make_metrics(
        release,
        created_at_ms=created,
        became_valid_at_ms=became,
        current_phase_in_pct=pct,
        performance_metrics=performance,
    )


def rewards(release: str, successes: float, failures: float, **kwargs: Any) -> ServableMetrics:
    counters = {REWARD_SUCCESSES: successes, REWARD_FAILURES: failures}
    return dataclasses.replace(servable(release, **kwargs), performance_metrics=counters)


def observed_shares(plan: RoutePlan, draws: int = DRAWS) -> dict[FQRV | None, float]:
    rng = random.Random(SEED)
    counts = Counter(plan.choose(rng) for _ in range(draws))
    return {fqrv: count / draws for fqrv, count in counts.items()}


def assert_shares(
    plan: RoutePlan, expected: Mapping[FQRV, float], *, estimated: bool = False
) -> None:
    """The plan announces `expected` (exactly, or as an estimate) and honours it over 10,000
    seeded draws."""
    positive = {fqrv: share for fqrv, share in expected.items() if share > 0}
    tolerance = ESTIMATE_TOLERANCE if estimated else None
    assert plan.shares() == pytest.approx(positive, abs=tolerance)
    observed = observed_shares(plan)
    assert set(observed) <= set(positive), "a servable with share 0 was chosen"
    for fqrv, share in positive.items():
        assert abs(observed.get(fqrv, 0.0) - share) <= TOLERANCE, (fqrv, observed, share)


def only(plan: RoutePlan) -> FQRV:
    """The single servable a plan sends everything to."""
    ((fqrv, share),) = plan.shares().items()
    assert share == 1.0
    assert set(observed_shares(plan, 200)) == {fqrv}
    return fqrv


def p_greater(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Exact P(X > Y) for X ~ Beta(*a), Y ~ Beta(*b), X's first parameter an integer.

    The closed form of the sum over i < alpha_X of B(alpha_Y + i, beta_Y + beta_X) /
    ((beta_X + i) B(1 + i, beta_X) B(alpha_Y, beta_Y)).
    """

    def log_beta(x: float, y: float) -> float:
        return math.lgamma(x) + math.lgamma(y) - math.lgamma(x + y)

    (alpha_x, beta_x), (alpha_y, beta_y) = a, b
    return sum(
        math.exp(
            log_beta(alpha_y + i, beta_y + beta_x)
            - math.log(beta_x + i)
            - log_beta(1 + i, beta_x)
            - log_beta(alpha_y, beta_y)
        )
        for i in range(int(alpha_x))
    )


class FixedBetaDraws(random.Random):
    """A `random.Random` whose `betavariate` returns the given values in turn."""

    def __init__(self, *draws: float) -> None:
        super().__init__(0)
        self.draws = list(draws)
        self.calls: list[tuple[float, float]] = []

    def betavariate(self, alpha: float, beta: float) -> float:
        self.calls.append((alpha, beta))
        return self.draws.pop(0)


class TestRegistry:
    @pytest.mark.parametrize(
        ("name", "cls"),
        [
            ("BestPerformerRouter", BestPerformerRouter),
            ("EpsilonGreedyRouter", EpsilonGreedyRouter),
            ("ThompsonSamplingRouter", ThompsonSamplingRouter),
        ],
    )
    def test_registered_under_the_spec_name(self, name: str, cls: type[Router]) -> None:
        assert Router.registry.get(name) is cls
        assert cls.wire_name == name


class TestBestPerformerRouter:
    @pytest.mark.parametrize(
        ("ordering", "winner"), [(Ordering.DESC, "high"), (Ordering.ASC, "low")]
    )
    def test_ordering_picks_the_best(self, ordering: Ordering, winner: str) -> None:
        valid = [servable("low", mae=0.1), servable("mid", mae=0.5), servable("high", mae=0.9)]
        plan = BestPerformerRouter(MAE, ordering).plan(valid)
        assert only(plan).release_version == winner

    def test_ordering_defaults_to_desc(self) -> None:
        valid = [servable("low", auc=0.6), servable("high", auc=0.7)]
        assert only(BestPerformerRouter("auc").plan(valid)).release_version == "high"

    def test_zero_percent_gets_nothing_even_when_best(self) -> None:
        valid = [servable("best", pct=0, auc=0.99), servable("worse", auc=0.5)]
        assert only(BestPerformerRouter("auc").plan(valid)).release_version == "worse"

    def test_phase_in_only_gates(self) -> None:
        # a best servable at 1% takes everything: the metric, not the percent, decides
        valid = [servable("best", pct=1, auc=0.9), servable("worse", pct=100, auc=0.5)]
        assert only(BestPerformerRouter("auc").plan(valid)).release_version == "best"

    def test_ties_go_to_the_more_phased_in(self) -> None:
        valid = [
            servable("more", pct=80, became=1, auc=0.7),
            servable("less", pct=40, became=9, auc=0.7),
        ]
        assert only(BestPerformerRouter("auc").plan(valid)).release_version == "more"
        assert only(BestPerformerRouter("auc").plan(valid[::-1])).release_version == "more"

    @pytest.mark.parametrize("ordering", list(Ordering))
    def test_then_to_the_newer(self, ordering: Ordering) -> None:
        older = servable("older", became=5, created=9, auc=0.7)
        newer = servable("newer", became=6, created=1, auc=0.7)
        router = BestPerformerRouter("auc", ordering)
        assert only(router.plan([older, newer])).release_version == "newer"
        assert only(router.plan([newer, older])).release_version == "newer"

    def test_became_valid_ties_go_to_the_later_created(self) -> None:
        first = servable("first", became=5, created=1, auc=0.7)
        second = servable("second", became=5, created=2, auc=0.7)
        assert only(BestPerformerRouter("auc").plan([second, first])).release_version == "second"
        assert only(BestPerformerRouter("auc").plan([first, second])).release_version == "second"

    def test_an_unmeasured_servable_is_never_the_best(self) -> None:
        valid = [servable("unmeasured"), servable("measured", auc=0.1)]
        assert only(BestPerformerRouter("auc").plan(valid)).release_version == "measured"
        # unknown is not 0: a negative score that is known still wins (issue 11)
        valid = [servable("unmeasured"), servable("measured", auc=-0.1)]
        assert only(BestPerformerRouter("auc").plan(valid)).release_version == "measured"

    def test_missing_metric_is_the_worst_for_asc(self) -> None:
        valid = [servable("unmeasured", pct=100), servable("measured", pct=5, mae=1e9)]
        plan = BestPerformerRouter(MAE, Ordering.ASC).plan(valid)
        assert only(plan).release_version == "measured"

    def test_nan_counts_as_missing(self) -> None:
        valid = [servable("nan", mae=math.nan), servable("measured", mae=5.0)]
        plan = BestPerformerRouter(MAE, Ordering.ASC).plan(valid)
        assert only(plan).release_version == "measured"

    @pytest.mark.parametrize("ordering", list(Ordering))
    def test_no_metric_yet_shares_by_phase_in(self, ordering: Ordering) -> None:
        # a new contract serves before its first feedback, as FairPhaseInPctBasedRouter does
        valid = [
            servable("a", pct=100, other=0.9),
            servable("b", pct=50, auc=math.nan),
            servable("c", pct=0),
        ]
        a, b, _ = (s.fqrv for s in valid)
        assert_shares(BestPerformerRouter("auc", ordering).plan(valid), {a: 2 / 3, b: 1 / 3})

    def test_nothing_valid_routes_nowhere(self) -> None:
        router = BestPerformerRouter("auc")
        assert router.plan([]).choose(random.Random(SEED)) is None
        assert router.plan([servable("a", pct=0, auc=1.0)]).choose(random.Random(SEED)) is None
        assert router.plan([servable("a", pct=0, auc=1.0)]).shares() == {}

    def test_metric_must_be_named(self) -> None:
        with pytest.raises(InvalidField) as caught:
            BestPerformerRouter("")
        assert caught.value.field == "metric"

    @settings(max_examples=60, derandomize=True, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.one_of(st.none(), st.sampled_from([-1.0, 0.0, 0.25, 0.5, 1.0])),
                st.sampled_from([0, 1, 50, 100]),
                st.integers(min_value=0, max_value=3),
            ),
            min_size=1,
            max_size=5,
        ),
        orderings,
    )
    def test_chooses_a_candidate_no_other_beats(
        self, specs: list[tuple[float | None, int, int]], ordering: Ordering
    ) -> None:
        valid = [
            servable(f"v{i}", pct=pct, became=became, created=i, **({} if m is None else {"s": m}))
            for i, (m, pct, became) in enumerate(specs)
        ]
        candidates = [s for s in valid if s.current_phase_in_pct > 0]
        plan = BestPerformerRouter("s", ordering).plan(valid)
        if not candidates:
            assert plan.choose(random.Random(SEED)) is None
            return
        if all("s" not in s.performance_metrics for s in candidates):
            total = sum(s.current_phase_in_pct for s in candidates)
            assert plan.shares() == pytest.approx(
                {s.fqrv: s.current_phase_in_pct / total for s in candidates}
            )
            return

        def key(s: ServableMetrics) -> tuple[float, int, int, int]:
            rank = ordering.rank_key(s.performance_metrics.get("s"))
            return (rank, -s.current_phase_in_pct, -(s.became_valid_at_ms or 0), -s.created_at_ms)

        chosen = next(s for s in valid if s.fqrv == only(plan))
        assert all(key(chosen) < key(other) for other in candidates if other is not chosen)


class TestEpsilonGreedyRouter:
    def test_best_gets_one_minus_epsilon_plus_epsilon_over_k(self) -> None:
        valid = [servable("a", auc=0.6), servable("b", auc=0.9), servable("c", auc=0.7)]
        a, b, c = (s.fqrv for s in valid)
        plan = EpsilonGreedyRouter("auc", 0.3).plan(valid)
        assert_shares(plan, {b: 0.7 + 0.1, a: 0.1, c: 0.1})

    def test_epsilon_defaults_to_a_tenth(self) -> None:
        valid = [servable("a", auc=0.6), servable("b", auc=0.9)]
        a, b = (s.fqrv for s in valid)
        assert_shares(EpsilonGreedyRouter("auc").plan(valid), {b: 0.95, a: 0.05})

    @pytest.mark.parametrize(
        ("ordering", "best", "worst"),
        [(Ordering.DESC, "high", "low"), (Ordering.ASC, "low", "high")],
    )
    def test_ordering(self, ordering: Ordering, best: str, worst: str) -> None:
        valid = {
            s.fqrv.release_version: s for s in [servable("low", mae=1), servable("high", mae=2)]
        }
        plan = EpsilonGreedyRouter(MAE, 0.2, ordering).plan(list(valid.values()))
        assert_shares(plan, {valid[best].fqrv: 0.9, valid[worst].fqrv: 0.1})

    def test_zero_percent_is_not_explored(self) -> None:
        valid = [servable("best", pct=0, auc=0.99), servable("a", auc=0.5), servable("b", auc=0.4)]
        _, a, b = (s.fqrv for s in valid)
        assert_shares(EpsilonGreedyRouter("auc", 0.5).plan(valid), {a: 0.75, b: 0.25})

    def test_zero_epsilon_is_best_performer(self) -> None:
        valid = [servable("a", auc=0.6), servable("b", auc=0.9)]
        assert only(EpsilonGreedyRouter("auc", 0.0).plan(valid)) == valid[1].fqrv

    def test_epsilon_one_is_uniform_whatever_the_phase_in(self) -> None:
        valid = [servable("a", pct=10, auc=0.6), servable("b", pct=100, auc=0.9)]
        a, b = (s.fqrv for s in valid)
        assert_shares(EpsilonGreedyRouter("auc", 1.0).plan(valid), {a: 0.5, b: 0.5})

    def test_ties_go_to_the_more_phased_in_then_the_newer(self) -> None:
        valid = [
            servable("less", pct=50, became=9, auc=0.8),
            servable("older", pct=100, became=1, auc=0.8),
            servable("newer", pct=100, became=2, auc=0.8),
        ]
        less, older, newer = (s.fqrv for s in valid)
        plan = EpsilonGreedyRouter("auc", 0.3).plan(valid)
        assert_shares(plan, {newer: 0.8, older: 0.1, less: 0.1})

    def test_no_metric_yet_shares_by_phase_in(self) -> None:
        valid = [servable("a", pct=100), servable("b", pct=25), servable("c", pct=0)]
        a, b, _ = (s.fqrv for s in valid)
        assert_shares(EpsilonGreedyRouter("auc", 0.5).plan(valid), {a: 0.8, b: 0.2})

    def test_an_unmeasured_servable_is_explored_not_exploited(self) -> None:
        valid = [servable("unmeasured"), servable("measured", auc=0.1)]
        unmeasured, measured = (s.fqrv for s in valid)
        plan = EpsilonGreedyRouter("auc", 0.2).plan(valid)
        assert_shares(plan, {measured: 0.9, unmeasured: 0.1})

    def test_nothing_valid_routes_nowhere(self) -> None:
        assert EpsilonGreedyRouter("auc").plan([]).choose(random.Random(SEED)) is None

    @pytest.mark.parametrize("epsilon", [-0.01, 1.01, math.nan, math.inf, -math.inf])
    def test_epsilon_outside_zero_one_is_refused(self, epsilon: float) -> None:
        with pytest.raises(InvalidField, match="between 0 and 1") as caught:
            EpsilonGreedyRouter("auc", epsilon)
        assert caught.value.field == "epsilon"

    def test_metric_must_be_named(self) -> None:
        with pytest.raises(InvalidField) as caught:
            EpsilonGreedyRouter("", 0.5)
        assert caught.value.field == "metric"

    @statistical
    @given(
        st.floats(min_value=0, max_value=1),
        st.integers(min_value=1, max_value=4),
        st.integers(min_value=0, max_value=3),
    )
    def test_best_share_within_two_points(self, epsilon: float, k: int, best: int) -> None:
        best %= k
        valid = [servable(f"v{i}", auc=1.0 if i == best else i / 10) for i in range(k)]
        observed = observed_shares(EpsilonGreedyRouter("auc", epsilon).plan(valid))
        for i, s in enumerate(valid):
            expected = 1 - epsilon + epsilon / k if i == best else epsilon / k
            assert abs(observed.get(s.fqrv, 0.0) - expected) <= TOLERANCE


class TestThompsonSamplingRouter:
    def test_posteriors_are_prior_plus_counters(self) -> None:
        router = ThompsonSamplingRouter(prior_successes=0.5, prior_failures=2.0, min_samples=10)
        plan = router.plan([rewards("a", 7, 3), servable("b")])
        assert isinstance(plan, ThompsonPlan)
        assert dict(zip(plan.fqrvs, zip(plan.alphas, plan.betas, strict=True), strict=True)) == {
            make_metrics("a").fqrv: (7.5, 5.0),
            make_metrics("b").fqrv: (0.5, 2.0),
        }

    @pytest.mark.parametrize("bad", [-5.0, math.nan])
    def test_negative_or_nan_counters_count_as_zero(self, bad: float) -> None:
        plan = ThompsonSamplingRouter(min_samples=4).plan([rewards("a", bad, 4)])
        assert isinstance(plan, ThompsonPlan)
        assert (plan.alphas, plan.betas) == ((1.0,), (5.0,))

    def test_each_request_goes_to_the_largest_draw(self) -> None:
        valid = [rewards("a", 1, 1, became=1), rewards("b", 5, 2, became=2)]
        plan = ThompsonSamplingRouter(min_samples=1).plan(valid)
        # candidates are newest first: b then a
        rng = FixedBetaDraws(0.2, 0.7, 0.9, 0.1)
        assert [plan.choose(rng), plan.choose(rng)] == [valid[0].fqrv, valid[1].fqrv]
        assert rng.calls == [(6.0, 3.0), (2.0, 2.0)] * 2

    def test_equal_draws_go_to_the_more_phased_in_then_the_newer(self) -> None:
        valid = [
            servable("less", pct=50, became=9),
            servable("older", pct=100, became=1),
            servable("newer", pct=100, became=2),
        ]
        plan = ThompsonSamplingRouter().plan(valid)
        assert plan.choose(FixedBetaDraws(1.0, 1.0, 1.0)) == valid[2].fqrv
        assert plan.choose(FixedBetaDraws(0.5, 1.0, 1.0)) == valid[1].fqrv
        assert plan.choose(FixedBetaDraws(0.5, 0.5, 1.0)) == valid[0].fqrv

    def test_zero_percent_gets_nothing(self) -> None:
        valid = [rewards("best", 1000, 0, pct=0), rewards("a", 1, 9), rewards("b", 1, 9)]
        plan = ThompsonSamplingRouter().plan(valid)
        assert valid[0].fqrv not in plan.shares()
        assert valid[0].fqrv not in observed_shares(plan)

    def test_a_single_candidate_takes_everything_without_drawing(self) -> None:
        valid = [rewards("only", 0, 50, pct=3), rewards("off", 50, 0, pct=0)]
        plan = ThompsonSamplingRouter().plan(valid)
        rng = FixedBetaDraws()
        assert plan.choose(rng) == valid[0].fqrv
        assert rng.calls == []
        assert plan.shares() == {valid[0].fqrv: 1.0}

    def test_nothing_valid_routes_nowhere(self) -> None:
        router = ThompsonSamplingRouter()
        assert router.plan([]) is NO_ROUTE
        assert router.plan([servable("a", pct=0)]).choose(random.Random(SEED)) is None

    def test_missing_counters_share_evenly(self) -> None:
        valid = [servable("a"), servable("b", pct=20)]
        a, b = (s.fqrv for s in valid)
        assert_shares(ThompsonSamplingRouter().plan(valid), {a: 0.5, b: 0.5}, estimated=True)

    @pytest.mark.parametrize(
        ("better", "worse"), [((81, 21), (71, 31)), ((3, 1), (1, 1)), ((13, 40), (9, 40))]
    )
    def test_shares_match_the_exact_probability(
        self, better: tuple[int, int], worse: tuple[int, int]
    ) -> None:
        valid = [
            rewards("better", better[0] - 1, better[1] - 1),
            rewards("worse", worse[0] - 1, worse[1] - 1),
        ]
        exact = p_greater(better, worse)
        plan = ThompsonSamplingRouter(min_samples=1).plan(valid)
        shares = plan.shares()
        assert shares[valid[0].fqrv] == pytest.approx(exact, abs=ESTIMATE_TOLERANCE)
        assert sum(shares.values()) == pytest.approx(1.0)
        assert abs(observed_shares(plan)[valid[0].fqrv] - exact) <= TOLERANCE

    def test_shares_are_deterministic_and_leave_every_rng_alone(self) -> None:
        valid = [rewards("a", 3, 4), rewards("b", 4, 3), rewards("c", 2, 2)]
        plan = ThompsonSamplingRouter().plan(valid)
        rng, untouched = random.Random(SEED), random.Random(SEED)
        global_state = random.getstate()
        first = [plan.choose(rng) for _ in range(20)]
        shares = plan.shares()
        assert random.getstate() == global_state
        first += [plan.choose(rng) for _ in range(20)]
        assert first == [plan.choose(untouched) for _ in range(40)]
        assert ThompsonSamplingRouter().plan(valid).shares() == shares == plan.shares()

    @pytest.mark.parametrize(
        ("field", "kwargs"),
        [
            ("priorSuccesses", {"prior_successes": 0.0}),
            ("priorSuccesses", {"prior_successes": -1.0}),
            ("priorSuccesses", {"prior_successes": math.nan}),
            ("priorFailures", {"prior_failures": 0.0}),
            ("priorFailures", {"prior_failures": math.nan}),
        ],
    )
    def test_priors_must_be_positive(self, field: str, kwargs: dict[str, float]) -> None:
        with pytest.raises(InvalidField, match="> 0") as caught:
            ThompsonSamplingRouter(**kwargs)
        assert caught.value.field == field

    @statistical
    @given(
        st.lists(
            st.tuples(st.integers(0, 30), st.integers(0, 30), st.sampled_from([0, 1, 100])),
            min_size=1,
            max_size=3,
        )
    )
    def test_observed_shares_follow_the_estimate(self, specs: list[tuple[int, int, int]]) -> None:
        valid = [rewards(f"v{i}", s, f, pct=pct) for i, (s, f, pct) in enumerate(specs)]
        plan = ThompsonSamplingRouter(min_samples=20).plan(valid)
        shares = plan.shares()
        positive = {s.fqrv for s in valid if s.current_phase_in_pct > 0}
        assert set(shares) <= positive
        if not positive:
            assert plan.choose(random.Random(SEED)) is None
            return
        assert sum(shares.values()) == pytest.approx(1.0)
        observed = observed_shares(plan)
        assert set(observed) <= positive
        for fqrv in positive:
            assert abs(observed.get(fqrv, 0.0) - shares.get(fqrv, 0.0)) <= TOLERANCE


def measured(
    release: str, samples: int, pct: int = 100, became: int = 1, **metrics: float
) -> ServableMetrics:
    """A servable whose metrics each rest on `samples` joined samples, as feedback keeps them."""
    performance = dict(metrics)
    performance.update({samples_name(name): float(samples) for name in metrics})
    return servable(release, pct=pct, became=became, **performance)


class TestMinSamples:
    """Issue 11: below `minSamples` a metric is unknown: never the best, and explored."""

    @pytest.mark.parametrize(
        "router",
        [
            BestPerformerRouter("auc"),
            EpsilonGreedyRouter("auc"),
            ThompsonSamplingRouter(),
        ],
        ids=lambda r: type(r).__name__,
    )
    def test_defaults_to_the_documented_thirty(self, router: Router) -> None:
        assert router.min_samples == DEFAULT_MIN_SAMPLES == 30  # type: ignore[attr-defined]

    @pytest.mark.parametrize("bad", [0, -1, 2.5, True])
    def test_refuses_anything_but_an_integer_of_at_least_one(self, bad: object) -> None:
        for build in (
            lambda: BestPerformerRouter("auc", min_samples=bad),  # type: ignore[arg-type]
            lambda: EpsilonGreedyRouter("auc", min_samples=bad),  # type: ignore[arg-type]
            lambda: ThompsonSamplingRouter(min_samples=bad),  # type: ignore[arg-type]
        ):
            with pytest.raises(InvalidField, match=">= 1") as caught:
                build()
            assert caught.value.field == "minSamples"

    def test_best_performer_one_lucky_record_does_not_take_the_traffic(self) -> None:
        valid = [measured("incumbent", 500, auc=0.7), measured("lucky", 1, became=2, auc=1.0)]
        assert only(BestPerformerRouter("auc").plan(valid)).release_version == "incumbent"
        valid[1] = measured("lucky", 29, became=2, auc=1.0)
        assert only(BestPerformerRouter("auc").plan(valid)).release_version == "incumbent"

    def test_best_performer_at_min_samples_the_metric_decides(self) -> None:
        valid = [measured("incumbent", 500, auc=0.7), measured("newcomer", 30, became=2, auc=0.9)]
        assert only(BestPerformerRouter("auc").plan(valid)).release_version == "newcomer"
        eager = BestPerformerRouter("auc", min_samples=1)
        valid[1] = measured("newcomer", 1, became=2, auc=0.9)
        assert only(eager.plan(valid)).release_version == "newcomer"

    def test_best_performer_shares_by_phase_in_while_nothing_is_known(self) -> None:
        valid = [measured("a", 29, pct=100, auc=0.1), measured("b", 3, pct=50, auc=0.9)]
        a, b = (s.fqrv for s in valid)
        assert_shares(BestPerformerRouter("auc").plan(valid), {a: 2 / 3, b: 1 / 3})

    def test_epsilon_greedy_explores_a_servable_below_min_samples(self) -> None:
        valid = [measured("known", 500, auc=0.7), measured("lucky", 1, became=2, auc=1.0)]
        known, lucky = (s.fqrv for s in valid)
        plan = EpsilonGreedyRouter("auc", 0.2).plan(valid)
        # the lucky one is not the best, but keeps its ε/k: it still gets traffic
        assert_shares(plan, {known: 0.9, lucky: 0.1})
        assert lucky in observed_shares(plan)

    def test_epsilon_greedy_at_min_samples_exploits_the_newcomer(self) -> None:
        valid = [measured("known", 500, auc=0.7), measured("newcomer", 30, became=2, auc=1.0)]
        known, newcomer = (s.fqrv for s in valid)
        assert_shares(EpsilonGreedyRouter("auc", 0.2).plan(valid), {newcomer: 0.9, known: 0.1})

    def test_thompson_below_min_samples_has_the_prior_and_is_explored(self) -> None:
        lucky = rewards("lucky", 29, 0, became=2)  # 29 straight successes, one short
        valid = [rewards("known", 700, 300), lucky]
        plan = ThompsonSamplingRouter().plan(valid)
        assert isinstance(plan, ThompsonPlan)
        posteriors = dict(zip(plan.fqrvs, zip(plan.alphas, plan.betas, strict=True), strict=True))
        assert posteriors[lucky.fqrv] == (1.0, 1.0)
        assert posteriors[valid[0].fqrv] == (701.0, 301.0)
        # a uniform draw beats ~0.7 about 30% of the time: it keeps getting traffic
        exact = p_greater((1, 1), (701, 301))
        assert plan.shares()[lucky.fqrv] == pytest.approx(exact, abs=ESTIMATE_TOLERANCE)
        assert observed_shares(plan)[lucky.fqrv] > 0.25

    def test_thompson_at_min_samples_the_rewards_count(self) -> None:
        valid = [rewards("known", 700, 300), rewards("newcomer", 30, 0, became=2)]
        plan = ThompsonSamplingRouter().plan(valid)
        assert isinstance(plan, ThompsonPlan)
        assert plan.shares()[valid[1].fqrv] > 0.99


class TestOnlyValidServablesAreCandidates:
    @pytest.mark.parametrize(
        "router",
        [BestPerformerRouter("auc"), EpsilonGreedyRouter("auc", 1.0), ThompsonSamplingRouter()],
        ids=lambda r: type(r).__name__,
    )
    def test_invalid_and_expired_servables_get_nothing(self, router: Router) -> None:
        # the shadow is the best by far but never valid; "expired" is the best valid one but
        # KeepTopRanked(1) on another metric retires it before routing
        best = {"auc": 0.99, REWARD_SUCCESSES: 1000.0, REWARD_FAILURES: 0.0, "keep": 0.0}
        good = {"auc": 0.9, REWARD_SUCCESSES: 900.0, REWARD_FAILURES: 100.0, "keep": 1.0}
        settings_ = ContractSettings(KeepTopRanked(1, "keep"), router)
        servables = [
            (make_metrics("shadow", performance_metrics=best), make_policy(NeverValid())),
            (make_metrics("expired", performance_metrics=best), make_policy()),
            (make_metrics("kept", performance_metrics=good), make_policy()),
        ]
        plan = evaluate_contract(settings_, servables, now_ms=1_000).plan
        assert only(plan).release_version == "kept"


# --- wire forms ------------------------------------------------------------------------------

ROUTERS: list[tuple[Router, dict[str, Any]]] = [
    (
        BestPerformerRouter(ACCURACY),
        {"BestPerformerRouter": {"metric": "accuracy", "ordering": "DESC", "minSamples": 30}},
    ),
    (
        BestPerformerRouter(MAE, Ordering.ASC, min_samples=100),
        {"BestPerformerRouter": {"metric": "mae", "ordering": "ASC", "minSamples": 100}},
    ),
    (
        EpsilonGreedyRouter(ACCURACY),
        {
            "EpsilonGreedyRouter": {
                "metric": "accuracy",
                "epsilon": 0.1,
                "ordering": "DESC",
                "minSamples": 30,
            }
        },
    ),
    (
        EpsilonGreedyRouter("logLoss", 0.25, Ordering.ASC, min_samples=1),
        {
            "EpsilonGreedyRouter": {
                "metric": "logLoss",
                "epsilon": 0.25,
                "ordering": "ASC",
                "minSamples": 1,
            }
        },
    ),
    (
        ThompsonSamplingRouter(),
        {"ThompsonSamplingRouter": {"priorSuccesses": 1.0, "priorFailures": 1.0, "minSamples": 30}},
    ),
    (
        ThompsonSamplingRouter(0.5, 2.0, 7),
        {"ThompsonSamplingRouter": {"priorSuccesses": 0.5, "priorFailures": 2.0, "minSamples": 7}},
    ),
]


def type_form(wrapped: Mapping[str, Any]) -> dict[str, Any]:
    ((name, body),) = wrapped.items()
    return {"type": name, **body}


def snake_case(body: Mapping[str, Any]) -> dict[str, Any]:
    return {
        re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", key).lower(): value for key, value in body.items()
    }


min_samples = st.integers(min_value=1, max_value=2**63 - 1)

performance_routers: st.SearchStrategy[Router] = st.one_of(
    st.builds(BestPerformerRouter, names, orderings, min_samples),
    st.builds(
        EpsilonGreedyRouter, names, st.floats(min_value=0, max_value=1), orderings, min_samples
    ),
    st.builds(
        ThompsonSamplingRouter,
        st.floats(min_value=1e-6, max_value=1e6),
        st.floats(min_value=1e-6, max_value=1e6),
        min_samples,
    ),
)


class TestWireForms:
    @pytest.mark.parametrize(("router", "wire"), ROUTERS, ids=lambda v: str(v)[:40])
    def test_encode_emits_the_wrapper_form_in_camel_case(
        self, router: Router, wire: dict[str, Any]
    ) -> None:
        assert encode(router) == wire

    @pytest.mark.parametrize(("router", "wire"), ROUTERS, ids=lambda v: str(v)[:40])
    def test_decode_accepts_both_forms_and_both_spellings(
        self, router: Router, wire: dict[str, Any]
    ) -> None:
        ((name, body),) = wire.items()
        assert decode(Router, wire) == router
        assert decode(Router, type_form(wire)) == router
        assert decode(Router, {name: snake_case(body)}) == router
        assert decode(Router, {"type": name, **snake_case(body)}) == router
        assert decode(Router, json.loads(json.dumps(encode(router)))) == router

    @pytest.mark.parametrize(("router", "wire"), ROUTERS, ids=lambda v: str(v)[:40])
    def test_inside_contract_settings(self, router: Router, wire: dict[str, Any]) -> None:
        value = ContractSettings(KeepLatest(3), router)
        encoded = encode(value)
        assert encoded["router"] == wire
        assert decode(ContractSettings, encoded) == value
        assert decode(ContractSettings, {**encoded, "router": type_form(wire)}) == value

    def test_defaults_fill_absent_fields(self) -> None:
        assert decode(Router, {"EpsilonGreedyRouter": {"metric": "auc"}}) == EpsilonGreedyRouter(
            "auc", 0.1, Ordering.DESC
        )
        assert decode(
            Router, {"type": "BestPerformerRouter", "metric": "auc", "ordering": "asc"}
        ) == (BestPerformerRouter("auc", Ordering.ASC))
        for data in (
            "ThompsonSamplingRouter",
            {"ThompsonSamplingRouter": None},
            {"type": "thompsonSamplingRouter"},
        ):
            assert decode(Router, data) == ThompsonSamplingRouter(1.0, 1.0)

    def test_metric_is_required(self) -> None:
        with pytest.raises(InvalidField, match="field required") as caught:
            decode(ContractSettings, {"router": "BestPerformerRouter"})
        assert caught.value.field == "router.BestPerformerRouter.metric"

    @pytest.mark.parametrize(
        ("router", "field"),
        [
            (
                {"EpsilonGreedyRouter": {"metric": "auc", "epsilon": 1.5}},
                "router.EpsilonGreedyRouter.epsilon",
            ),
            ({"type": "EpsilonGreedyRouter", "metric": "auc", "epsilon": -1}, "router.epsilon"),
            (
                {"ThompsonSamplingRouter": {"priorFailures": 0}},
                "router.ThompsonSamplingRouter.priorFailures",
            ),
            ({"type": "ThompsonSamplingRouter", "prior_successes": -2}, "router.priorSuccesses"),
            ({"BestPerformerRouter": {"metric": ""}}, "router.BestPerformerRouter.metric"),
            (
                {"BestPerformerRouter": {"metric": "auc", "minSamples": 0}},
                "router.BestPerformerRouter.minSamples",
            ),
            (
                {"EpsilonGreedyRouter": {"metric": "auc", "min_samples": -1}},
                "router.EpsilonGreedyRouter.minSamples",
            ),
            ({"type": "ThompsonSamplingRouter", "minSamples": 0}, "router.minSamples"),
            (
                {"ThompsonSamplingRouter": {"minSamples": 2.5}},
                "router.ThompsonSamplingRouter.minSamples",
            ),
            (
                {"ThompsonSamplingRouter": {"minSamples": "lots"}},
                "router.ThompsonSamplingRouter.minSamples",
            ),
            (
                {"BestPerformerRouter": {"metric": "auc", "minSamples": True}},
                "router.BestPerformerRouter.minSamples",
            ),
        ],
    )
    def test_validation_errors_name_the_wire_field(self, router: Any, field: str) -> None:
        with pytest.raises(InvalidField) as caught:
            decode(ContractSettings, {"router": router})
        assert caught.value.field == field

    def test_epsilon_must_be_a_number(self) -> None:
        with pytest.raises(InvalidField, match="expected a number") as caught:
            decode(Router, {"EpsilonGreedyRouter": {"metric": "auc", "epsilon": "often"}})
        assert caught.value.field == "EpsilonGreedyRouter.epsilon"

    @settings(max_examples=150)
    @given(performance_routers)
    def test_round_trip(self, router: Router) -> None:
        wire = json.loads(json.dumps(encode(router)))
        assert decode(Router, wire) == router
        assert decode(Router, type_form(wire)) == router
        ((name, body),) = wire.items()
        assert decode(Router, {name: snake_case(body)}) == router
