"""Rolling metrics of one servable: the averages over its most recent joined samples."""

from __future__ import annotations

import collections
import math

from forestflow.domain.metrics import ACCURACY, LOG_LOSS, MAE, RMSE, samples_name
from forestflow.feedback.scoring import ClassificationSample, RegressionSample, Sample


class RollingMetrics:
    """The last `size` regression and the last `size` classification samples of a servable.

    Guarantees: `values()` covers exactly the samples still in the window (older ones
    are forgotten, oldest first); a metric is absent until a sample feeds it; log-loss
    averages only the classification samples that carry a probability; a value that is
    not finite (an error too large for a float) is left out rather than stored. Beside
    each metric, `<metric>Samples` counts the samples it averages (at most `size`): what
    the policies' `minSamples` is compared with (SPEC §6). The windows live in memory, so
    after a restart a metric rests again on the samples joined since.
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
        """The current metrics — MAE and RMSE, accuracy and log-loss, as far as known — each
        with `<metric>Samples`, the number of samples it averages."""
        averages: dict[str, tuple[float, int]] = {}
        if self._regression:
            errors = [s.error for s in self._regression]
            n = len(errors)
            averages[MAE] = (math.fsum(abs(e) for e in errors) / n, n)
            averages[RMSE] = (math.sqrt(math.fsum(e * e for e in errors) / n), n)
        if self._classification:
            n = len(self._classification)
            averages[ACCURACY] = (sum(s.success for s in self._classification) / n, n)
            losses = [s.log_loss for s in self._classification if s.log_loss is not None]
            if losses:
                averages[LOG_LOSS] = (math.fsum(losses) / len(losses), len(losses))
        values: dict[str, float] = {}
        for name, (value, samples) in averages.items():
            if math.isfinite(value):
                values[name] = value
                values[samples_name(name)] = float(samples)
        return values
