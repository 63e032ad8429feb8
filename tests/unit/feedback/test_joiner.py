from __future__ import annotations

import dataclasses
import gc
import math
import threading
import tracemalloc
import weakref
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pytest

from forestflow.domain.fqrv import FQRV
from forestflow.domain.frame import Column, Frame
from forestflow.domain.metrics import (
    ACCURACY,
    FEEDBACK_COUNT,
    LOG_LOSS,
    MAE,
    REWARD_FAILURES,
    REWARD_SUCCESSES,
    RMSE,
)
from forestflow.domain.settings import LoggingSettings
from forestflow.feedback.joiner import (
    LOOP_EXPIRY_LIMIT,
    FeedbackJoiner,
    FeedbackOutcome,
    JoinerStats,
    MetricsUpdate,
    Refusal,
)
from forestflow.feedback.records import Actual, FeedbackRecord
from forestflow.feedback.scoring import LOG_LOSS_EPSILON
from forestflow.predictionlog.events import PredictionEvent, RowKeys
from forestflow.predictionlog.sinks import SinkStats
from forestflow.testing import FakeClock
from tests.builders import make_contract, make_fqrv, make_frame

CONTRACT = make_contract()
ACCURATE = make_fqrv("accurate")
SLOPPY = make_fqrv("sloppy")
WINDOW_MS = 60_000
METRICS = (MAE, RMSE, ACCURACY, LOG_LOSS)


def event(fqrv: FQRV, key: str | None, *, served: bool = True, **columns: Any) -> PredictionEvent:
    return PredictionEvent(
        fqrv=fqrv,
        served_request=served,
        timestamp_ms=0,
        request=make_frame(x=[1.0] * len(next(iter(columns.values())))),
        prediction=make_frame(**columns),
        latency_ms=1.0,
        key=key,
    )


def regression(fqrv: FQRV, key: str | None, *values: float, served: bool = True) -> PredictionEvent:
    return event(fqrv, key, served=served, prediction=list(values))


def keyed_rows(
    fqrv: FQRV,
    request: Frame,
    key_features: tuple[str, ...] = ("order",),
    *,
    served: bool = True,
    **columns: Any,
) -> PredictionEvent:
    """An event as serving makes it: the key and the rows' keys from `key_features`."""
    keys = RowKeys.of(LoggingSettings(key_features=key_features), request)
    return PredictionEvent(
        fqrv=fqrv,
        served_request=served,
        timestamp_ms=0,
        request=request,
        prediction=make_frame(**columns),
        latency_ms=1.0,
        key=None if keys is None else keys.first(),
        row_keys=keys,
    )


def records(**actuals: Actual) -> list[FeedbackRecord]:
    return [FeedbackRecord(key, actual) for key, actual in actuals.items()]


def averages(update: MetricsUpdate) -> dict[str, float]:
    """The rolling averages of an update, without what else it may carry."""
    return {name: update.values[name] for name in METRICS if name in update.values}


def counters(successes: int, failures: int) -> dict[str, int]:
    return {
        FEEDBACK_COUNT: successes + failures,
        REWARD_SUCCESSES: successes,
        REWARD_FAILURES: failures,
    }


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def joiner(clock: FakeClock) -> FeedbackJoiner:
    return FeedbackJoiner(clock=clock, window_ms=WINDOW_MS)


class TestRegressionMetrics:
    def test_the_accurate_servable_gets_the_better_metrics(self, joiner: FeedbackJoiner) -> None:
        # actuals 10, 20, 40; accurate errs by 1, -1, 0; sloppy (shadow) by 3, 4, -3
        for key, good, bad in (("k1", 11.0, 13.0), ("k2", 19.0, 24.0), ("k3", 40.0, 37.0)):
            joiner.emit(regression(ACCURATE, key, good))
            joiner.emit(regression(SLOPPY, key, bad, served=False))

        outcome = joiner.join(CONTRACT, records(k1=10, k2=20.0, k3=40))

        assert (outcome.matched, outcome.unknown, outcome.mismatched) == (3, 0, 0)
        assert set(outcome.updates) == {ACCURATE, SLOPPY}
        accurate, sloppy = outcome.updates[ACCURATE], outcome.updates[SLOPPY]
        assert averages(accurate) == pytest.approx({MAE: 2 / 3, RMSE: math.sqrt(2 / 3)})
        assert averages(sloppy) == pytest.approx({MAE: 10 / 3, RMSE: math.sqrt(34 / 3)})
        # rewards at 10 % of the actual value: 1 <= 1, 1 <= 2, 0 <= 4; 3 > 1, 4 > 2, 3 <= 4
        assert accurate.increments == counters(successes=3, failures=0)
        assert sloppy.increments == counters(successes=1, failures=2)

    def test_the_tolerance_is_configurable(self, clock: FakeClock) -> None:
        joiner = FeedbackJoiner(clock=clock, regression_tolerance_rel=0.5)
        joiner.emit(regression(SLOPPY, "k", 14.0))

        outcome = joiner.join(CONTRACT, records(k=10))

        assert outcome.updates[SLOPPY].increments == counters(successes=1, failures=0)

    def test_a_multi_row_prediction_joins_row_by_row(self, joiner: FeedbackJoiner) -> None:
        joiner.emit(regression(ACCURATE, "batch", 1.0, 2.0, 6.0))

        outcome = joiner.join(CONTRACT, records(batch=(1.0, 3.0, 2.0)))

        update = outcome.updates[ACCURATE]
        assert averages(update) == pytest.approx({MAE: 5 / 3, RMSE: math.sqrt(17 / 3)})
        assert update.increments == counters(successes=1, failures=2)


