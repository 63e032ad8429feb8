from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forestflow.domain.codec import decode, encode
from forestflow.domain.expiration import ExpirationPolicy, KeepLatest, KeepTopRanked
from forestflow.domain.fqrv import FQRV
from forestflow.domain.metrics import DEFAULT_MIN_SAMPLES, Ordering, ServableMetrics, samples_name
from forestflow.domain.settings import ContractSettings
from forestflow.errors import InvalidField
from tests.builders import make_fqrv, make_metrics

KEEP_TWO = KeepLatest(servables_to_keep=2)
TOP_AUC = KeepTopRanked(servables_to_keep=1, metric_to_evaluate="auc")
TOP_MAE = dataclasses.replace(TOP_AUC, metric_to_evaluate="mae", ordering=Ordering.ASC)


def valid(release: str, became: int, **overrides: object) -> ServableMetrics:
    """A valid servable that became valid at `became` (created then too, unless overridden)."""
    fields: dict[str, object] = {"created_at_ms": became, "current_phase_in_pct": 100}
    fields.update(overrides)
    return make_metrics(release, became_valid_at_ms=became, **fields)


def scored(
    release: str, metric: float | None, phase: int = 100, became: int = 0
) -> ServableMetrics:
    """A valid servable with `auc` and `mae` both set to `metric` (or neither when None)."""
    performance = {} if metric is None else {"auc": metric, "mae": metric}
    return valid(release, became, current_phase_in_pct=phase, performance_metrics=performance)


def releases(fqrvs: frozenset[FQRV]) -> set[str]:
    return {f.release_version for f in fqrvs}


class TestRegistry:
    def test_spec_policies_are_registered(self) -> None:
        assert ExpirationPolicy.registry.names() == ["KeepLatest", "KeepTopRanked"]


@pytest.mark.parametrize("policy", [KEEP_TWO, TOP_AUC])
class TestServablesToKeep:
    @pytest.mark.parametrize("keep", [0, -1])
    def test_refuses_less_than_one(self, policy: ExpirationPolicy, keep: int) -> None:
        with pytest.raises(InvalidField, match=">= 1") as caught:
            dataclasses.replace(policy, servables_to_keep=keep)  # type: ignore[type-var]
        assert caught.value.field == "servablesToKeep"

    def test_nothing_to_expire_among_no_servables(self, policy: ExpirationPolicy) -> None:
        assert policy.expired([]) == frozenset()

    def test_nothing_expires_while_within_the_limit(self, policy: ExpirationPolicy) -> None:
        assert policy.expired([valid("v1", 10)]) == frozenset()


class TestKeepLatest:
    def test_keeps_the_n_most_recently_valid(self) -> None:
        servables = [valid("v1", 100), valid("v3", 300), valid("v2", 200)]
        assert releases(KEEP_TWO.expired(servables)) == {"v1"}

    def test_orders_by_became_valid_not_by_creation(self) -> None:
        # v2 was created first but became valid last: it is the latest
        servables = [
            valid("v1", 100, created_at_ms=50),
            valid("v2", 300, created_at_ms=10),
            valid("v3", 200, created_at_ms=90),
        ]
        assert releases(KEEP_TWO.expired(servables)) == {"v1"}

    def test_became_valid_ties_go_to_the_later_created(self) -> None:
        servables = [valid("old", 100, created_at_ms=1), valid("new", 100, created_at_ms=2)]
        assert releases(KeepLatest(1).expired(servables)) == {"old"}

    def test_keep_one(self) -> None:
        servables = [valid("v1", 1), valid("v2", 2), valid("v3", 3)]
        assert releases(KeepLatest(1).expired(servables)) == {"v1", "v2"}

    def test_ignores_performance(self) -> None:
        servables = [scored("good", 0.99, became=1), scored("bad", 0.01, became=2)]
        assert releases(KeepLatest(1).expired(servables)) == {"good"}


