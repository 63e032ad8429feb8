"""Per-servable metrics: the facts every policy and router decides on."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from forestflow.domain.codec import wire
from forestflow.domain.fqrv import FQRV
from forestflow.errors import InvalidField

DEFAULT_PERFORMANCE_METRIC = "accuracy"
"""The metric `PerformanceBasedValidity` reads when the rule names none."""

DEFAULT_MIN_SAMPLES = 30
"""`minSamples` of every policy and router that reads metrics, unless it sets its own: the
joined samples a metric must rest on before it decides anything (SPEC §6, issue 11)."""
SAMPLES_SUFFIX = "Samples"
"""`performanceMetrics["<metric>Samples"]` holds the joined samples behind `<metric>`."""

# Names of the `performanceMetrics` the feedback loop maintains (SPEC §6). External
# evaluators may set any other name through `PUT …/metrics`.
MAE = "mae"
"""Regression: mean absolute error over the rolling window (lower is better)."""
RMSE = "rmse"
"""Regression: root mean squared error over the rolling window (lower is better)."""
ACCURACY = "accuracy"
"""Classification: share of correct labels over the rolling window (higher is better)."""
LOG_LOSS = "logLoss"
"""Classification: mean negative log-likelihood of the actual class (lower is better)."""
FEEDBACK_COUNT = "feedbackCount"
"""Predictions of the servable joined with ground truth since start (all time)."""
REWARD_SUCCESSES = "rewardSuccesses"
"""Bandit rewards: joined predictions that were right (all time)."""
REWARD_FAILURES = "rewardFailures"
"""Bandit rewards: joined predictions that were wrong (all time)."""


def samples_name(metric: str) -> str:
    """The `performanceMetrics` name counting the samples behind `metric` (`maeSamples`)."""
    return metric + SAMPLES_SUFFIX


def check_min_samples(min_samples: int) -> None:
    """Refuse a `minSamples` that is not an integer >= 1."""
    if isinstance(min_samples, bool) or not isinstance(min_samples, int) or min_samples < 1:
        raise InvalidField("must be an integer >= 1", field="minSamples")


class Ordering(enum.Enum):
    """Which direction of a performance metric is better."""

    DESC = "DESC"
    """Higher is better (accuracy, AUC)."""
    ASC = "ASC"
    """Lower is better (MAE, RMSE, log-loss)."""

    def rank_key(self, value: float | None) -> float:
        """A sort key where smaller means better; a missing value ranks as documented in SPEC §1.5.

        DESC: a missing metric counts as 0. ASC: a missing metric is the worst (+inf).
        NaN counts as missing: as a sort key it would make the ranking depend on input order.
        """
        if value is not None and math.isnan(value):
            value = None
        if self is Ordering.DESC:
            return -(value if value is not None else 0.0)
        return value if value is not None else math.inf

    def meets(self, value: float, threshold: float) -> bool:
        """Whether `value` is at least as good as `threshold`."""
        return value >= threshold if self is Ordering.DESC else value <= threshold


@dataclass(frozen=True, slots=True)
class ServableMetrics:
    """What the server knows of one servable at one moment (SPEC §1)."""

    fqrv: FQRV
    created_at_ms: int = wire("createdAtMS")
    became_valid_at_ms: int | None = wire("becameValidAtMS", default=None)
    score_count: int = 0
    shade_count: int = 0
    current_phase_in_pct: int = 0
    performance_metrics: Mapping[str, float] = field(default_factory=dict)
    shadow_dropped_count: int = 0
    """Shadow requests for this servable dropped: over the shadow budget, or the shadow
    queue was full."""
    shadow_failed_count: int = 0
    """Shadow requests this servable failed to score (the model crashed or refused the input)."""
    state: str = "loaded"
    """`loaded` (in memory, policies apply) or `failed` (recorded but not loadable)."""
    failure: str | None = None
    """Why a `failed` servable could not be loaded (missing, damaged or changed artifact…)."""
    last_valid: bool | None = field(default=None, metadata={"internal": True})
    """Whether the servable was valid at the last evaluation pass; None before its first
    one (just deployed, or just recovered). Kept only in memory, never sent."""

    def known_metric(self, name: str, min_samples: int) -> float | None:
        """`performanceMetrics[name]` if it may decide, else None (the metric is unknown).

        A metric may decide when it is present, not NaN, and rests on at least
        `min_samples` joined samples. The samples are read from `<name>Samples`, which the
        feedback loop keeps beside every metric it computes; a metric without that entry
        was set by an external evaluator (`PUT …/metrics`), who vouches for it: it decides
        as it is. An evaluator may set `<name>Samples` too, and then `minSamples` applies.
        """
        value = self.performance_metrics.get(name)
        if value is None or math.isnan(value):
            return None
        samples = self.performance_metrics.get(samples_name(name))
        if samples is not None and not samples >= min_samples:  # NaN samples: too few
            return None
        return value