class TestClassificationMetrics:
    def test_the_accurate_servable_gets_the_better_metrics(self, joiner: FeedbackJoiner) -> None:
        for key, (good, p_good), (bad, p_bad) in (
            ("k1", ("cat", 0.9), ("dog", 0.3)),
            ("k2", ("dog", 0.2), ("dog", 0.6)),
        ):
            # p_* is the probability of "cat"
            joiner.emit(event(ACCURATE, key, label=[good], cat=[p_good], dog=[1 - p_good]))
            joiner.emit(event(SLOPPY, key, served=False, label=[bad], cat=[p_bad], dog=[1 - p_bad]))

        outcome = joiner.join(CONTRACT, records(k1="cat", k2="dog"))

        accurate, sloppy = outcome.updates[ACCURATE], outcome.updates[SLOPPY]
        # P(actual): accurate 0.9 and 0.8, sloppy 0.3 and 0.4
        assert averages(accurate) == pytest.approx(
            {ACCURACY: 1.0, LOG_LOSS: -(math.log(0.9) + math.log(0.8)) / 2}
        )
        assert averages(sloppy) == pytest.approx(
            {ACCURACY: 0.5, LOG_LOSS: -(math.log(0.3) + math.log(0.4)) / 2}
        )
        assert accurate.increments == counters(successes=2, failures=0)
        assert sloppy.increments == counters(successes=1, failures=1)

    def test_numeric_labels_match_text_and_boolean_actuals(self, joiner: FeedbackJoiner) -> None:
        columns: dict[str, Any] = {"label": [1], "0": [0.25], "1": [0.75]}
        for key in ("a", "b", "c"):
            joiner.emit(event(ACCURATE, key, **columns))

        outcome = joiner.join(CONTRACT, records(a="1", b=True, c=0.0))

        assert averages(outcome.updates[ACCURATE]) == pytest.approx(
            {ACCURACY: 2 / 3, LOG_LOSS: -(2 * math.log(0.75) + math.log(0.25)) / 3}
        )

    def test_log_loss_of_a_certain_miss_is_clamped(self, joiner: FeedbackJoiner) -> None:
        joiner.emit(event(ACCURATE, "k", label=["a"], a=[1.0], b=[0.0]))

        outcome = joiner.join(CONTRACT, records(k="b"))

        assert averages(outcome.updates[ACCURATE]) == {
            ACCURACY: 0.0,
            LOG_LOSS: -math.log(LOG_LOSS_EPSILON),
        }

    def test_labels_without_probabilities_give_accuracy_only(self, joiner: FeedbackJoiner) -> None:
        joiner.emit(event(ACCURATE, "k", label=["a", "b"]))

        outcome = joiner.join(CONTRACT, records(k=("a", "a")))

        assert averages(outcome.updates[ACCURATE]) == {ACCURACY: 0.5}


class TestJoining:
    def test_unknown_keys_are_counted(self, joiner: FeedbackJoiner) -> None:
        joiner.emit(regression(ACCURATE, "known", 1.0))

        outcome = joiner.join(CONTRACT, records(known=1.0, ghost=2.0, other=3.0))

        assert (outcome.matched, outcome.unknown, outcome.mismatched) == (1, 2, 0)
        assert outcome.updates[ACCURATE].increments[FEEDBACK_COUNT] == 1

    def test_only_the_contracts_own_predictions_join(self, joiner: FeedbackJoiner) -> None:
        elsewhere = make_fqrv("accurate", project="other")
        joiner.emit(regression(elsewhere, "k", 1.0))

        assert joiner.join(CONTRACT, records(k=1.0)).unknown == 1
        assert set(joiner.join(elsewhere.contract, records(k=1.0)).updates) == {elsewhere}

    def test_the_same_feedback_twice_counts_once(self, joiner: FeedbackJoiner) -> None:
        joiner.emit(regression(ACCURATE, "k", 12.0))

        first = joiner.join(CONTRACT, records(k=10.0))
        second = joiner.join(CONTRACT, records(k=10.0))

        assert first.updates[ACCURATE].increments == counters(successes=0, failures=1)
        assert second == FeedbackOutcome(matched=0, unknown=1, mismatched=0, updates={})

    def test_a_key_repeated_in_one_request_joins_once(self, joiner: FeedbackJoiner) -> None:
        joiner.emit(regression(ACCURATE, "k", 12.0))

        outcome = joiner.join(CONTRACT, [FeedbackRecord("k", 10.0), FeedbackRecord("k", 12.0)])

        assert (outcome.matched, outcome.unknown) == (1, 1)
        assert outcome.updates[ACCURATE].values[MAE] == 2.0

    def test_every_prediction_under_a_key_joins(self, joiner: FeedbackJoiner) -> None:
        # the same key scored twice (a retry): both predictions are samples
        joiner.emit(regression(ACCURATE, "k", 11.0))
        joiner.emit(regression(ACCURATE, "k", 13.0))

        outcome = joiner.join(CONTRACT, records(k=10.0))

        assert outcome.matched == 1
        assert averages(outcome.updates[ACCURATE]) == pytest.approx({MAE: 2.0, RMSE: math.sqrt(5)})
        assert joiner.joiner_stats().joined == 2

    def test_events_without_a_key_are_not_kept(self, joiner: FeedbackJoiner) -> None:
        joiner.emit(regression(ACCURATE, None, 1.0))
        joiner.emit(regression(ACCURATE, "", 1.0))

        assert joiner.join(CONTRACT, records(k=1.0)).unknown == 1
        assert joiner.stats() == SinkStats(emitted=2, written=0, dropped=0)
        assert joiner.joiner_stats().unkeyed == 2