class TestKeepTopRanked:
    def test_desc_keeps_the_highest(self) -> None:
        servables = [scored("a", 0.7), scored("b", 0.9), scored("c", 0.8)]
        assert releases(dataclasses.replace(TOP_AUC, servables_to_keep=2).expired(servables)) == {
            "a"
        }

    def test_asc_keeps_the_lowest(self) -> None:
        servables = [scored("a", 0.7), scored("b", 0.9), scored("c", 0.8)]
        assert releases(dataclasses.replace(TOP_MAE, servables_to_keep=2).expired(servables)) == {
            "b"
        }

    @pytest.mark.parametrize("policy", [TOP_AUC, TOP_MAE])
    def test_a_missing_metric_is_neither_ranked_out_nor_takes_a_place(
        self, policy: KeepTopRanked
    ) -> None:
        servables = [scored("missing", None, phase=1, became=1), scored("a", 0.5), scored("b", 0.6)]
        expired = releases(policy.expired(servables))
        assert "missing" not in expired
        assert len(expired) == 1  # the N = 1 place goes to the better of a and b

    def test_nan_is_unknown_too(self) -> None:
        servables = [scored("nan", math.nan), scored("low", 0.1), scored("high", 0.9)]
        for order in (servables, servables[::-1], servables[1:] + servables[:1]):
            assert releases(TOP_AUC.expired(order)) == {"low"}
            assert releases(TOP_MAE.expired(order)) == {"high"}

    def test_only_unknown_servables_expire_nothing(self) -> None:
        servables = [scored(f"v{i}", None, became=i) for i in range(5)]
        assert TOP_AUC.expired(servables) == frozenset()

    def test_ties_go_to_the_more_phased_in(self) -> None:
        servables = [
            scored("half", 0.9, phase=50, became=2),
            scored("full", 0.9, phase=100, became=1),
        ]
        assert releases(TOP_AUC.expired(servables)) == {"half"}

    def test_then_to_the_newer(self) -> None:
        servables = [scored("older", 0.9, became=1), scored("newer", 0.9, became=2)]
        assert releases(TOP_AUC.expired(servables)) == {"older"}
        same_time = [
            valid("first", 5, created_at_ms=1, performance_metrics={"auc": 0.9}),
            valid("second", 5, created_at_ms=2, performance_metrics={"auc": 0.9}),
        ]
        assert releases(TOP_AUC.expired(same_time)) == {"first"}

    def test_metric_wins_over_phase_in_and_age(self) -> None:
        servables = [
            scored("better", 0.91, phase=1, became=1),
            scored("worse", 0.9, phase=100, became=9),
        ]
        assert releases(TOP_AUC.expired(servables)) == {"worse"}

    def test_other_metrics_are_ignored(self) -> None:
        servables = [
            valid("a", 1, performance_metrics={"auc": 0.5, "accuracy": 0.99}),
            valid("b", 2, performance_metrics={"auc": 0.6, "accuracy": 0.01}),
        ]
        assert releases(TOP_AUC.expired(servables)) == {"a"}


def sampled(release: str, auc: float, samples: int, became: int = 0) -> ServableMetrics:
    """A valid servable whose `auc` rests on `samples` joined samples (as feedback keeps it)."""
    performance = {"auc": auc, samples_name("auc"): float(samples)}
    return valid(release, became, performance_metrics=performance)


