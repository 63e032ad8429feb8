"""Rolling metrics of one servable: the averages over its most recent joined samples."""

from __future__ import annotations

import collections
import math

from forestflow.domain.metrics import ACCURACY, LOG_LOSS, MAE, RMSE
from forestflow.feedback.scoring import ClassificationSample, RegressionSample, Sample


class RollingMetrics:
    """The last `size` regression and the last `size` classification samples of a servable.

    Guarantees: `values()` covers exactly the samples still in the window (older ones
    are forgotten, oldest first); a metric is absent until a sample feeds it; log-loss
    averages only the classification samples that carry a probability; a value that is
    not finite (an error too large for a float) is left out rather than stored.
    """

    def __init__(self, size: int) -> None:
        self._regression: collections.deque[RegressionSample] = collections.deque(maxlen=size)
        self._classification: collections.deque[ClassificationSample] = collections.deque(
            maxlen=size
        )

    def add(self, sample: Sample) -> None:
        """Put `sample` in its window, forgetting the oldest one when the window is full."""
        if isinstance(sample, RegressionSample):
            self._regression.append(sample)
        else:
            self._classification.append(sample)

    def values(self) -> dict[str, float]:
        """The current metrics: MAE and RMSE, accuracy and log-loss, as far as known."""
        values: dict[str, float] = {}
        if self._regression:
            errors = [s.error for s in self._regression]
            n = len(errors)
            values[MAE] = math.fsum(abs(e) for e in errors) / n
            values[RMSE] = math.sqrt(math.fsum(e * e for e in errors) / n)
        if self._classification:
            values[ACCURACY] = sum(s.success for s in self._classification) / len(
                self._classification
            )
            losses = [s.log_loss for s in self._classification if s.log_loss is not None]
            if losses:
                values[LOG_LOSS] = math.fsum(losses) / len(losses)
        return {name: value for name, value in values.items() if math.isfinite(value)}
