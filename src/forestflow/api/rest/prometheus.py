"""`GET /metrics`: counters in the Prometheus text format, collected when scraped."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from fastapi import APIRouter
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.responses import Response

from forestflow.api.rest.openapi import error_responses
from forestflow.domain.metrics import ServableMetrics
from forestflow.errors import AuthenticationRequired, HostNotAllowed, PermissionDenied
from forestflow.predictionlog.sinks import PredictionSink

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True, slots=True)
class MetricSources:
    """Where the scraped values come from (read at scrape time, never cached)."""

    sinks: Mapping[str, PredictionSink]
    servables: Callable[[], list[ServableMetrics]]
    feedback: Callable[[], Mapping[str, int]]


class _ServerCollector(Collector):
    def __init__(self, sources: MetricSources) -> None:
        self._sources = sources

    def collect(self) -> Iterator[Metric]:
        events = CounterMetricFamily(
            "forestflow_prediction_events",
            "Prediction events per sink by outcome (emitted, written, dropped).",
            labels=["sink", "outcome"],
        )
        for name, sink in self._sources.sinks.items():
            stats = sink.stats()
            events.add_metric([name, "emitted"], stats.emitted)
            events.add_metric([name, "written"], stats.written)
            events.add_metric([name, "dropped"], stats.dropped)
        yield events
        feedback = CounterMetricFamily(
            "forestflow_feedback_records",
            "Feedback records by outcome of the join.",
            labels=["outcome"],
        )
        for outcome, count in self._sources.feedback().items():
            feedback.add_metric([outcome], count)
        yield feedback
        yield from self._servable_metrics()

    def _servable_metrics(self) -> Iterator[Metric]:
        labels = ["contract", "release"]
        scored = CounterMetricFamily(
            "forestflow_scored_requests", "Served requests.", labels=labels
        )
        shadowed = CounterMetricFamily(
            "forestflow_shadowed_requests", "Requests scored in shadow mode.", labels=labels
        )
        dropped = CounterMetricFamily(
            "forestflow_shadow_dropped_requests",
            "Shadow requests dropped because the shadow queue was full.",
            labels=labels,
        )
        failed = CounterMetricFamily(
            "forestflow_shadow_failed_requests",
            "Shadow requests the servable failed to score (model crash or input mismatch).",
            labels=labels,
        )
        phase_in = GaugeMetricFamily(
            "forestflow_phase_in_percent", "Current phase-in percent.", labels=labels
        )
        for servable in self._sources.servables():
            key = [str(servable.fqrv.contract), servable.fqrv.release_version]
            scored.add_metric(key, servable.score_count)
            shadowed.add_metric(key, servable.shade_count)
            dropped.add_metric(key, servable.shadow_dropped_count)
            failed.add_metric(key, servable.shadow_failed_count)
            phase_in.add_metric(key, servable.current_phase_in_pct)
        yield from (scored, shadowed, dropped, failed, phase_in)


def build_metrics_router(sources: MetricSources) -> APIRouter:
    """The `/metrics` route over a registry of its own (no process-global state)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ServerCollector(sources))
    router = APIRouter()

    @router.get(
        "/metrics",
        summary="Prometheus metrics",
        tags=["Operations"],
        operation_id="metrics",
        responses={
            200: {
                "description": "OK",
                "content": {CONTENT_TYPE: {"schema": {"type": "string"}}},
            },
            # authentication is the app's (the router is included with its permission check)
            **error_responses([HostNotAllowed, AuthenticationRequired, PermissionDenied]),
        },
    )
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE)

    return router