class TestMismatches:
    @pytest.mark.parametrize(
        ("prediction", "actual"),
        [
            ({"prediction_0": [1.0], "prediction_1": [2.0]}, 1.0),
            ({"prediction_0": [1.0], "prediction_1": [2.0]}, "cat"),
            ({"prediction": [math.nan]}, 1.0),
            ({"label": [None], "a": [0.5]}, "a"),
        ],
    )
    def test_joined_but_not_scorable_is_counted(
        self, joiner: FeedbackJoiner, prediction: dict[str, Any], actual: Actual
    ) -> None:
        joiner.emit(event(ACCURATE, "k", **prediction))

        outcome = joiner.join(CONTRACT, records(k=actual))

        assert (outcome.matched, outcome.unknown, outcome.mismatched) == (1, 0, 1)
        assert outcome.updates == {}
        assert joiner.join(CONTRACT, records(k=actual)).unknown == 1  # consumed all the same

    def test_the_scorable_predictions_of_a_mismatched_record_still_count(
        self, joiner: FeedbackJoiner
    ) -> None:
        joiner.emit(regression(ACCURATE, "k", 1.0))
        joiner.emit(event(SLOPPY, "k", served=False, label=["a"]))

        outcome = joiner.join(CONTRACT, records(k=2.0))

        assert (outcome.matched, outcome.mismatched) == (1, 0)
        assert set(outcome.updates) == {ACCURATE, SLOPPY}
        joiner.emit(regression(ACCURATE, "j", 1.0))
        joiner.emit(event(SLOPPY, "j", served=False, prediction_0=[1.0], prediction_1=[1.0]))

        outcome = joiner.join(CONTRACT, records(j=2.0))

        assert (outcome.matched, outcome.mismatched) == (1, 1)
        assert set(outcome.updates) == {ACCURATE}
        assert joiner.joiner_stats().mismatched == 1