class TestKeepTopRankedMinSamples:
    """Issue 11: a metric on fewer than `minSamples` joined samples decides nothing."""

    def test_defaults_to_the_documented_thirty(self) -> None:
        assert TOP_AUC.min_samples == DEFAULT_MIN_SAMPLES == 30

    def test_one_record_does_not_rank_out_the_incumbent(self) -> None:
        # v1 is known and mediocre; v2 has one lucky record
        servables = [sampled("v1", 0.7, 500, became=1), sampled("v2", 1.0, 1, became=2)]
        assert TOP_AUC.expired(servables) == frozenset()

    def test_one_record_does_not_get_ranked_out_either(self) -> None:
        servables = [sampled("v1", 0.9, 500, became=1), sampled("v2", 0.0, 1, became=2)]
        assert TOP_AUC.expired(servables) == frozenset()

    def test_just_below_min_samples_decides_nothing(self) -> None:
        servables = [sampled("v1", 0.7, 500, became=1), sampled("v2", 0.9, 29, became=2)]
        assert TOP_AUC.expired(servables) == frozenset()

    def test_at_min_samples_the_ranking_decides(self) -> None:
        servables = [sampled("v1", 0.7, 500, became=1), sampled("v2", 0.9, 30, became=2)]
        assert releases(TOP_AUC.expired(servables)) == {"v1"}
        servables = [sampled("v1", 0.9, 500, became=1), sampled("v2", 0.7, 30, became=2)]
        assert releases(TOP_AUC.expired(servables)) == {"v2"}

    def test_unknown_servables_do_not_take_any_of_the_n_places(self) -> None:
        policy = dataclasses.replace(TOP_AUC, servables_to_keep=2)
        servables = [
            sampled("known-best", 0.9, 100),
            sampled("known-mid", 0.8, 100),
            sampled("known-worst", 0.7, 100),
            sampled("new", 1.0, 3, became=5),
        ]
        assert releases(policy.expired(servables)) == {"known-worst"}

    def test_its_own_min_samples(self) -> None:
        eager = dataclasses.replace(TOP_AUC, min_samples=1)
        servables = [sampled("v1", 0.7, 500, became=1), sampled("v2", 0.9, 1, became=2)]
        assert releases(eager.expired(servables)) == {"v1"}

    def test_an_external_metric_without_a_count_decides(self) -> None:
        # PUT …/metrics without `aucSamples`: the evaluator vouches for it
        servables = [sampled("v1", 0.7, 500, became=1), scored("v2", 0.9, became=2)]
        assert releases(TOP_AUC.expired(servables)) == {"v1"}

    @pytest.mark.parametrize("bad", [0, -1, 1.5, True])
    def test_refuses_anything_but_an_integer_of_at_least_one(self, bad: object) -> None:
        with pytest.raises(InvalidField, match=">= 1") as caught:
            dataclasses.replace(TOP_AUC, min_samples=bad)  # type: ignore[arg-type]
        assert caught.value.field == "minSamples"


class TestKeepTopRankedWireForm:
    def test_min_samples_is_shown_and_read_back(self) -> None:
        policy = KeepTopRanked(1, "mae", Ordering.ASC, min_samples=5)
        assert encode(policy) == {
            "KeepTopRanked": {
                "servablesToKeep": 1,
                "metricToEvaluate": "mae",
                "ordering": "ASC",
                "minSamples": 5,
            }
        }
        assert decode(ExpirationPolicy, encode(policy)) == policy

    def test_accepts_both_spellings_and_defaults_when_absent(self) -> None:
        body = {"servablesToKeep": 1, "metricToEvaluate": "auc"}
        assert decode(ExpirationPolicy, {"KeepTopRanked": body}).min_samples == 30  # type: ignore[attr-defined]
        for name in ("minSamples", "min_samples"):
            decoded = decode(ExpirationPolicy, {"type": "KeepTopRanked", **body, name: 7})
            assert decoded == KeepTopRanked(1, "auc", min_samples=7)

    @pytest.mark.parametrize("bad", [0, -3, "many", 2.5, True, None])
    def test_invalid_values_name_the_field(self, bad: object) -> None:
        body = {
            "KeepTopRanked": {"servablesToKeep": 1, "metricToEvaluate": "auc", "minSamples": bad}
        }
        with pytest.raises(InvalidField) as caught:
            decode(ContractSettings, {"expirationPolicy": body})
        assert caught.value.field == "expirationPolicy.KeepTopRanked.minSamples"


# --- properties -------------------------------------------------------------------------

metric_values = st.one_of(
    st.none(), st.just(math.nan), st.floats(-10, 10), st.sampled_from([0.0, 0.5, 1.0])
)
sample_counts = st.one_of(st.none(), st.integers(0, 4))
"""`mSamples`: absent (an external metric) or a few, around the properties' `minSamples` of 2."""
PROPERTY_MIN_SAMPLES = 2


