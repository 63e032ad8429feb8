"""`GET /metrics`: the server's metrics in the Prometheus text format (docs/metrics.md).

Everything is on a registry of the app's own (no process-global state): the collectors
of `metric_collectors.py`, which read the server's state when scraped, and the process
collector (`process_*`: CPU, memory, open files).
"""

from __future__ import annotations

from fastapi import APIRouter
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.responses import Response

from forestflow import __version__
from forestflow.api.rest.metric_collectors import (
    HttpCollector,
    MetricSources,
    ServableCollector,
    ServerCollector,
)
from forestflow.api.rest.openapi import error_responses
from forestflow.errors import AuthenticationRequired, HostNotAllowed, PermissionDenied

__all__ = ["CONTENT_TYPE", "MetricSources", "build_metrics_router", "build_registry"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _BuildInfo(Collector):
    """`forestflow_build_info{version}`: always 1, for joining on the version."""

    def collect(self) -> list[Metric]:
        info = GaugeMetricFamily(
            "forestflow_build_info", "The ForestFlow version serving.", labels=["version"]
        )
        info.add_metric([__version__], 1)
        return [info]


def build_registry(sources: MetricSources) -> CollectorRegistry:
    """A registry of the server's metrics, read from `sources` when collected."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_BuildInfo())
    registry.register(HttpCollector(sources.http))
    registry.register(ServableCollector(sources))
    registry.register(ServerCollector(sources))
    ProcessCollector(registry=registry)
    return registry


def build_metrics_router(sources: MetricSources) -> APIRouter:
    """The `/metrics` route over a registry of its own (no process-global state)."""
    registry = build_registry(sources)
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
