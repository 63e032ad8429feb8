"""What the dashboard remembers between two looks: each servable's phase-in, counters,
errors and latency histogram over time.

The server keeps no history of metrics (the store holds the current values only), so the
dashboard samples them itself: `sample()` reads every contract's metrics and request
telemetry and appends one `Sample` per servable to a bounded series, at most once per
`interval_ms` however many pages poll. The page polls every few seconds, and each poll
samples first; with no page open nothing is sampled and nothing grows. A series holds
`keep` samples (3 minutes at one a second), and ends when its servable goes.

What happened over the last `window_ms` is the difference between the first and last
samples in it (`window`): the observed traffic split (each servable's share of the
`scoreCount` added), the errors and the latency of the requests in it.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from forestflow.clock import Clock
from forestflow.control.plane import ControlPlane
from forestflow.control.telemetry import RequestTelemetry
from forestflow.domain.fqrv import FQRV, Contract
from forestflow.domain.metrics import ServableMetrics
from forestflow.errors import ForestFlowError, UnknownContract

DEFAULT_INTERVAL_MS = 1000
DEFAULT_KEEP = 180
DEFAULT_WINDOW_MS = 10_000


@dataclass(frozen=True, slots=True)
class Sample:
    """One servable's phase-in and counters at one moment."""

    at_ms: int
    phase_in_pct: int
    score_count: int
    shade_count: int
    served_seconds: tuple[int, ...] = ()
    """Served requests per latency bucket since the server started (`LATENCY_BUCKETS_S`)."""
    shadow_seconds: tuple[int, ...] = ()
    """Shadow requests per latency bucket since the server started."""
    served_errors: int = 0
    """Served requests that failed since the server started."""


@dataclass(slots=True)
class _Series:
    created_at_ms: int
    samples: collections.deque[Sample]


class MetricsSampler:
    """Bounded per-servable series of phase-in and counters (see the module doc)."""

    def __init__(
        self,
        control: ControlPlane,
        clock: Clock,
        *,
        interval_ms: int = DEFAULT_INTERVAL_MS,
        keep: int = DEFAULT_KEEP,
    ) -> None:
        self._control = control
        self._clock = clock
        self.interval_ms = interval_ms
        self._keep = keep
        self._series: dict[FQRV, _Series] = {}
        self._sampled_at_ms: int | None = None

    def sample(self) -> None:
        """Sample every servable, unless the last sample is less than `interval_ms` old."""
        now = self._clock.now_ms()
        if self._sampled_at_ms is not None and now - self._sampled_at_ms < self.interval_ms:
            return
        self._sampled_at_ms = now
        seen: set[FQRV] = set()
        for contract in self._control.contracts():
            try:
                metrics = self._control.metrics(contract)
            except ForestFlowError:  # deleted since it was listed
                continue
            telemetry = request_telemetry(self._control, contract)
            for servable in metrics:
                seen.add(servable.fqrv)
                self._append(servable, telemetry.get(servable.fqrv), now)
        for fqrv in [fqrv for fqrv in self._series if fqrv not in seen]:  # gone
            del self._series[fqrv]

    def _append(
        self, metrics: ServableMetrics, telemetry: RequestTelemetry | None, now: int
    ) -> None:
        series = self._series.get(metrics.fqrv)
        # a servable deployed again under the same FQRV starts a series of its own
        if series is None or series.created_at_ms != metrics.created_at_ms:
            series = _Series(metrics.created_at_ms, collections.deque(maxlen=self._keep))
            self._series[metrics.fqrv] = series
        sample = Sample(now, metrics.current_phase_in_pct, metrics.score_count, metrics.shade_count)
        if telemetry is not None:
            sample = dataclasses.replace(
                sample,
                served_seconds=tuple(telemetry.served.seconds.counts),
                shadow_seconds=tuple(telemetry.shadow.seconds.counts),
                served_errors=sum(telemetry.served.failures.values()),
            )
        series.samples.append(sample)

    def history(self, fqrv: FQRV) -> list[Sample]:
        """The servable's samples, oldest first (empty when it was never sampled)."""
        series = self._series.get(fqrv)
        return list(series.samples) if series else []

    def window(
        self, fqrv: FQRV, window_ms: int = DEFAULT_WINDOW_MS
    ) -> tuple[Sample, Sample] | None:
        """The servable's first and last samples of the last `window_ms`; None when there are
        not two."""
        series = self._series.get(fqrv)
        if series is None:
            return None
        now = self._clock.now_ms()
        recent = [s for s in series.samples if now - s.at_ms <= window_ms]
        return (recent[0], recent[-1]) if len(recent) >= 2 else None

    def observed_shares(
        self, contract: Contract, window_ms: int = DEFAULT_WINDOW_MS
    ) -> tuple[Mapping[FQRV, float], int] | None:
        """Each servable's share (0–1) of the requests the contract served over the last
        `window_ms`, from `scoreCount` deltas, and that number of requests; None when there
        are not two samples in the window or nothing was served."""
        deltas: dict[FQRV, int] = {}
        for fqrv in self._series:
            span = self.window(fqrv, window_ms) if fqrv.contract == contract else None
            if span is not None:
                deltas[fqrv] = span[1].score_count - span[0].score_count
        total = sum(deltas.values())
        if total <= 0:
            return None
        return {fqrv: delta / total for fqrv, delta in deltas.items()}, total


def request_telemetry(control: ControlPlane, contract: Contract) -> dict[FQRV, RequestTelemetry]:
    """Each loaded servable's request outcomes and latencies (the serving path counts them
    on the servable's counters; `/metrics` exports the same), as of now."""
    try:
        route = control.route(contract)
    except UnknownContract:  # not evaluated yet
        return {}
    return {fqrv: servable.counters.requests for fqrv, servable in route.servables.items()}
