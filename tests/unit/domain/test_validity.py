from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forestflow.domain.metrics import DEFAULT_PERFORMANCE_METRIC, Ordering, ServableMetrics
from forestflow.domain.validity import (
    ImmediatelyValid,
    MinServedEventsBasedValidity,
    NeverValid,
    PerformanceBasedValidity,
    TimeBasedValidity,
    ValidityRule,
    all_valid,
)
from forestflow.errors import InvalidField
from tests.builders import make_metrics, servable_metrics, validity_rules

NOW = 1_700_000_000_000
FRESH = make_metrics()


class TestRegistry:
    def test_every_spec_rule_is_registered_under_its_wire_name(self) -> None:
        assert ValidityRule.registry.names() == [
            "ImmediatelyValid",
            "MinServedEventsBasedValidity",
            "NeverValid",
            "PerformanceBasedValidity",
            "TimeBasedValidity",
        ]
        assert ValidityRule.registry.get("TimeBasedValidity") is TimeBasedValidity
        assert TimeBasedValidity.wire_name == "TimeBasedValidity"


class TestImmediatelyValid:
    @given(servable_metrics, st.integers())
    def test_always_holds(self, metrics: ServableMetrics, now_ms: int) -> None:
        assert ImmediatelyValid().is_valid(metrics, now_ms)


class TestNeverValid:
    @given(servable_metrics, st.integers())
    def test_never_holds(self, metrics: ServableMetrics, now_ms: int) -> None:
        assert not NeverValid().is_valid(metrics, now_ms)


class TestTimeBasedValidity:
    RULE = TimeBasedValidity(valid_after_ms=NOW)

    def test_not_valid_before(self) -> None:
        assert not self.RULE.is_valid(FRESH, NOW - 1)

    def test_valid_from_the_instant_on(self) -> None:
        assert self.RULE.is_valid(FRESH, NOW)
        assert self.RULE.is_valid(FRESH, NOW + 1)

    @given(
        st.integers(min_value=0, max_value=2**62), st.integers(min_value=-(2**62), max_value=2**62)
    )
    def test_holds_exactly_when_now_reaches_valid_after(self, valid_after: int, delta: int) -> None:
        rule = TimeBasedValidity(valid_after)
        assert rule.is_valid(FRESH, valid_after + delta) is (delta >= 0)

    def test_ignores_metrics(self) -> None:
        busy = dataclasses.replace(FRESH, shade_count=10**6, performance_metrics={"accuracy": 1.0})
        assert not self.RULE.is_valid(busy, NOW - 1)


class TestMinServedEventsBasedValidity:
    RULE = MinServedEventsBasedValidity(valid_after_min_served_events=100)

    def test_counts_shadow_events(self) -> None:
        assert not self.RULE.is_valid(dataclasses.replace(FRESH, shade_count=99), NOW)
        assert self.RULE.is_valid(dataclasses.replace(FRESH, shade_count=100), NOW)
        assert self.RULE.is_valid(dataclasses.replace(FRESH, shade_count=101), NOW)

    def test_served_requests_do_not_count(self) -> None:
        assert not self.RULE.is_valid(dataclasses.replace(FRESH, score_count=10**6), NOW)

    def test_zero_holds_at_once(self) -> None:
        assert MinServedEventsBasedValidity(0).is_valid(FRESH, NOW)

    def test_refuses_negative(self) -> None:
        with pytest.raises(InvalidField) as caught:
            MinServedEventsBasedValidity(-1)
        assert caught.value.field == "validAfterMinServedEvents"


