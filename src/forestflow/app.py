"""Wiring: `create_app(settings)` builds every piece and owns start-up and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from fastapi import APIRouter, Depends, FastAPI

from forestflow import __version__
from forestflow.api.rest.endpoints import RestContext, build_router
from forestflow.api.rest.errors import install_error_handlers
from forestflow.api.rest.feedback import build_feedback_router
from forestflow.api.rest.prometheus import MetricSources, build_metrics_router
from forestflow.api.rest.responses import JSONResponse, wrapped
from forestflow.artifacts.base import StorageOptions
from forestflow.artifacts.cache import ArtifactCache
from forestflow.clock import Clock, SystemClock
from forestflow.config import Settings
from forestflow.control.plane import ControlPlane
from forestflow.errors import ServiceUnavailableError
from forestflow.feedback.joiner import FeedbackJoiner
from forestflow.predictionlog.sinks import FanOutSink, PredictionSink
from forestflow.serving.inference import InferenceService
from forestflow.serving.runner import InProcessRunner
from forestflow.serving.scheduler import WorkScheduler
from forestflow.store.sqlite import open_store

log = logging.getLogger(__name__)


class App:
    """A wired ForestFlow server: the ASGI app plus the services behind it."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        sinks: Mapping[str, PredictionSink] | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        data_dir = settings.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.store = open_store(data_dir)
        self.scheduler = WorkScheduler(
            workers=settings.scheduling.workers,
            shadow_queue_size=settings.scheduling.shadow_queue_size,
            max_shadow_workers=settings.scheduling.shadow_workers,
        )
        self.runner = InProcessRunner(self.scheduler)
        feedback = settings.feedback
        self.feedback = FeedbackJoiner(
            clock=self.clock,
            window_ms=int(feedback.window_s * 1000),
            max_predictions=feedback.max_predictions,
            rolling_window=feedback.rolling_window,
            regression_tolerance_rel=feedback.regression_tolerance_rel,
        )
        self.sinks = dict(sinks) if sinks is not None else build_sinks(settings, self.clock)
        # the joiner sees every event too: feedback joins with what was predicted
        self.sink = FanOutSink([*self.sinks.values(), self.feedback])
        self.control = ControlPlane(
            store=self.store,
            runner=self.runner,
            cache=ArtifactCache(data_dir / "artifacts"),
            clock=self.clock,
            storage=StorageOptions(
                s3_endpoint_url=settings.storage.s3_endpoint_url,
                mlflow_tracking_uri=settings.storage.mlflow_tracking_uri,
                timeout_s=settings.storage.timeout_s,
            ),
            snapshot_every=settings.control.snapshot_every,
        )
        self.inference = InferenceService(
            control=self.control,
            runner=self.runner,
            sink=self.sink,
            clock=self.clock,
            rng=random.Random(settings.seed),  # noqa: S311 - routing, not cryptography
        )
        self.ready = False
        self.startup_error: str | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self.asgi = self._build_asgi()

    def _build_asgi(self) -> FastAPI:
        asgi = FastAPI(
            title="ForestFlow",
            version=__version__,
            lifespan=self._lifespan,
            default_response_class=JSONResponse,
        )
        install_error_handlers(asgi)
        asgi.include_router(self._health_router())
        asgi.include_router(
            build_metrics_router(
                MetricSources(
                    sinks=self.sinks,
                    servables=lambda: [
                        m for c in self.control.contracts() for m in self.control.metrics(c)
                    ],
                    feedback=lambda: dataclasses.asdict(self.feedback.joiner_stats()),
                )
            )
        )
        context = RestContext(self.control, self.inference, self.settings.server.max_request_bytes)
        guarded = APIRouter(dependencies=[Depends(self._require_ready)])
        guarded.include_router(build_router(context))
        guarded.include_router(
            build_feedback_router(
                self.control, self.feedback, self.sinks, self.settings.server.max_request_bytes
            )
        )
        asgi.include_router(guarded)
        return asgi

    def _health_router(self) -> APIRouter:
        router = APIRouter()

        @router.get("/health/live")
        async def live() -> JSONResponse:
            return wrapped("Health", {"status": "live"})

        @router.get("/health/ready")
        async def ready() -> JSONResponse:
            self._require_ready()
            return wrapped("Health", {"status": "ready"})

        return router

    def _require_ready(self) -> None:
        if self.startup_error is not None:
            raise ServiceUnavailableError(f"start-up failed: {self.startup_error}")
        if not self.ready:
            raise ServiceUnavailableError("recovering state; not ready yet")

    @contextlib.asynccontextmanager
    async def _lifespan(self, _asgi: FastAPI) -> AsyncIterator[None]:
        # recovery runs in the background so /health/live answers while it works
        self._tasks.append(asyncio.create_task(self.start()))
        try:
            yield
        finally:
            await self.shutdown()

    async def start(self, *, periodic: bool = True) -> None:
        """Recover state, become ready, then (unless `periodic` is False) start the
        evaluation and counter-flush loops. Tests drive evaluation themselves."""
        try:
            await self.sink.start()
            await self.control.recover()
        except Exception as error:
            self.startup_error = repr(error)
            log.exception("recovery failed; the server stays unready")
            return
        self.ready = True
        log.info("ForestFlow is ready")
        if not periodic:
            return
        control = self.settings.control
        self._tasks.append(
            asyncio.create_task(self._every(control.evaluation_interval_s, self.control.evaluate))
        )
        self._tasks.append(
            asyncio.create_task(
                self._every(control.counters_flush_interval_s, self.control.flush_counters)
            )
        )

    @staticmethod
    async def _every(seconds: float, action: Callable[[], Awaitable[Any]]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await action()
            except Exception:  # one failed pass must not stop the loop
                log.exception("periodic %s failed", getattr(action, "__name__", action))

    async def shutdown(self) -> None:
        """Stop the periodic work, flush counters and close the store (once)."""
        if self._closed:
            return
        self._closed = True
        self.ready = False
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.scheduler.drain(), self.settings.server.shutdown_grace_s)
        try:
            await self.control.flush_counters()
        finally:
            await self.sink.close()
            self.scheduler.close()
            self.store.close()
        log.info("ForestFlow stopped")


def build_sinks(settings: Settings, clock: Clock) -> dict[str, PredictionSink]:
    """The prediction sinks the settings ask for, by name (files by default, Kafka if set)."""
    sinks: dict[str, PredictionSink] = {}
    files = settings.prediction_log.files
    if files.enabled:
        file_sink = PredictionSink.registry.get("files")
        sinks["files"] = file_sink(  # type: ignore[call-arg]
            files.directory or settings.data_dir / "predictions",
            max_file_bytes=files.max_file_bytes,
            max_file_age_s=files.max_file_age_s,
            buffer_size=files.buffer_size,
            max_files=files.max_files,
            clock=clock,
        )
    kafka = settings.prediction_log.kafka
    if kafka.bootstrap_servers:
        kafka_sink = PredictionSink.registry.get("kafka")
        sinks["kafka"] = kafka_sink(  # type: ignore[call-arg]
            kafka.bootstrap_servers,
            topic=kafka.topic,
            contract_topics=kafka.contract_topics,
            buffer_size=kafka.buffer_size,
            message_timeout_s=kafka.message_timeout_s,
            client_config=kafka.client_config,
        )
    return sinks


def create_app(settings: Settings, **overrides: Any) -> App:
    """Build a ForestFlow server from `settings` (see `App` for test overrides)."""
    return App(settings, **overrides)
