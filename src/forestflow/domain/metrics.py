"""Per-servable metrics: the facts every policy and router decides on."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from forestflow.domain.codec import wire
from forestflow.domain.fqrv import FQRV

DEFAULT_PERFORMANCE_METRIC = "accuracy"
"""The metric `PerformanceBasedValidity` reads when the rule names none."""

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
    """Shadow requests for this servable dropped because the shadow queue was full."""
    shadow_failed_count: int = 0
    """Shadow requests this servable failed to score (the model crashed or refused the input)."""
    state: str = "loaded"
    """`loaded` (in memory, policies apply) or `failed` (recorded but not loadable)."""
    failure: str | None = None
    """Why a `failed` servable could not be loaded (missing, damaged or changed artifact…)."""
