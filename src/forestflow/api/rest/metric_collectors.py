"""What `/metrics` exports, read from the server's state when scraped (docs/metrics.md).

Nothing here runs per request: the serving path only adds to plain counters and
histograms (`control.telemetry`, `http_metrics`), and gauges (queue depths, phase-in,
traffic share, validity, backlogs) are read from the state as it is at scrape time.
Servable labels come only from the servables the state has: a deleted servable's series
go with it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from forestflow.api.rest.http_metrics import HttpTelemetry
from forestflow.control.plane import ControlPlane
from forestflow.control.routes import ContractRoute
from forestflow.control.runner import ServableRunner
from forestflow.control.telemetry import Histogram
from forestflow.domain.fqrv import FQRV
from forestflow.domain.metrics import ServableMetrics
from forestflow.errors import UnknownContract
from forestflow.feedback.joiner import FeedbackJoiner
from forestflow.predictionlog.sinks import PredictionSink
from forestflow.serving.scheduler import WorkScheduler

SERVABLE = ["contract", "release"]
SERVABLE_MODE = [*SERVABLE, "mode"]


@dataclass(frozen=True, slots=True)
class MetricSources:
    """Where the scraped values come from (read at scrape time, never cached)."""

    control: ControlPlane
    runner: ServableRunner
    sinks: Mapping[str, PredictionSink]
    """The prediction sinks by name (files, Kafka)."""
    emitter: PredictionSink
    """What hands events to the sinks; its backlog is what it holds now."""
    feedback: FeedbackJoiner
    http: HttpTelemetry
    scheduler: WorkScheduler | None = None
    """The model workers (None: the runner schedules its own work)."""


def histogram(name: str, documentation: str, labels: list[str]) -> HistogramMetricFamily:
    """An empty histogram family."""
    return HistogramMetricFamily(name, documentation, labels=labels)


def add_histogram(family: HistogramMetricFamily, labels: list[str], values: Histogram) -> None:
    """Add `values` to `family` as the series of `labels`."""
    buckets = [(_le(bound), count) for bound, count in values.cumulative()]
    family.add_metric(labels, buckets, values.sum)


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def servable_labels(fqrv: FQRV) -> list[str]:
    """The `contract` and `release` labels of `fqrv`."""
    return [str(fqrv.contract), fqrv.release_version]


class ServableCollector(Collector):
    """Per servable: requests by outcome, latency, model calls, queues, policy state."""

    def __init__(self, sources: MetricSources) -> None:
        self._sources = sources

    def collect(self) -> Iterator[Metric]:  # noqa: D102
        control = self._sources.control
        servables: list[tuple[ServableMetrics, ContractRoute | None]] = []
        for contract in control.contracts():
            try:
                route: ContractRoute | None = control.route(contract)
            except UnknownContract:  # created, not evaluated yet
                route = None
            servables += [(metrics, route) for metrics in control.metrics(contract)]
        yield from _state_families(servables)
        yield from _request_families(servables)
        known = {metrics.fqrv for metrics, _ in servables}
        yield from _model_call_families(self._sources.runner, known)


def _state_families(
    servables: Iterable[tuple[ServableMetrics, ContractRoute | None]],
) -> Iterator[Metric]:
    scored = CounterMetricFamily(
        "forestflow_scored_requests",
        "Requests the servable answered through its contract's router (scoreCount).",
        labels=SERVABLE,
    )
    shadowed = CounterMetricFamily(
        "forestflow_shadowed_requests",
        "Requests the servable scored in shadow mode (shadeCount).",
        labels=SERVABLE,
    )
    dropped = CounterMetricFamily(
        "forestflow_shadow_dropped_requests",
        "Shadow requests dropped: over the shadow budget, or the shadow queue was full.",
        labels=SERVABLE,
    )
    failed = CounterMetricFamily(
        "forestflow_shadow_failed_requests",
        "Shadow requests the servable failed to score (model crash or input mismatch).",
        labels=SERVABLE,
    )
    phase_in = GaugeMetricFamily(
        "forestflow_phase_in_percent", "Current phase-in percent.", labels=SERVABLE
    )
    share = GaugeMetricFamily(
        "forestflow_traffic_share",
        "Share (0-1) of its contract's requests the router sends the servable now.",
        labels=SERVABLE,
    )
    valid = GaugeMetricFamily(
        "forestflow_servable_valid",
        "1 if the servable was valid at the last evaluation pass, else 0.",
        labels=SERVABLE,
    )
    loaded = GaugeMetricFamily(
        "forestflow_servable_loaded",
        "1 if the servable's model is loaded, 0 if it could not be loaded.",
        labels=SERVABLE,
    )
    shares: dict[int, dict[FQRV, float]] = {}
    for metrics, route in servables:
        key = servable_labels(metrics.fqrv)
        scored.add_metric(key, metrics.score_count)
        shadowed.add_metric(key, metrics.shade_count)
        dropped.add_metric(key, metrics.shadow_dropped_count)
        failed.add_metric(key, metrics.shadow_failed_count)
        phase_in.add_metric(key, metrics.current_phase_in_pct)
        plan = shares.setdefault(id(route), route.plan.shares() if route else {})
        share.add_metric(key, plan.get(metrics.fqrv, 0.0))
        valid.add_metric(key, 1 if metrics.last_valid else 0)
        loaded.add_metric(key, 1 if metrics.state == "loaded" else 0)
    yield from (scored, shadowed, dropped, failed, phase_in, share, valid, loaded)


def _request_families(
    servables: Iterable[tuple[ServableMetrics, ContractRoute | None]],
) -> Iterator[Metric]:
    requests = CounterMetricFamily(
        "forestflow_requests",
        "Requests a servable took, by mode (served, direct, shadow) and outcome "
        "(status class and error kind).",
        labels=[*SERVABLE_MODE, "status", "error"],
    )
    seconds = histogram(
        "forestflow_request_duration_seconds",
        "Seconds from a servable taking a request to its prediction (or failure), "
        "waiting for a model call included.",
        SERVABLE_MODE,
    )
    for metrics, route in servables:
        servable = route.servables.get(metrics.fqrv) if route else None
        if servable is None:  # not loaded: no requests
            continue
        key = servable_labels(metrics.fqrv)
        for mode, outcomes in servable.counters.requests.modes().items():
            for (status, error), count in outcomes.by_outcome().items():
                requests.add_metric([*key, mode, status, error], count)
            add_histogram(seconds, [*key, mode], outcomes.seconds)
    yield from (requests, seconds)


def _model_call_families(runner: ServableRunner, known: set[FQRV]) -> Iterator[Metric]:
    seconds = histogram(
        "forestflow_model_duration_seconds",
        "Seconds per model call (one batch) on its worker thread.",
        SERVABLE_MODE,
    )
    sizes = histogram("forestflow_batch_size", "Requests per model call.", SERVABLE_MODE)
    queued = GaugeMetricFamily(
        "forestflow_queue_depth",
        "Requests waiting now for a model call of the servable.",
        labels=SERVABLE_MODE,
    )
    for fqrv, telemetry in sorted(runner.telemetry().items()):
        if fqrv not in known:  # still being deployed, or just deleted
            continue
        key = servable_labels(fqrv)
        for mode, calls in (("served", telemetry.served), ("shadow", telemetry.shadow)):
            add_histogram(seconds, [*key, mode], calls.seconds)
            add_histogram(sizes, [*key, mode], calls.batch_sizes)
            queued.add_metric([*key, mode], calls.queued)
    yield from (seconds, sizes, queued)


class HttpCollector(Collector):
    """HTTP requests by route template, method and status class, and their latency."""

    def __init__(self, http: HttpTelemetry) -> None:
        self._http = http

    def collect(self) -> Iterator[Metric]:  # noqa: D102
        requests = CounterMetricFamily(
            "forestflow_http_requests",
            "HTTP requests by route template, method and status class.",
            labels=["route", "method", "status"],
        )
        seconds = histogram(
            "forestflow_http_request_duration_seconds",
            "Seconds from an HTTP request's arrival to its answer.",
            ["route", "method"],
        )
        for template, method, calls in self._http.routes():
            for status, count in calls.by_status_class().items():
                requests.add_metric([template, method, status], count)
            add_histogram(seconds, [template, method], calls.seconds)
        yield from (requests, seconds)


class ServerCollector(Collector):
    """Prediction log, feedback, state store and model workers."""

    def __init__(self, sources: MetricSources) -> None:
        self._sources = sources

    def collect(self) -> Iterator[Metric]:  # noqa: D102
        yield from self._prediction_log()
        yield from self._feedback()
        yield from self._store()
        yield from self._workers()

    def _prediction_log(self) -> Iterator[Metric]:
        events = CounterMetricFamily(
            "forestflow_prediction_events",
            "Prediction events per sink by outcome (emitted, written, dropped).",
            labels=["sink", "outcome"],
        )
        backlog = GaugeMetricFamily(
            "forestflow_prediction_backlog_events",
            "Prediction events held now, not yet written: by the emitter (sink=emitter) "
            "or in a sink's buffer.",
            labels=["sink"],
        )
        stats = self._sources.emitter.stats()
        backlog.add_metric(["emitter"], stats.emitted - stats.written - stats.dropped)
        for name, sink in self._sources.sinks.items():
            stats = sink.stats()
            events.add_metric([name, "emitted"], stats.emitted)
            events.add_metric([name, "written"], stats.written)
            events.add_metric([name, "dropped"], stats.dropped)
            backlog.add_metric([name], max(0, stats.emitted - stats.written - stats.dropped))
        yield from (events, backlog)

    def _feedback(self) -> Iterator[Metric]:
        joiner = self._sources.feedback
        control = self._sources.control
        stats, tallies = joiner.joiner_stats(), joiner.tallies()
        pending = GaugeMetricFamily(
            "forestflow_feedback_pending_predictions",
            "Predictions kept now, waiting for their feedback.",
            value=stats.pending,
        )
        predictions = CounterMetricFamily(
            "forestflow_feedback_predictions",
            "Kept predictions by what became of them (joined, expired, evicted), and "
            "prediction events not kept for want of a key (unkeyed).",
            labels=["outcome"],
        )
        for outcome in ("joined", "expired", "evicted", "unkeyed"):
            predictions.add_metric([outcome], getattr(stats, outcome))
        records = CounterMetricFamily(
            "forestflow_feedback_records",
            "Feedback records per contract by outcome (matched, unknown, mismatched, refused).",
            labels=["contract", "outcome"],
        )
        contracts = set(control.contracts())
        for contract, outcomes in sorted(tallies.records.items()):
            if contract in contracts:
                for outcome, count in outcomes.items():
                    records.add_metric([str(contract), outcome], count)
        joined = CounterMetricFamily(
            "forestflow_feedback_joined_predictions",
            "Predictions of the servable joined with feedback.",
            labels=SERVABLE,
        )
        for fqrv, count in sorted(tallies.joined.items()):
            if fqrv.contract in contracts:
                joined.add_metric(servable_labels(fqrv), count)
        yield from (pending, predictions, records, joined)

    def _store(self) -> Iterator[Metric]:
        seconds = histogram(
            "forestflow_store_write_duration_seconds",
            "Seconds per state-store write, by operation.",
            ["operation"],
        )
        for operation, values in self._sources.control.store_write_seconds().items():
            add_histogram(seconds, [operation], values)
        yield seconds

    def _workers(self) -> Iterator[Metric]:
        scheduler = self._sources.scheduler
        if scheduler is None:
            return
        workers = GaugeMetricFamily(
            "forestflow_model_workers", "Threads that run model calls.", value=scheduler.workers
        )
        busy = GaugeMetricFamily(
            "forestflow_model_workers_busy",
            "Model worker threads running a call now, by mode.",
            labels=["mode"],
        )
        busy.add_metric(["served"], scheduler.stats.served_running)
        busy.add_metric(["shadow"], scheduler.stats.shadow_running)
        capacity = GaugeMetricFamily(
            "forestflow_shadow_queue_capacity",
            "Shadow requests the shadow queue holds at most (all servables together).",
            value=scheduler.shadow_queue_size,
        )
        yield from (workers, busy, capacity)
