"""One prediction scored against its ground truth: the samples the rolling metrics average.

The task is read from the prediction frame's columns, as the flavors name them
(docs/flavors.md):

- a `label` column → classification: the label is compared with the actual value; the
  probability of the actual class is read from the Float column named `str(class)` (or
  `proba_<class>`, the name used when a class is called `label`). When the frame has
  probability columns but none for the actual class, that class had probability 0.
  Without probability columns (a model that gives labels only) no log-loss is computed.
- else a `prediction` column, else the only integer or float column → regression
  (scikit-learn's `prediction`, H2O's `Regression`, an ONNX regressor's single output).
  A `prediction` column of strings or booleans holds labels (a PyFunc classifier):
  classification without probabilities.
- anything else (several numeric columns and no `label`, `prediction_0 …`) → not scorable.

Rows: an actual list joins the prediction row by row, one sample per row, and must have
one value per row; a single actual value joins a one-row prediction. A prediction is
scored all or nothing: a missing (NaN/None) predicted value, a string actual for a
regression or a row-count mismatch makes it not scorable (`None`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeGuard

import numpy as np

from forestflow.domain.frame import Frame
from forestflow.feedback.records import Actual, Scalar

LOG_LOSS_EPSILON = 1e-15
"""Probabilities are clamped to [LOG_LOSS_EPSILON, 1] so one confident miss stays finite."""

LABEL = "label"
PREDICTION = "prediction"
_PROBA_PREFIX = "proba_"

LabelKey = int | float | str
"""A label in canonical form: integral numbers as `int`, other numbers as `float`, or text."""


@dataclass(frozen=True, slots=True)
class RegressionSample:
    """One predicted number against the actual one."""

    error: float
    """Predicted minus actual."""
    success: bool
    """Whether the error is within the reward tolerance (a bandit reward)."""


@dataclass(frozen=True, slots=True)
class ClassificationSample:
    """One predicted label against the actual class."""

    success: bool
    """Whether the predicted label is the actual class."""
    log_loss: float | None
    """-ln(probability of the actual class), clamped; None when the model gives none."""


Sample = RegressionSample | ClassificationSample


def label_key(value: object) -> LabelKey | None:
    """`value` as a label that compares sensibly across JSON, numpy and column names.

    Numbers compare by value (`1`, `1.0`, `np.int64(1)` and the text `"1"` or `"1.0"` are
    one label); booleans are 1 and 0 (`True`, `"true"`, `"True"`, `1` are one label, as
    are `False`, `"false"`, `0`); any other text compares exactly (case-sensitive).
    None and NaN are no label.
    """
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        return _text_key(value)
    if isinstance(value, bool | np.bool_):
        return int(bool(value))
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return _number_key(float(value))
    return _text_key(str(value))  # other number types (Decimal) by their text


def _text_key(text: str) -> LabelKey:
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return int(lowered == "true")
    try:
        return int(text)  # exact, even past 2**53
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return text
    if not math.isfinite(number):
        return text
    return int(number) if number.is_integer() else number


def _number_key(number: float) -> LabelKey | None:
    if math.isnan(number):
        return None
    return int(number) if number.is_integer() else number


def score_prediction(
    prediction: Frame, actual: Actual, *, tolerance_rel: float
) -> list[Sample] | None:
    """The samples of one prediction and its actual value(s); None when not scorable."""
    rows = _rows(actual, prediction.n_rows)
    if rows is None:
        return None
    if LABEL in prediction:
        return _classify(prediction, LABEL, rows)
    column = _regression_column(prediction)
    if column is None:
        return None
    if prediction[column].dtype.kind not in "iuf":
        return _classify(prediction, column, rows)
    return _regress(prediction, column, rows, tolerance_rel)


def scoring_columns(prediction: Frame) -> tuple[str, ...] | None:
    """The columns `score_prediction` reads, in frame order; None when it never scores
    `prediction`. Scoring the frame of just these columns gives the same samples."""
    if LABEL in prediction:
        return _with_probabilities(prediction, LABEL)
    column = _regression_column(prediction)
    if column is None:
        return None
    if prediction[column].dtype.kind not in "iuf":
        return _with_probabilities(prediction, column)
    return (column,)


def _with_probabilities(prediction: Frame, label: str) -> tuple[str, ...]:
    return tuple(name for name in prediction if name == label or prediction[name].dtype.kind == "f")


def _rows(actual: Actual, n_rows: int) -> Sequence[Scalar] | None:
    if isinstance(actual, tuple):
        return actual if len(actual) == n_rows else None
    return (actual,) if n_rows == 1 else None


def _regression_column(prediction: Frame) -> str | None:
    if PREDICTION in prediction:
        return PREDICTION
    numeric = [name for name in prediction if prediction[name].dtype.kind in "iuf"]
    return numeric[0] if len(numeric) == 1 else None


def _regress(
    prediction: Frame, column: str, rows: Sequence[Scalar], tolerance_rel: float
) -> list[Sample] | None:
    samples: list[Sample] = []
    for row, actual in enumerate(rows):
        predicted = prediction.row_value(column, row)
        if not (_is_number(actual) and _is_number(predicted)):
            return None
        truth = float(actual)
        error = float(predicted) - truth
        if not math.isfinite(error):
            return None
        samples.append(RegressionSample(error, abs(error) <= tolerance_rel * abs(truth)))
    return samples


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _classify(prediction: Frame, column: str, rows: Sequence[Scalar]) -> list[Sample] | None:
    probabilities = _probability_columns(prediction, column)
    samples: list[Sample] = []
    for row, actual in enumerate(rows):
        predicted = label_key(prediction.row_value(column, row))
        expected = label_key(actual)
        if predicted is None or expected is None:
            return None
        log_loss = None
        if probabilities:
            name = probabilities.get(expected)
            probability = 0.0 if name is None else prediction.row_value(name, row)
            if not _is_number(probability):
                return None  # a missing probability: the model did not really answer
            clamped = min(max(float(probability), LOG_LOSS_EPSILON), 1.0)
            log_loss = -math.log(clamped)
        samples.append(ClassificationSample(predicted == expected, log_loss))
    return samples


def _probability_columns(prediction: Frame, label: str) -> dict[LabelKey, str]:
    """Class → name of its probability column (the Float columns other than the label)."""
    names = [n for n in prediction if n != label and prediction[n].dtype.kind == "f"]
    columns = {_text_key(name): name for name in reversed(names)}  # the first name wins
    for name in names:
        if name.startswith(_PROBA_PREFIX):
            columns.setdefault(_text_key(name.removeprefix(_PROBA_PREFIX)), name)
    return columns