@st.composite
def valid_servables(draw: st.DrawFn) -> list[ServableMetrics]:
    """Valid servables with small value ranges, so that ties are frequent."""
    count = draw(st.integers(min_value=0, max_value=8))
    result = []
    for i in range(count):
        metric = draw(metric_values)
        samples = draw(sample_counts)
        performance = {} if metric is None else {"m": metric}
        if samples is not None:
            performance[samples_name("m")] = float(samples)
        result.append(
            make_metrics(
                f"v{i}",
                created_at_ms=draw(st.integers(0, 5)),
                became_valid_at_ms=draw(st.integers(0, 5)),
                current_phase_in_pct=draw(st.sampled_from([0, 50, 100])),
                performance_metrics=performance,
            )
        )
    return result


Rank = Callable[[ServableMetrics], tuple[float, ...]]
"""A sort key where smaller is better, written from SPEC §1.5."""


def latest_rank(s: ServableMetrics) -> tuple[float, ...]:
    """Smaller is better: the SPEC's recency order."""
    assert s.became_valid_at_ms is not None
    return (-s.became_valid_at_ms, -s.created_at_ms)


def known(s: ServableMetrics) -> bool:
    """Written from issue 11: the metric is there, a number, on enough samples (if counted)."""
    value = s.performance_metrics.get("m")
    samples = s.performance_metrics.get(samples_name("m"), math.inf)
    return value is not None and not math.isnan(value) and samples >= PROPERTY_MIN_SAMPLES


def top_rank(ordering: Ordering) -> Rank:
    def rank(s: ServableMetrics) -> tuple[float, ...]:
        value = s.performance_metrics["m"]
        metric = value if ordering is Ordering.ASC else -value
        assert s.became_valid_at_ms is not None
        return (metric, -s.current_phase_in_pct, -s.became_valid_at_ms, -s.created_at_ms)

    return rank


def check_kept_outrank_expired(
    policy: ExpirationPolicy, servables: list[ServableMetrics], keep: int, rank: Rank
) -> None:
    expired = policy.expired(servables)
    assert expired <= {s.fqrv for s in servables}
    kept = [s for s in servables if s.fqrv not in expired]
    gone = [s for s in servables if s.fqrv in expired]
    assert len(kept) == min(keep, len(servables))
    for k in kept:
        for e in gone:
            assert rank(k) <= rank(e), (k, e)


class TestExpirationProperties:
    @given(valid_servables(), st.integers(min_value=1, max_value=10))
    def test_keep_latest(self, servables: list[ServableMetrics], keep: int) -> None:
        check_kept_outrank_expired(KeepLatest(keep), servables, keep, latest_rank)

    @given(valid_servables(), st.integers(min_value=1, max_value=10), st.sampled_from(Ordering))
    def test_keep_top_ranked(
        self, servables: list[ServableMetrics], keep: int, ordering: Ordering
    ) -> None:
        policy = KeepTopRanked(keep, "m", ordering, min_samples=PROPERTY_MIN_SAMPLES)
        ranked = [s for s in servables if known(s)]
        check_kept_outrank_expired(policy, ranked, keep, top_rank(ordering))
        # unknown servables are never expired, and the known ones expire as if alone
        assert policy.expired(servables) == policy.expired(ranked)

    @given(
        valid_servables(), st.integers(min_value=1, max_value=10), st.randoms(use_true_random=False)
    )
    def test_result_does_not_depend_on_input_order(
        self, servables: list[ServableMetrics], keep: int, rng: random.Random
    ) -> None:
        shuffled = list(servables)
        rng.shuffle(shuffled)
        for policy in (
            KeepLatest(keep),
            KeepTopRanked(keep, "m", min_samples=PROPERTY_MIN_SAMPLES),
            KeepTopRanked(keep, "m", Ordering.ASC, min_samples=PROPERTY_MIN_SAMPLES),
        ):
            assert policy.expired(shuffled) == policy.expired(servables)

    def test_fqrvs_are_those_of_the_input(self) -> None:
        assert KeepLatest(1).expired([valid("v1", 1), valid("v2", 2)]) == frozenset(
            {make_fqrv("v1")}
        )
