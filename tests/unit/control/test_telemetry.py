"""Telemetry accumulators: Prometheus bucket semantics, outcomes by error kind."""

from __future__ import annotations

import asyncio
import math

import pytest

from forestflow.control.telemetry import (
    BATCH_SIZE_BUCKETS,
    CANCELLED,
    INTERNAL,
    OK,
    Histogram,
    Outcomes,
    RequestTelemetry,
    outcome_of,
)
from forestflow.errors import InferenceRequestInvalidError, ModelFailedError, UnknownServable


class TestHistogram:
    def test_a_value_falls_in_the_first_bucket_whose_bound_is_at_least_it(self) -> None:
        values = Histogram((1.0, 2.0))
        for value in (0.5, 1.0, 1.5, 2.0, 3.0):
            values.observe(value)
        assert values.counts == [2, 2, 1]
        assert values.cumulative() == [(1.0, 2), (2.0, 4), (math.inf, 5)]
        assert values.count == 5
        assert values.sum == pytest.approx(8.0)

    def test_an_empty_histogram_has_every_bucket_at_zero(self) -> None:
        values = Histogram(BATCH_SIZE_BUCKETS)
        assert [count for _, count in values.cumulative()] == [0] * (len(BATCH_SIZE_BUCKETS) + 1)
        assert values.count == 0


class TestOutcomes:
    def test_answered_and_failed_requests_are_counted_by_outcome_and_timed(self) -> None:
        outcomes = Outcomes()
        outcomes.succeeded(0.001)
        outcomes.succeeded(0.002)
        outcomes.failed(InferenceRequestInvalidError("bad"), 0.0005)
        outcomes.failed(ModelFailedError("crash"), 0.003)
        outcomes.failed(ModelFailedError("crash"), 0.003)
        assert outcomes.by_outcome() == {
            OK: 2,
            ("4xx", "InferenceRequestInvalidError"): 1,
            ("5xx", "ModelFailedError"): 2,
        }
        assert outcomes.seconds.count == 5

    def test_a_request_without_outcomes_is_counted_as_none_answered(self) -> None:
        assert Outcomes().by_outcome() == {OK: 0}


class TestOutcomeOf:
    @pytest.mark.parametrize(
        ("error", "outcome"),
        [
            (UnknownServable(None), ("4xx", "UnknownServable")),
            (asyncio.CancelledError(), CANCELLED),
            (RuntimeError("boom"), INTERNAL),
        ],
    )
    def test_the_status_class_and_kind(
        self, error: BaseException, outcome: tuple[str, str]
    ) -> None:
        assert outcome_of(error) == outcome


def test_request_telemetry_names_its_modes() -> None:
    requests = RequestTelemetry()
    assert requests.modes() == {
        "served": requests.served,
        "direct": requests.direct,
        "shadow": requests.shadow,
    }
