from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forestflow.domain.codec import decode, encode
from forestflow.domain.metrics import (
    DEFAULT_MIN_SAMPLES,
    DEFAULT_PERFORMANCE_METRIC,
    Ordering,
    ServableMetrics,
    samples_name,
)
from forestflow.domain.settings import PolicySettings
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


# what the servable was before this pass (`ServableMetrics.last_valid`, `becameValidAtMS`)
NEVER_VALID: dict[str, Any] = {"last_valid": None, "became_valid_at_ms": None}
WAS_INVALID: dict[str, Any] = {"last_valid": False, "became_valid_at_ms": None}
WAS_VALID: dict[str, Any] = {"last_valid": True, "became_valid_at_ms": NOW - 1}
DEMOTED: dict[str, Any] = {"last_valid": False, "became_valid_at_ms": NOW - 1}


def with_mae(mae: float, samples: int, **overrides: Any) -> ServableMetrics:
    """A servable whose `mae` rests on `samples` joined samples, as the feedback loop keeps it."""
    performance = {"mae": mae, samples_name("mae"): float(samples)}
    return dataclasses.replace(FRESH, performance_metrics=performance, **overrides)


class TestPerformanceBasedValidityMinSamples:
    """Issue 11: until the metric rests on `minSamples` joined samples, validity stays as it was."""

    RULE = PerformanceBasedValidity(min_threshold=5.0, metric="mae", ordering=Ordering.ASC)

    def test_defaults_to_the_documented_thirty(self) -> None:
        assert self.RULE.min_samples == DEFAULT_MIN_SAMPLES == 30

    @pytest.mark.parametrize("before", [NEVER_VALID, WAS_INVALID, DEMOTED])
    def test_one_good_record_does_not_promote(self, before: dict[str, Any]) -> None:
        assert not self.RULE.is_valid(with_mae(0.1, 1, **before), NOW)
        assert not self.RULE.is_valid(with_mae(0.1, 29, **before), NOW)

    def test_one_bad_record_does_not_demote(self) -> None:
        assert self.RULE.is_valid(with_mae(99.0, 1, **WAS_VALID), NOW)
        assert self.RULE.is_valid(with_mae(99.0, 29, **WAS_VALID), NOW)

    @pytest.mark.parametrize("before", [NEVER_VALID, WAS_INVALID, WAS_VALID, DEMOTED])
    def test_at_min_samples_the_metric_decides(self, before: dict[str, Any]) -> None:
        assert self.RULE.is_valid(with_mae(4.9, 30, **before), NOW)
        assert not self.RULE.is_valid(with_mae(5.1, 30, **before), NOW)
        assert self.RULE.is_valid(with_mae(4.9, 1_000, **before), NOW)

    def test_no_metric_yet_is_not_valid_for_a_servable_not_yet_valid(self) -> None:
        assert not self.RULE.is_valid(FRESH, NOW)

    def test_a_valid_servable_is_not_demoted_while_its_metric_is_missing(self) -> None:
        # e.g. an ImmediatelyValid servable whose policy becomes performance-based
        assert self.RULE.is_valid(dataclasses.replace(FRESH, **WAS_VALID), NOW)

    def test_before_the_first_pass_as_it_was_means_ever_valid(self) -> None:
        # just recovered: the last pass is unknown, becameValidAtMS is durable
        recovered = {"last_valid": None, "became_valid_at_ms": NOW - 1}
        assert self.RULE.is_valid(with_mae(99.0, 1, **recovered), NOW)
        assert not self.RULE.is_valid(with_mae(0.1, 1, **NEVER_VALID), NOW)

    def test_its_own_min_samples(self) -> None:
        eager = dataclasses.replace(self.RULE, min_samples=1)
        assert eager.is_valid(with_mae(0.1, 1), NOW)
        assert not eager.is_valid(with_mae(9.0, 1, **WAS_VALID), NOW)

    def test_an_external_metric_without_a_count_decides_at_once(self) -> None:
        metrics = dataclasses.replace(FRESH, performance_metrics={"mae": 0.1})
        assert self.RULE.is_valid(metrics, NOW)

    def test_a_count_set_by_an_external_evaluator_applies_too(self) -> None:
        assert not self.RULE.is_valid(with_mae(0.1, 10), NOW)

    def test_a_nan_count_is_too_few(self) -> None:
        performance = {"mae": 0.1, samples_name("mae"): math.nan}
        assert not self.RULE.is_valid(
            dataclasses.replace(FRESH, performance_metrics=performance), NOW
        )

    def test_only_the_rules_own_metric_counts(self) -> None:
        performance = {"mae": 0.1, samples_name("mae"): 1.0, samples_name("rmse"): 500.0}
        assert not self.RULE.is_valid(
            dataclasses.replace(FRESH, performance_metrics=performance), NOW
        )

    @pytest.mark.parametrize("bad", [0, -1, 2.5, True])
    def test_refuses_anything_but_an_integer_of_at_least_one(self, bad: object) -> None:
        with pytest.raises(InvalidField, match=">= 1") as caught:
            dataclasses.replace(self.RULE, min_samples=bad)  # type: ignore[arg-type]
        assert caught.value.field == "minSamples"

    def test_shown_and_read_back(self) -> None:
        rule = dataclasses.replace(self.RULE, min_samples=7)
        assert encode(rule) == {
            "PerformanceBasedValidity": {
                "minThreshold": 5.0,
                "metric": "mae",
                "ordering": "ASC",
                "minSamples": 7,
            }
        }
        assert decode(ValidityRule, encode(rule)) == rule
        assert decode(ValidityRule, {"type": "PerformanceBasedValidity", "minThreshold": 1}) == (
            PerformanceBasedValidity(1.0)
        )
        snake = {"PerformanceBasedValidity": {"min_threshold": 1, "min_samples": 3}}
        assert decode(ValidityRule, snake) == PerformanceBasedValidity(1.0, min_samples=3)

    @pytest.mark.parametrize("bad", [0, -3, "many", 2.5, False, None])
    def test_invalid_values_name_the_field(self, bad: object) -> None:
        body = {
            "validityPolicy": [{"PerformanceBasedValidity": {"minThreshold": 1, "minSamples": bad}}]
        }
        with pytest.raises(InvalidField) as caught:
            decode(PolicySettings, body, path="policySettings")
        assert (
            caught.value.field
            == "policySettings.validityPolicy[0].PerformanceBasedValidity.minSamples"
        )


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
