"""Telemetry gathered on the serving path and read when `/metrics` is scraped (issue 12).

Plain integers and floats, changed and read only on the event-loop thread, so no locks:
an observation costs a bisect and two additions (about 0.15 µs), where a
`prometheus_client` histogram child, which takes a lock, costs about 0.8 µs; the score
path pays several per request (docs/metrics.md). `api/rest/prometheus.py` turns these
into metric families at scrape time.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field

from forestflow.errors import ForestFlowError

LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Upper bounds of the latency histograms, in seconds: a one-row request takes well under
a millisecond, a large batch or a slow store write seconds."""

BATCH_SIZE_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
"""Upper bounds of the batch-size histograms, in requests per model call."""

OK = ("2xx", "none")
"""The outcome of a request that was answered: (status class, error kind)."""
CANCELLED = ("cancelled", "Cancelled")
"""The outcome of a request abandoned before its answer (client gone, server stopping)."""
INTERNAL = ("5xx", "InternalError")
"""The outcome of a request that failed with an unexpected exception (answered as a 500)."""


class Histogram:
    """Observations counted into fixed buckets, with their sum (Prometheus semantics: a
    value falls in the first bucket whose upper bound is >= it, or in the +Inf one)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS_S) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count one observation of `value`."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        """Observations so far."""
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it) per bucket, ending with +Inf."""
        running = 0
        buckets: list[tuple[float, int]] = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            buckets.append((bound, running))
        return buckets


def outcome_of(error: BaseException) -> tuple[str, str]:
    """(status class, error kind) of a request that failed with `error`: the class of its
    HTTP status and the name of its class in `forestflow.errors`."""
    if isinstance(error, ForestFlowError):
        return f"{int(error.status) // 100}xx", type(error).__name__
    if isinstance(error, asyncio.CancelledError):
        return CANCELLED
    return INTERNAL


class Outcomes:
    """One servable's requests of one mode: answered or failed (by outcome), and how long
    each took."""

    __slots__ = ("failures", "ok", "seconds")

    def __init__(self) -> None:
        self.ok = 0
        self.failures: dict[tuple[str, str], int] = {}
        self.seconds = Histogram(LATENCY_BUCKETS_S)

    def succeeded(self, seconds: float) -> None:
        """Count one request answered after `seconds`."""
        self.ok += 1
        self.seconds.observe(seconds)

    def failed(self, error: BaseException, seconds: float) -> None:
        """Count one request that failed with `error` after `seconds`."""
        outcome = outcome_of(error)
        self.failures[outcome] = self.failures.get(outcome, 0) + 1
        self.seconds.observe(seconds)

    def by_outcome(self) -> dict[tuple[str, str], int]:
        """Requests by (status class, error kind), answered ones under `OK`."""
        return {OK: self.ok, **self.failures}


@dataclass(slots=True)
class RequestTelemetry:
    """One servable's requests, by how they reached it."""

    served: Outcomes = field(default_factory=Outcomes)
    """Routed to it by its contract's router (`POST …/{n}/score`)."""
    direct: Outcomes = field(default_factory=Outcomes)
    """Sent to it by name (`POST …/{n}/{release}/score`), past the router."""
    shadow: Outcomes = field(default_factory=Outcomes)
    """Scored in shadow mode (counted once scored, or once failed)."""

    def modes(self) -> dict[str, Outcomes]:
        """Each mode's outcomes by the name `/metrics` gives it."""
        return {"served": self.served, "direct": self.direct, "shadow": self.shadow}


@dataclass(frozen=True, slots=True)
class ModelCalls:
    """One servable's model calls of one mode, as the runner made them."""

    batch_sizes: Histogram
    """Requests per model call."""
    seconds: Histogram
    """How long each model call took on its worker thread."""
    queued: int
    """Requests waiting now for a model call."""


@dataclass(frozen=True, slots=True)
class RunnerTelemetry:
    """What a runner tells of one servable's model calls: served and shadow apart."""

    served: ModelCalls
    shadow: ModelCalls
