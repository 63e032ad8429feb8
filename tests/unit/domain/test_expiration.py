from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forestflow.domain.expiration import ExpirationPolicy, KeepLatest, KeepTopRanked
from forestflow.domain.fqrv import FQRV
from forestflow.domain.metrics import Ordering, ServableMetrics
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

    def test_desc_missing_metric_counts_as_zero(self) -> None:
        servables = [scored("negative", -0.5), scored("missing", None), scored("positive", 0.1)]
        assert releases(dataclasses.replace(TOP_AUC, servables_to_keep=2).expired(servables)) == {
            "negative"
        }

    def test_desc_missing_ties_with_zero_then_phase_in_decides(self) -> None:
        servables = [scored("zero", 0.0, phase=40), scored("missing", None, phase=60)]
        assert releases(TOP_AUC.expired(servables)) == {"zero"}
        servables = [scored("zero", 0.0, phase=60), scored("missing", None, phase=40)]
        assert releases(TOP_AUC.expired(servables)) == {"missing"}

    def test_asc_missing_metric_is_the_worst(self) -> None:
        servables = [
            scored("missing", None, phase=100, became=9),
            scored("huge", 1e300, phase=1, became=1),
        ]
        assert releases(TOP_MAE.expired(servables)) == {"missing"}

    def test_nan_counts_as_missing(self) -> None:
        servables = [scored("nan", math.nan), scored("low", 0.1), scored("high", 0.9)]
        for order in (servables, servables[::-1], servables[1:] + servables[:1]):
            assert releases(TOP_AUC.expired(order)) == {"nan", "low"}
            assert releases(TOP_MAE.expired(order)) == {"nan", "high"}

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


# --- properties -------------------------------------------------------------------------

metric_values = st.one_of(
    st.none(), st.just(math.nan), st.floats(-10, 10), st.sampled_from([0.0, 0.5, 1.0])
)


@st.composite
def valid_servables(draw: st.DrawFn) -> list[ServableMetrics]:
    """Valid servables with small value ranges, so that ties are frequent."""
    count = draw(st.integers(min_value=0, max_value=8))
    result = []
    for i in range(count):
        metric = draw(metric_values)
        result.append(
            make_metrics(
                f"v{i}",
                created_at_ms=draw(st.integers(0, 5)),
                became_valid_at_ms=draw(st.integers(0, 5)),
                current_phase_in_pct=draw(st.sampled_from([0, 50, 100])),
                performance_metrics={} if metric is None else {"m": metric},
            )
        )
    return result


Rank = Callable[[ServableMetrics], tuple[float, ...]]
"""A sort key where smaller is better, written from SPEC §1.5."""


def latest_rank(s: ServableMetrics) -> tuple[float, ...]:
    """Smaller is better: the SPEC's recency order."""
    assert s.became_valid_at_ms is not None
    return (-s.became_valid_at_ms, -s.created_at_ms)


def top_rank(ordering: Ordering) -> Rank:
    def rank(s: ServableMetrics) -> tuple[float, ...]:
        value = s.performance_metrics.get("m")
        if value is None or math.isnan(value):
            metric = 0.0 if ordering is Ordering.DESC else math.inf
        else:
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
        policy = KeepTopRanked(keep, "m", ordering)
        check_kept_outrank_expired(policy, servables, keep, top_rank(ordering))

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
            KeepTopRanked(keep, "m"),
            KeepTopRanked(keep, "m", Ordering.ASC),
        ):
            assert policy.expired(shuffled) == policy.expired(servables)

    def test_fqrvs_are_those_of_the_input(self) -> None:
        assert KeepLatest(1).expired([valid("v1", 1), valid("v2", 2)]) == frozenset(
            {make_fqrv("v1")}
        )
