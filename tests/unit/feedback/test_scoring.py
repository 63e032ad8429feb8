from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import numpy as np
import pytest

from forestflow.domain.frame import Frame
from forestflow.feedback.records import Actual
from forestflow.feedback.scoring import (
    LOG_LOSS_EPSILON,
    ClassificationSample,
    RegressionSample,
    Sample,
    label_key,
    score_prediction,
)
from tests.builders import make_frame


def score(prediction: Frame, actual: Actual, tolerance_rel: float = 0.1) -> list[Sample] | None:
    return score_prediction(prediction, actual, tolerance_rel=tolerance_rel)


class TestLabelKey:
    @pytest.mark.parametrize(
        "value", [1, 1.0, "1", "1.0", " 1 ", True, "true", "TRUE", "True", np.int64(1), b"1"]
    )
    def test_one_in_every_form_is_one_label(self, value: object) -> None:
        assert label_key(value) == 1

    @pytest.mark.parametrize("value", [0, 0.0, "0", False, "false", "False", np.bool_(False)])
    def test_zero_and_false_are_one_label(self, value: object) -> None:
        assert label_key(value) == 0

    def test_text_compares_exactly(self) -> None:
        assert label_key("cat") == "cat"
        assert label_key("Cat") != label_key("cat")
        assert label_key("nan") == "nan"

    def test_fractions_stay_numbers(self) -> None:
        assert label_key("2.5") == label_key(np.float32(2.5)) == 2.5

    def test_large_integers_stay_exact(self) -> None:
        assert label_key(str(2**63 - 1)) == 2**63 - 1 != label_key(2**63 - 2)

    def test_other_number_types_compare_by_value(self) -> None:
        assert label_key(Decimal("2")) == 2
        assert label_key(Decimal("2.5")) == 2.5

    def test_missing_is_no_label(self) -> None:
        assert label_key(None) is None
        assert label_key(math.nan) is None


class TestTask:
    def test_a_label_column_is_classification(self) -> None:
        prediction = make_frame(label=["cat"], cat=[0.7], dog=[0.3])

        assert score(prediction, "cat") == [ClassificationSample(True, -math.log(0.7))]

    def test_a_prediction_column_is_regression_whatever_else_is_there(self) -> None:
        prediction = make_frame(prediction=[12.0], other=[3.0])

        assert score(prediction, 10) == [RegressionSample(2.0, False)]

    def test_the_only_numeric_column_is_regression(self) -> None:
        prediction = make_frame(Regression=[9.5], note=["x"])

        assert score(prediction, 10) == [RegressionSample(-0.5, True)]

    def test_an_integer_column_is_numeric(self) -> None:
        prediction = Frame({"variable": np.array([7], dtype=np.int32)})

        assert score(prediction, 7.0) == [RegressionSample(0.0, True)]

    def test_a_string_prediction_column_holds_labels(self) -> None:
        prediction = make_frame(prediction=["yes"])

        assert score(prediction, "yes") == [ClassificationSample(True, None)]

    @pytest.mark.parametrize(
        "prediction",
        [
            make_frame(prediction_0=[1.0], prediction_1=[2.0]),
            make_frame(name=["x"]),
            Frame({"isAnomaly": np.array([True])}),
        ],
    )
    def test_anything_else_is_not_scorable(self, prediction: Frame) -> None:
        assert score(prediction, 1.0) is None


class TestRegression:
    def test_the_tolerance_is_relative_to_the_actual_value(self) -> None:
        prediction = make_frame(prediction=[110.0, 111.0, -9.0])

        samples = score(prediction, (100, 100, -10), tolerance_rel=0.1)

        assert samples == [
            RegressionSample(10.0, True),
            RegressionSample(11.0, False),
            RegressionSample(1.0, True),
        ]

    def test_an_actual_zero_needs_an_exact_prediction(self) -> None:
        assert score(make_frame(prediction=[1e-9]), 0) == [RegressionSample(1e-9, False)]
        assert score(make_frame(prediction=[0.0]), 0) == [RegressionSample(0.0, True)]

    @pytest.mark.parametrize("actual", ["437.2", True])
    def test_a_string_or_boolean_actual_is_not_scorable(self, actual: Actual) -> None:
        assert score(make_frame(prediction=[1.0]), actual) is None

    @pytest.mark.parametrize("value", [math.nan, math.inf])
    def test_a_missing_or_infinite_prediction_is_not_scorable(self, value: float) -> None:
        assert score(make_frame(prediction=[1.0, value]), (1.0, 1.0)) is None


class TestClassification:
    def test_probabilities_are_read_by_class_name(self) -> None:
        columns: dict[str, Any] = {"label": [1, 0], "0": [0.2, 0.6], "1": [0.8, 0.4]}
        prediction = make_frame(**columns)

        samples = score(prediction, ("1", True))

        assert samples == [
            ClassificationSample(True, -math.log(0.8)),
            ClassificationSample(False, -math.log(0.4)),
        ]

    def test_boolean_classes_match_their_text_columns(self) -> None:
        columns: dict[str, Any] = {"label": [True], "False": [0.25], "True": [0.75]}
        prediction = make_frame(**columns)

        assert score(prediction, "true") == [ClassificationSample(True, -math.log(0.75))]

    def test_proba_prefixed_columns(self) -> None:
        prediction = make_frame(label=["label"], proba_label=[0.5], proba_other=[0.5])

        assert score(prediction, "other") == [ClassificationSample(False, -math.log(0.5))]

    def test_probabilities_are_clamped(self) -> None:
        prediction = make_frame(label=["a", "b"], a=[1.0000001, 0.0], b=[0.0, 1.0])

        samples = score(prediction, ("a", "a"))

        assert samples == [
            ClassificationSample(True, 0.0),
            ClassificationSample(False, -math.log(LOG_LOSS_EPSILON)),
        ]

    def test_an_unseen_class_had_probability_zero(self) -> None:
        prediction = make_frame(label=["a"], a=[0.9], b=[0.1])

        assert score(prediction, "c") == [ClassificationSample(False, -math.log(LOG_LOSS_EPSILON))]

    def test_labels_only_give_no_log_loss(self) -> None:
        prediction = Frame({"label": np.array([2, 1], dtype=np.int64)})

        assert score(prediction, (2.0, 2)) == [
            ClassificationSample(True, None),
            ClassificationSample(False, None),
        ]

    def test_a_missing_label_or_probability_is_not_scorable(self) -> None:
        assert score(make_frame(label=[None], a=[1.0]), "a") is None
        assert score(make_frame(label=["a"], a=[math.nan]), "a") is None


class TestRows:
    def test_one_sample_per_row(self) -> None:
        prediction = make_frame(prediction=[1.0, 2.0, 3.0])

        samples = score(prediction, (1.0, 2.0, 4.0))

        assert samples == [
            RegressionSample(0.0, True),
            RegressionSample(0.0, True),
            RegressionSample(-1.0, False),
        ]

    @pytest.mark.parametrize(("rows", "actual"), [(2, 1.0), (2, (1.0,)), (1, (1.0, 2.0))])
    def test_a_row_count_mismatch_is_not_scorable(self, rows: int, actual: Actual) -> None:
        assert score(make_frame(prediction=[1.0] * rows), actual) is None

    def test_a_one_value_list_joins_a_one_row_prediction(self) -> None:
        assert score(make_frame(prediction=[1.0]), (1.0,)) == [RegressionSample(0.0, True)]

    def test_an_empty_prediction_is_not_scorable(self) -> None:
        assert score(Frame({}), 1.0) is None