class TestPerformanceBasedValidity:
    def test_desc_needs_at_least_the_threshold(self) -> None:
        rule = PerformanceBasedValidity(min_threshold=0.8, metric="auc")
        assert rule.ordering is Ordering.DESC
        for value, expected in [(0.79, False), (0.8, True), (0.95, True)]:
            metrics = dataclasses.replace(FRESH, performance_metrics={"auc": value})
            assert rule.is_valid(metrics, NOW) is expected, value

    def test_asc_needs_at_most_the_threshold(self) -> None:
        rule = PerformanceBasedValidity(min_threshold=3.5, metric="mae", ordering=Ordering.ASC)
        for value, expected in [(3.0, True), (3.5, True), (3.51, False)]:
            metrics = dataclasses.replace(FRESH, performance_metrics={"mae": value})
            assert rule.is_valid(metrics, NOW) is expected, value

    @pytest.mark.parametrize("ordering", list(Ordering))
    def test_missing_metric_is_not_valid(self, ordering: Ordering) -> None:
        rule = PerformanceBasedValidity(min_threshold=-math.inf, metric="auc", ordering=ordering)
        other = dataclasses.replace(FRESH, performance_metrics={"accuracy": 1.0})
        assert not rule.is_valid(FRESH, NOW)
        assert not rule.is_valid(other, NOW)

    def test_nan_metric_is_not_valid(self) -> None:
        metrics = dataclasses.replace(FRESH, performance_metrics={"auc": math.nan})
        for ordering in Ordering:
            assert not PerformanceBasedValidity(0.0, "auc", ordering).is_valid(metrics, NOW)

    def test_metric_defaults_to_the_documented_server_wide_name(self) -> None:
        rule = PerformanceBasedValidity(min_threshold=0.5)
        assert rule.metric == DEFAULT_PERFORMANCE_METRIC == "accuracy"
        good = dataclasses.replace(FRESH, performance_metrics={"accuracy": 0.6})
        assert rule.is_valid(good, NOW)

    @given(st.floats(allow_nan=False), st.floats(allow_nan=False), st.sampled_from(Ordering))
    def test_matches_the_comparison(
        self, value: float, threshold: float, ordering: Ordering
    ) -> None:
        metrics = dataclasses.replace(FRESH, performance_metrics={"m": value})
        expected = value >= threshold if ordering is Ordering.DESC else value <= threshold
        assert PerformanceBasedValidity(threshold, "m", ordering).is_valid(metrics, NOW) is expected


class TestAllValid:
    HOLDS = TimeBasedValidity(0)
    FAILS = TimeBasedValidity(NOW + 1)

    def test_all_must_hold(self) -> None:
        assert all_valid([self.HOLDS, MinServedEventsBasedValidity(0)], FRESH, NOW)
        assert not all_valid([self.HOLDS, self.FAILS], FRESH, NOW)
        assert not all_valid([self.FAILS, self.HOLDS], FRESH, NOW)

    def test_empty_list_is_vacuously_valid(self) -> None:
        assert all_valid([], FRESH, NOW)

    def test_immediately_valid_overrides_failing_rules(self) -> None:
        assert all_valid([self.FAILS, ImmediatelyValid()], FRESH, NOW)
        assert all_valid([ImmediatelyValid(), PerformanceBasedValidity(0.9)], FRESH, NOW)

    def test_never_valid_overrides_immediately_valid(self) -> None:
        assert not all_valid([ImmediatelyValid(), NeverValid()], FRESH, NOW)
        assert not all_valid([NeverValid(), ImmediatelyValid()], FRESH, NOW)

    def test_never_valid_overrides_holding_rules(self) -> None:
        assert not all_valid([self.HOLDS, NeverValid()], FRESH, NOW)

    @given(
        st.lists(validity_rules, max_size=5),
        servable_metrics,
        st.integers(min_value=0, max_value=2**63),
    )
    def test_combination_rule(
        self, rules: list[ValidityRule], metrics: ServableMetrics, now_ms: int
    ) -> None:
        if any(isinstance(r, NeverValid) for r in rules):
            expected = False
        elif any(isinstance(r, ImmediatelyValid) for r in rules):
            expected = True
        else:
            expected = all(r.is_valid(metrics, now_ms) for r in rules)
        assert all_valid(rules, metrics, now_ms) is expected