class TestRefusals:
    @pytest.mark.parametrize(
        ("prediction", "actual", "field", "reason"),
        [
            (
                {"prediction": [1.0, 2.0]},
                1.0,
                "records[0].actual",
                "one value for a prediction of 2 rows: send a list of 2 values, one per row",
            ),
            (
                {"prediction": [1.0, 2.0]},
                (1.0, 2.0, 3.0),
                "records[0].actual",
                "3 values for a prediction of 2 rows: send a list of 2 values, one per row",
            ),
            (
                {"prediction": [1.0]},
                (1.0, 2.0),
                "records[0].actual",
                "2 values for a prediction of 1 row: send one value",
            ),
            (
                {"label": ["a", "b"]},
                ("a",),
                "records[0].actual",
                "a list of 1 value for a prediction of 2 rows: send a list of 2 values, "
                "one per row",
            ),
            (
                {"prediction": [1.0]},
                "437.2",
                "records[0].actual",
                "expected a number (the prediction is a regression), got str '437.2'",
            ),
            (
                {"prediction": [1.0]},
                True,
                "records[0].actual",
                "expected a number (the prediction is a regression), got bool True",
            ),
            (
                {"prediction": [1, 2]},
                (1.0, "x"),
                "records[0].actual[1]",
                "expected a number (the prediction is a regression), got str 'x'",
            ),
        ],
    )
    def test_a_record_that_does_not_fit_is_refused_without_consuming(
        self,
        joiner: FeedbackJoiner,
        prediction: dict[str, Any],
        actual: Actual,
        field: str,
        reason: str,
    ) -> None:
        joiner.emit(event(ACCURATE, "k", **prediction))

        outcome = joiner.join(CONTRACT, records(k=actual))

        assert outcome == FeedbackOutcome(
            matched=0,
            unknown=0,
            mismatched=0,
            updates={},
            refused=(Refusal(0, "k", field, reason),),
        )
        assert joiner.joiner_stats().pending == 1
        assert joiner.joiner_stats().refused == 1

    def test_the_corrected_record_then_joins(self, joiner: FeedbackJoiner) -> None:
        joiner.emit(regression(ACCURATE, "k", 1.0, 2.0))

        wrong = joiner.join(CONTRACT, records(k=1.0))
        right = joiner.join(CONTRACT, records(k=(1.0, 4.0)))

        assert [r.index for r in wrong.refused] == [0]
        assert (right.matched, right.unknown, right.mismatched, right.refused) == (1, 0, 0, ())
        assert averages(right.updates[ACCURATE]) == {MAE: 1.0, RMSE: math.sqrt(2)}

    def test_a_correction_later_in_the_same_request_joins(self, joiner: FeedbackJoiner) -> None:
        joiner.emit(regression(ACCURATE, "k", 12.0))

        outcome = joiner.join(CONTRACT, [FeedbackRecord("k", "ten"), FeedbackRecord("k", 10.0)])

        assert [(r.index, r.key) for r in outcome.refused] == [(0, "k")]
        assert outcome.matched == 1
        assert outcome.updates[ACCURATE].values[MAE] == 2.0

    def test_every_refused_record_is_listed_with_its_index(self, joiner: FeedbackJoiner) -> None:
        joiner.emit(regression(ACCURATE, "a", 1.0))
        joiner.emit(regression(ACCURATE, "b", 1.0, 2.0))
        joiner.emit(regression(ACCURATE, "c", 1.0))

        outcome = joiner.join(
            CONTRACT,
            [
                FeedbackRecord("a", "x"),
                FeedbackRecord("z", 1.0),
                FeedbackRecord("b", 1.0),
                FeedbackRecord("c", 1.0),
                FeedbackRecord("b", (1.0, False)),
            ],
        )

        assert [(r.index, r.key, r.field) for r in outcome.refused] == [
            (0, "a", "records[0].actual"),
            (2, "b", "records[2].actual"),
            (4, "b", "records[4].actual[1]"),
        ]
        assert (outcome.matched, outcome.unknown) == (1, 1)
        assert joiner.joiner_stats().refused == 3
        assert joiner.joiner_stats().pending == 2

    def test_a_record_that_fits_one_servable_joins_and_the_other_is_mismatched(
        self, joiner: FeedbackJoiner
    ) -> None:
        # a classifier shadowing a regressor under the same key: "cat" fits the classifier
        joiner.emit(regression(ACCURATE, "k", 1.0))
        joiner.emit(event(SLOPPY, "k", served=False, label=["cat"]))

        outcome = joiner.join(CONTRACT, records(k="cat"))

        assert (outcome.matched, outcome.mismatched, outcome.refused) == (1, 1, ())
        assert set(outcome.updates) == {SLOPPY}
        assert joiner.joiner_stats().pending == 0

    def test_expired_predictions_do_not_refuse(
        self, joiner: FeedbackJoiner, clock: FakeClock
    ) -> None:
        joiner.emit(regression(ACCURATE, "k", 1.0, 2.0))
        clock.advance(ms=WINDOW_MS + 1)

        outcome = joiner.join(CONTRACT, records(k=1.0))

        assert (outcome.unknown, outcome.refused) == (1, ())
        assert joiner.joiner_stats().expired == 1


class TestRowKeys:
    def test_each_row_joins_under_its_own_key_with_its_own_prediction(
        self, joiner: FeedbackJoiner
    ) -> None:
        request = make_frame(order=["o-1", "o-2"], x=[1.0, 2.0])
        joiner.emit(keyed_rows(ACCURATE, request, prediction=[10.0, 20.0]))
        joiner.emit(keyed_rows(SLOPPY, request, served=False, prediction=[13.0, 16.0]))

        first = joiner.join(CONTRACT, records(**{"o-1": 10.0}))
        second = joiner.join(CONTRACT, records(**{"o-2": 20.0}))

        assert (first.matched, second.matched) == (1, 1)
        assert first.updates[ACCURATE].values[MAE] == 0.0
        assert first.updates[SLOPPY].values[MAE] == 3.0
        assert second.updates[ACCURATE].values[MAE] == 0.0
        assert second.updates[SLOPPY].values[MAE] == 3.5  # its window: 3 and 4
        assert joiner.joiner_stats().joined == 4

    def test_a_row_key_joins_with_one_value(self, joiner: FeedbackJoiner) -> None:
        request = make_frame(order=["o-1", "o-2", "o-3"])
        joiner.emit(keyed_rows(ACCURATE, request, prediction=[1.0, 2.0, 3.0]))

        outcome = joiner.join(
            CONTRACT, [FeedbackRecord("o-2", (2.0, 2.0)), FeedbackRecord("o-3", 5.0)]
        )

        assert [r.reason for r in outcome.refused] == [
            "2 values for a prediction of 1 row: send one value"
        ]
        assert outcome.updates[ACCURATE].values[MAE] == 2.0
        assert joiner.join(CONTRACT, records(**{"o-2": 2.0, "o-1": 1.0})).matched == 2

    def test_rows_that_share_a_key_join_together_in_request_order(
        self, joiner: FeedbackJoiner
    ) -> None:
        request = make_frame(order=["a", "b", "a"])
        joiner.emit(keyed_rows(ACCURATE, request, label=["x", "y", "z"]))

        outcome = joiner.join(CONTRACT, records(a=("x", "x"), b="y"))

        assert outcome.matched == 2
        assert averages(outcome.updates[ACCURATE]) == {ACCURACY: 2 / 3}

    def test_keys_from_configs_keep_the_request_whole(self, joiner: FeedbackJoiner) -> None:
        request = make_frame({"order": "o-9"}, x=[1.0, 2.0])
        joiner.emit(keyed_rows(ACCURATE, request, prediction=[1.0, 2.0]))

        outcome = joiner.join(CONTRACT, records(**{"o-9": (1.0, 2.0)}))

        assert outcome.matched == 1
        assert outcome.updates[ACCURATE].increments == counters(successes=2, failures=0)

    def test_configs_and_row_values_make_the_key_together(self, joiner: FeedbackJoiner) -> None:
        request = make_frame({"shop": "s1"}, line=[1, 2])
        joiner.emit(keyed_rows(ACCURATE, request, ("shop", "line"), prediction=[1.0, 2.0]))

        outcome = joiner.join(CONTRACT, records(**{"s1.1": 1.0, "s1.2": 2.0}))

        assert outcome.matched == 2

    def test_classification_rows_keep_their_own_probabilities(self, joiner: FeedbackJoiner) -> None:
        request = make_frame(order=["p", "q"])
        joiner.emit(keyed_rows(ACCURATE, request, label=["a", "b"], a=[0.8, 0.3], b=[0.2, 0.7]))

        outcome = joiner.join(CONTRACT, records(q="a"))

        assert averages(outcome.updates[ACCURATE]) == pytest.approx(
            {ACCURACY: 0.0, LOG_LOSS: -math.log(0.3)}
        )

    def test_rows_without_a_key_are_not_kept(self, joiner: FeedbackJoiner) -> None:
        joiner.emit(keyed_rows(ACCURATE, make_frame(order=[None, "o-2"]), prediction=[1.0, 2.0]))
        joiner.emit(keyed_rows(ACCURATE, make_frame(order=[None, None]), prediction=[1.0, 2.0]))

        assert joiner.join(CONTRACT, records(**{"o-2": 2.0})).matched == 1
        stats = joiner.joiner_stats()
        assert (stats.pending, stats.unkeyed) == (0, 1)
        assert joiner.stats() == SinkStats(emitted=2, written=1, dropped=0)

    def test_an_unscorable_prediction_is_kept_per_row_and_mismatched(
        self, joiner: FeedbackJoiner
    ) -> None:
        request = make_frame(order=["o-1", "o-2"])
        joiner.emit(keyed_rows(ACCURATE, request, prediction_0=[1.0, 2.0], prediction_1=[1, 2]))

        outcome = joiner.join(CONTRACT, [FeedbackRecord("o-1", 1.0), FeedbackRecord("o-2", "x")])

        assert (outcome.matched, outcome.mismatched, outcome.refused) == (2, 2, ())

    def test_emit_keeps_no_request_and_indexes_within_the_byte_bound(
        self, clock: FakeClock
    ) -> None:
        bound = 64 * 1024  # about 70 of the 640 one-row entries
        joiner = FeedbackJoiner(clock=clock, max_prediction_bytes=bound)
        features: list[weakref.ref[Any]] = []
        for i in range(10):
            x = np.full(50_000, float(i))
            features.append(weakref.ref(x))
            orders = np.array([f"o-{i}-{row}" for row in range(64)], dtype=object)
            request = Frame({"x": x[:64], "order": orders})
            joiner.emit(keyed_rows(ACCURATE, request, prediction=list(range(64))))
            del x, request, orders

        held = joiner.pending_bytes()
        gc.collect()

        assert held <= bound
        assert all(ref() is None for ref in features)
        stats = joiner.joiner_stats()
        assert stats.pending + stats.evicted == 640
        assert 0 < stats.pending < 640
        assert joiner.join(CONTRACT, records(**{"o-9-63": 63.0})).matched == 1

    def test_a_large_request_is_indexed_whole_between_chunks(self, joiner: FeedbackJoiner) -> None:
        rows = 3 * 256 + 5
        request = make_frame(order=[f"o-{row}" for row in range(rows)])
        joiner.emit(keyed_rows(ACCURATE, request, prediction=[float(r) for r in range(rows)]))
        joiner.emit(regression(ACCURATE, "after", 1.0))

        joiner.catch_up()

        assert joiner.joiner_stats().pending == rows + 1


class TestRollingWindow:
    def test_old_samples_leave_the_window(self, clock: FakeClock) -> None:
        joiner = FeedbackJoiner(clock=clock, rolling_window=2)
        maes: list[dict[str, float]] = []
        for i, error in enumerate((1.0, 2.0, 4.0, -8.0)):
            joiner.emit(regression(ACCURATE, f"k{i}", 10.0 + error))
            outcome = joiner.join(CONTRACT, records(**{f"k{i}": 10.0}))
            maes.append(averages(outcome.updates[ACCURATE]))

        # errors 1, 2, 4, -8 through a window of two
        assert maes == [
            pytest.approx({MAE: 1.0, RMSE: 1.0}),
            pytest.approx({MAE: 1.5, RMSE: math.sqrt(5 / 2)}),
            pytest.approx({MAE: 3.0, RMSE: math.sqrt(20 / 2)}),
            pytest.approx({MAE: 6.0, RMSE: math.sqrt(80 / 2)}),
        ]

    def test_the_counters_are_increments_not_window_sizes(self, clock: FakeClock) -> None:
        joiner = FeedbackJoiner(clock=clock, rolling_window=1)
        joiner.emit(regression(ACCURATE, "a", 1.0, 1.0, 1.0))

        outcome = joiner.join(CONTRACT, records(a=(1.0, 1.0, 5.0)))

        assert averages(outcome.updates[ACCURATE]) == {MAE: 4.0, RMSE: 4.0}
        assert outcome.updates[ACCURATE].increments == counters(successes=2, failures=1)

    def test_each_servable_has_its_own_window(self, clock: FakeClock) -> None:
        joiner = FeedbackJoiner(clock=clock, rolling_window=2)
        joiner.emit(regression(ACCURATE, "a", 1.0))
        joiner.emit(regression(SLOPPY, "b", 5.0))
        joiner.emit(regression(SLOPPY, "c", 5.0))

        joiner.join(CONTRACT, records(a=0.0, b=0.0))
        outcome = joiner.join(CONTRACT, records(c=0.0))

        assert set(outcome.updates) == {SLOPPY}
        assert averages(outcome.updates[SLOPPY]) == {MAE: 5.0, RMSE: 5.0}

    def test_forget_starts_a_servable_afresh(self, joiner: FeedbackJoiner) -> None:
        joiner.emit(regression(ACCURATE, "a", 9.0))
        joiner.join(CONTRACT, records(a=1.0))
        joiner.forget(ACCURATE)
        joiner.emit(regression(ACCURATE, "b", 2.0))

        assert joiner.join(CONTRACT, records(b=1.0)).updates[ACCURATE].values[MAE] == 1.0

    def test_forget_drops_the_predictions_still_waiting_for_feedback(
        self, joiner: FeedbackJoiner
    ) -> None:
        joiner.emit(regression(ACCURATE, "a", 9.0))  # made by the deleted servable
        joiner.emit(regression(SLOPPY, "a", 5.0))
        joiner.forget(ACCURATE)
        joiner.emit(regression(ACCURATE, "b", 2.0))  # by the redeployed one

        outcome = joiner.join(CONTRACT, records(a=1.0, b=1.0))

        assert set(outcome.updates) == {ACCURATE, SLOPPY}
        assert outcome.updates[ACCURATE].values[MAE] == 1.0  # only "b" counted
        assert outcome.updates[SLOPPY].values[MAE] == 4.0


class TestWindowAndMemoryBounds:
    def test_a_prediction_joins_until_the_window_ends(
        self, joiner: FeedbackJoiner, clock: FakeClock
    ) -> None:
        joiner.emit(regression(ACCURATE, "in", 1.0))
        joiner.emit(regression(ACCURATE, "out", 1.0))
        clock.advance(ms=WINDOW_MS)

        assert joiner.join(CONTRACT, records(**{"in": 1.0})).matched == 1
        clock.advance(ms=1)
        assert joiner.join(CONTRACT, records(out=1.0)).unknown == 1
        assert joiner.joiner_stats().expired == 1

    def test_expiry_follows_arrival_time(self, joiner: FeedbackJoiner, clock: FakeClock) -> None:
        joiner.emit(regression(ACCURATE, "old", 1.0))
        clock.advance(ms=WINDOW_MS // 2)
        joiner.emit(regression(ACCURATE, "new", 1.0))
        clock.advance(ms=WINDOW_MS // 2 + 1)

        outcome = joiner.join(CONTRACT, records(old=1.0, new=1.0))

        assert (outcome.matched, outcome.unknown) == (1, 1)

    def test_emitting_expires_old_predictions(
        self, joiner: FeedbackJoiner, clock: FakeClock
    ) -> None:
        joiner.emit(regression(ACCURATE, "a", 1.0))
        clock.advance(ms=WINDOW_MS + 1)
        joiner.emit(regression(ACCURATE, "b", 1.0))

        assert joiner.joiner_stats().pending == 1
        assert joiner.stats() == SinkStats(emitted=2, written=2, dropped=0)

    def test_the_oldest_prediction_is_evicted_past_the_bound(self, clock: FakeClock) -> None:
        joiner = FeedbackJoiner(clock=clock, max_predictions=2)
        for key in ("k1", "k2", "k3"):
            joiner.emit(regression(ACCURATE, key, 1.0))

        outcome = joiner.join(CONTRACT, records(k1=1.0, k2=1.0, k3=1.0))

        assert (outcome.matched, outcome.unknown) == (2, 1)
        assert joiner.stats() == SinkStats(emitted=3, written=3, dropped=1)
        assert joiner.joiner_stats().evicted == 1

    def test_joined_predictions_free_their_room(self, clock: FakeClock) -> None:
        joiner = FeedbackJoiner(clock=clock, max_predictions=2)
        joiner.emit(regression(ACCURATE, "k1", 1.0))
        joiner.emit(regression(ACCURATE, "k2", 1.0))
        joiner.join(CONTRACT, records(k2=1.0))
        joiner.emit(regression(ACCURATE, "k3", 1.0))

        assert joiner.join(CONTRACT, records(k1=1.0, k3=1.0)).matched == 2
        assert joiner.stats().dropped == 0

    def test_eviction_crosses_keys_and_contracts(self, clock: FakeClock) -> None:
        joiner = FeedbackJoiner(clock=clock, max_predictions=3)
        elsewhere = make_fqrv("accurate", project="other")
        joiner.emit(regression(ACCURATE, "k", 1.0))
        joiner.emit(regression(elsewhere, "k", 1.0))
        joiner.emit(regression(ACCURATE, "k", 2.0))
        joiner.emit(regression(SLOPPY, "j", 1.0))

        outcome = joiner.join(CONTRACT, records(k=1.0))

        assert outcome.updates[ACCURATE].values[MAE] == 1.0  # only the 2.0 is left
        assert joiner.joiner_stats().pending == 2


class TestByteBound:
    def test_large_requests_are_not_kept_and_memory_stays_under_the_bound(
        self, clock: FakeClock
    ) -> None:
        bound = 128 * 1024  # room for about 150 of the 300 predictions
        joiner = FeedbackJoiner(clock=clock, max_prediction_bytes=bound)
        requests: list[weakref.ref[Any]] = []
        batches: list[weakref.ref[Any]] = []
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for i in range(300):
                request = np.full(50_000, float(i))  # 400 kB: 120 MB if kept
                batch = np.arange(64, dtype=np.float64)  # the scheduler's batch output
                requests.append(weakref.ref(request))
                batches.append(weakref.ref(batch))
                joiner.emit(
                    PredictionEvent(
                        fqrv=ACCURATE,
                        served_request=True,
                        timestamp_ms=0,
                        request=Frame({"x": request}),
                        prediction=Frame({"prediction": batch[i % 64 : i % 64 + 1]}),
                        latency_ms=1.0,
                        key=f"order-{i}",
                    )
                )
                del request, batch
            held = joiner.pending_bytes()
            gc.collect()
            used = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()

        assert held <= bound
        assert used <= bound + 64 * 1024  # the index tables, the intake's empty deque
        assert all(ref() is None for ref in requests + batches)
        stats = joiner.joiner_stats()
        assert stats.evicted > 0
        assert stats.pending + stats.evicted == 300
        # the newest are the ones kept, and they still join
        assert joiner.join(CONTRACT, records(**{"order-299": 35.0})).matched == 1

    def test_a_prediction_alone_over_the_bound_is_evicted_and_counted(
        self, clock: FakeClock
    ) -> None:
        joiner = FeedbackJoiner(clock=clock, max_prediction_bytes=64)
        joiner.emit(regression(ACCURATE, "k", 1.0))

        assert joiner.join(CONTRACT, records(k=1.0)).unknown == 1
        assert joiner.stats() == SinkStats(emitted=1, written=1, dropped=1)
        assert joiner.pending_bytes() == 0


class BlockingColumns(Mapping[str, Column]):
    """Prediction columns whose reading blocks until `release`: holds the indexing midway."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self._go = threading.Event()

    def release(self) -> None:
        self._go.set()

    def __getitem__(self, name: str) -> Column:
        self.entered.set()
        self._go.wait(10)
        if name != "prediction":
            raise KeyError(name)
        return np.array([1.0])

    def __iter__(self) -> Iterator[str]:
        return iter(["prediction"])

    def __len__(self) -> int:
        return 1


class TestServingPath:
    def test_emit_does_not_wait_while_predictions_are_being_indexed(
        self, joiner: FeedbackJoiner
    ) -> None:
        columns = BlockingColumns()
        slow = event(ACCURATE, "slow", prediction=[1.0])
        joiner.emit(dataclasses.replace(slow, prediction=Frame(columns)))
        indexer = threading.Thread(target=joiner.catch_up, daemon=True)
        indexer.start()
        assert columns.entered.wait(10)  # the indexer holds the index, midway

        emitter = threading.Thread(
            target=lambda: joiner.emit(regression(ACCURATE, "fast", 1.0)), daemon=True
        )
        emitter.start()
        emitter.join(10)
        blocked = emitter.is_alive()
        columns.release()
        indexer.join(10)

        assert not blocked
        assert joiner.join(CONTRACT, records(slow=1.0, fast=1.0)).matched == 2

    def test_a_full_intake_drops_and_counts(self, clock: FakeClock) -> None:
        joiner = FeedbackJoiner(clock=clock, intake_size=3)
        for i in range(5):
            joiner.emit(regression(ACCURATE, f"k{i}", 1.0))

        assert joiner.stats() == SinkStats(emitted=5, written=3, dropped=2)
        joiner.emit(regression(ACCURATE, "k5", 1.0))  # the intake was emptied: room again
        assert joiner.join(CONTRACT, records(k0=1.0, k3=1.0, k5=1.0)).matched == 2

    def test_many_events_at_once_are_taken_as_one_by_one(self, clock: FakeClock) -> None:
        joiner = FeedbackJoiner(clock=clock, intake_size=3)
        keys = ["k0", None, "k1", "", "k2", "k3"]  # two unkeyed; the fourth keyed is refused
        joiner.emit_many([regression(ACCURATE, key, 1.0) for key in keys])

        assert joiner.stats() == SinkStats(emitted=6, written=3, dropped=1)
        assert joiner.joiner_stats().unkeyed == 2
        assert joiner.join(CONTRACT, records(k0=1.0, k2=1.0, k3=1.0)).matched == 2

    def test_calls_on_the_event_loop_expire_a_bounded_share(
        self, joiner: FeedbackJoiner, clock: FakeClock
    ) -> None:
        for i in range(LOOP_EXPIRY_LIMIT * 2 + 500):
            joiner.emit(regression(ACCURATE, f"k{i}", 1.0))
        clock.advance(ms=WINDOW_MS + 1)

        # the oldest share is expired first; one met by the join is expired, not joined
        last = f"k{LOOP_EXPIRY_LIMIT * 2 + 499}"
        assert joiner.join(CONTRACT, records(**{last: 1.0})).unknown == 1
        stats = joiner.joiner_stats()  # a second share
        assert (stats.expired, stats.pending) == (LOOP_EXPIRY_LIMIT * 2 + 1, 499)
        joiner.catch_up()  # the emitter's thread expires the rest
        assert joiner.joiner_stats().pending == 0


class TestCountersAndSafety:
    def test_joiner_stats_add_up(self, joiner: FeedbackJoiner) -> None:
        joiner.emit(regression(ACCURATE, "a", 1.0))
        joiner.emit(regression(SLOPPY, "a", 1.0, served=False))
        joiner.emit(regression(ACCURATE, "b", 1.0, 2.0))
        joiner.emit(event(ACCURATE, "m", prediction_0=[1.0], prediction_1=[2.0]))
        joiner.emit(regression(ACCURATE, "c", 1.0))
        joiner.emit(regression(ACCURATE, None, 1.0))

        outcome = joiner.join(CONTRACT, records(a=1.0, b=1.0, m=1.0, z=1.0))

        assert joiner.joiner_stats() == JoinerStats(
            pending=2,  # b, refused, and c
            joined=3,
            expired=0,
            evicted=0,
            unkeyed=1,
            matched=2,
            unknown=1,
            mismatched=1,
            refused=1,
        )
        # every record is matched, unknown or refused
        assert outcome.matched + outcome.unknown + len(outcome.refused) == 4

    def test_emit_never_raises(self) -> None:
        class BrokenClock:
            def now_ms(self) -> int:
                raise OSError("clock unavailable")

        joiner = FeedbackJoiner(clock=BrokenClock())

        joiner.emit(regression(ACCURATE, "k", 1.0))

        assert joiner.stats() == SinkStats(emitted=1, written=0, dropped=1)

    def test_concurrent_emits_are_all_counted(self, clock: FakeClock) -> None:
        joiner = FeedbackJoiner(clock=clock, max_predictions=1_000)
        events = [regression(ACCURATE, f"k{i}", 1.0) for i in range(4 * 500)]

        def emit_all(part: list[PredictionEvent]) -> None:
            for one in part:
                joiner.emit(one)

        threads = [threading.Thread(target=emit_all, args=(events[i::4],)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert joiner.stats() == SinkStats(emitted=2000, written=2000, dropped=1000)
        assert joiner.joiner_stats().pending == 1_000

    @pytest.mark.parametrize(
        "settings",
        [
            {"window_ms": 0},
            {"max_predictions": 0},
            {"max_prediction_bytes": 0},
            {"intake_size": 0},
            {"rolling_window": 0},
            {"regression_tolerance_rel": -0.1},
            {"regression_tolerance_rel": math.nan},
        ],
    )
    def test_bad_settings_are_refused(self, clock: FakeClock, settings: dict[str, Any]) -> None:
        with pytest.raises(ValueError, match="must be"):
            FeedbackJoiner(clock=clock, **settings)
