"""Wiring: `create_app(settings)` builds every piece and owns start-up and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from forestflow import __version__
from forestflow.api.graphpipe import build_graphpipe_router
from forestflow.api.grpc.server import OpenInferenceGrpcServer
from forestflow.api.mlflow_scoring import build_mlflow_router
from forestflow.api.openinference.models import ModelCatalog
from forestflow.api.openinference.rest import build_openinference_router
from forestflow.api.rest.admin import build_admin_router
from forestflow.api.rest.auth import Guard, HostGuard, auth_required
from forestflow.api.rest.endpoints import RestContext, build_router
from forestflow.api.rest.errors import install_error_handlers
from forestflow.api.rest.feedback import build_feedback_router
from forestflow.api.rest.http_metrics import HttpTelemetry
from forestflow.api.rest.openapi import install_openapi
from forestflow.api.rest.prediction_events import build_prediction_events_router
from forestflow.api.rest.prometheus import MetricSources, build_metrics_router
from forestflow.api.rest.responses import JSONResponse, wrapped
from forestflow.api.rest.route_docs import HEALTH_LIVE, HEALTH_READY
from forestflow.api.rest.score_lane import ScoreLane
from forestflow.api.ui.routes import Dashboard
from forestflow.artifacts.base import StorageOptions
from forestflow.artifacts.cache import ArtifactCache
from forestflow.clock import Clock, SystemClock
from forestflow.config import Settings
from forestflow.control.plane import ControlPlane
from forestflow.control.runner import ServableRunner
from forestflow.control.tokens import TokenRegistry
from forestflow.domain.roles import Permission
from forestflow.errors import ServiceUnavailableError
from forestflow.feedback.joiner import FeedbackJoiner
from forestflow.flavors.base import LoadPolicy
from forestflow.predictionlog.emitter import PredictionEmitter
from forestflow.predictionlog.ring import RingSink
from forestflow.predictionlog.sinks import PredictionSink
from forestflow.serving import heap
from forestflow.serving.inference import InferenceService
from forestflow.serving.runner import InProcessRunner
from forestflow.serving.scheduler import WorkScheduler
from forestflow.store.base import Store
from forestflow.store.sqlite import open_store

log = logging.getLogger(__name__)


class StartupError(Exception):
    """The server cannot start as configured; the message says why and what to do."""


class App:
    """A wired ForestFlow server: the ASGI app (`asgi`, to serve), the framework app behind
    it (`api`: routes and API documentation) and the services behind both."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        sinks: Mapping[str, PredictionSink] | None = None,
        reinitialize: bool = False,
        runner: ServableRunner | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        data_dir = settings.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.store = open_store(data_dir)
        try:
            check_state(data_dir, self.store, reinitialize=reinitialize)
            self.tokens = TokenRegistry(self.store, self.clock)
            self.guard = Guard(self.tokens if self._auth_required() else None)
            if self.guard.enabled and not self.tokens.has_admin():
                raise StartupError(
                    f"authentication is required ({self._auth_reason()}) but no admin token "
                    "exists; create one with: forestflow token create "
                    f"--data-dir {data_dir} --role admin --name <name>"
                )
        except BaseException:
            self.store.close()
            raise
        self.scheduler = WorkScheduler(
            workers=settings.scheduling.workers,
            shadow_queue_size=settings.scheduling.shadow_queue_size,
            max_shadow_workers=settings.scheduling.shadow_workers,
            max_shadow_batch=settings.scheduling.max_shadow_batch_size,
            shadow_batch_wait_s=settings.scheduling.shadow_batch_wait_s,
            shadow_time_share=settings.scheduling.shadow_time_share,
        )
        security = settings.security
        self.runner: ServableRunner = runner or InProcessRunner(
            self.scheduler,
            load_policy=LoadPolicy(
                allow_unsafe_formats=security.allow_unsafe_formats,
                skops_trusted_types=tuple(security.skops_trusted_types),
            ),
            max_batch_size=settings.scheduling.max_batch_size,
        )
        feedback = settings.feedback
        self.feedback = FeedbackJoiner(
            clock=self.clock,
            window_ms=int(feedback.window_s * 1000),
            max_prediction_bytes=feedback.max_prediction_bytes,
            max_predictions=feedback.max_predictions,
            rolling_window=feedback.rolling_window,
            regression_tolerance_rel=feedback.regression_tolerance_rel,
        )
        self.sinks = dict(sinks) if sinks is not None else build_sinks(settings, self.clock)
        # one emitter encodes each event once, off the event loop, for every sink; the
        # joiner sees every event too and takes its part at once, so feedback sent right
        # after a response finds its prediction
        # the latest events, for GET /prediction-log/events and the dashboard
        self.events = RingSink()
        self.sink = PredictionEmitter([*self.sinks.values(), self.feedback, self.events])
        # shadow events are encoded on the emitter's thread: their CPU counts for shadows
        self.scheduler.budget.meter(lambda: self.sink.shadow_cpu_seconds)
        self.control = ControlPlane(
            store=self.store,
            runner=self.runner,
            cache=ArtifactCache(data_dir / "artifacts"),
            clock=self.clock,
            storage=storage_options(settings),
            snapshot_every=settings.control.snapshot_every,
            fetch_workers=settings.storage.max_concurrent_fetches,
            on_retire=[self.feedback.forget],
        )
        self.inference = InferenceService(
            control=self.control,
            runner=self.runner,
            sink=self.sink,
            clock=self.clock,
            rng=random.Random(settings.seed),  # noqa: S311 - routing, not cryptography
        )
        # shadow outcomes are counted and logged in batches, after their call's completion
        self.scheduler.budget.meter(lambda: self.inference.shadow_cpu_seconds)
        self.http_metrics = HttpTelemetry()  # filled by the ScoreLane, read by /metrics
        self.ready = False
        self.startup_error: str | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self.api = self._build_api()
        security = settings.security
        # what the server runs: the score routes in front of the framework (score_lane.py)
        self.asgi = ScoreLane(
            self.api,
            inference=self.inference,
            guard=self.guard,
            require_ready=self._require_ready,
            max_request_bytes=settings.server.max_request_bytes,
            allowed_hosts=None if self.guard.enabled else self._allowed_hosts(),
            cors=bool(security.cors_origins),
            catalog=ModelCatalog(self.control, self.inference),
            http=self.http_metrics,
        )

    def _allowed_hosts(self) -> list[str]:
        return [self.settings.server.host, *self.settings.security.allowed_hosts]

    def _build_api(self) -> FastAPI:
        """The web framework app: every route, the API documentation, the error handlers."""
        asgi = FastAPI(
            title="ForestFlow",
            version=__version__,
            lifespan=self._lifespan,
            default_response_class=JSONResponse,
        )
        install_error_handlers(asgi)
        install_openapi(asgi, auth=self.guard.enabled)  # the document's shared parts
        self._install_browser_guards(asgi)
        guard = self.guard
        asgi.include_router(self._health_router())
        # /ui: HTML over the same permission checks as the JSON routes (docs/dashboard.md)
        self.dashboard = Dashboard(
            self.control,
            self.events,
            guard,
            self.clock,
            require_ready=self._require_ready,
            version=__version__,
        )
        asgi.include_router(self.dashboard.router())
        asgi.include_router(
            build_metrics_router(
                MetricSources(
                    control=self.control,
                    runner=self.runner,
                    sinks=self.sinks,
                    emitter=self.sink,
                    feedback=self.feedback,
                    http=self.http_metrics,
                    scheduler=self.scheduler,
                )
            ),
            dependencies=guard.dependencies(Permission.READ),  # type: ignore[arg-type]
        )
        limit = self.settings.server.max_request_bytes
        # outside the readiness guard: /v2/health/* answers while the server recovers
        asgi.include_router(
            build_openinference_router(
                self.control, self.inference, guard, limit, require_ready=self._require_ready
            )
        )
        context = RestContext(self.control, self.inference, limit, guard)
        guarded = APIRouter(dependencies=[Depends(self._require_ready)])
        guarded.include_router(build_router(context))
        guarded.include_router(
            build_feedback_router(self.control, self.feedback, self.sinks, limit, guard)
        )
        guarded.include_router(build_admin_router(self.tokens, self.control, guard, limit))
        guarded.include_router(build_prediction_events_router(self.events, guard))
        asgi.include_router(guarded)
        # after the BASIC routes: POST /servable/... keeps matching its deploy route first
        for build in (build_mlflow_router, build_graphpipe_router):
            asgi.include_router(
                build(self.control, self.inference, guard, limit, require_ready=self._require_ready)
            )
        return asgi

    def _auth_required(self) -> bool:
        return auth_required(self.settings.security.auth, self.settings.server.host)

    def _auth_reason(self) -> str:
        mode, host = self.settings.security.auth, self.settings.server.host
        if mode == "auto":
            return f"security.auth is auto and the server listens on {host}, not only loopback"
        return f"security.auth is {mode}"

    def _install_browser_guards(self, asgi: FastAPI) -> None:
        """CORS only when configured; with auth off, only loopback and listen-address Hosts."""
        security = self.settings.security
        if security.cors_origins:
            asgi.add_middleware(
                CORSMiddleware,
                allow_origins=security.cors_origins,
                allow_methods=["GET", "POST", "PUT", "DELETE"],
                allow_headers=["Authorization", "Content-Type"],
            )
        if not self.guard.enabled:
            asgi.add_middleware(HostGuard, allowed=self._allowed_hosts())

    def _health_router(self) -> APIRouter:
        router = APIRouter()
        options = {"guarded": False, "auth": False, "parameters": False}

        @router.get("/health/live", operation_id="live", **HEALTH_LIVE.route_options(**options))
        async def live() -> JSONResponse:
            return wrapped("Health", {"status": "live"})

        @router.get("/health/ready", operation_id="ready", **HEALTH_READY.route_options(**options))
        async def ready() -> JSONResponse:
            self._require_ready()
            return wrapped("Health", {"status": "ready"})

        return router

    def end_streams(self) -> None:
        """End the streams of prediction-event followers now: a shutdown has begun, and the
        server would otherwise wait for them as for in-flight requests. Safe to call from a
        signal handler (the work is done on the event loop)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.events.stop_readers)

    def _require_ready(self) -> None:
        if self.startup_error is not None:
            raise ServiceUnavailableError(f"start-up failed: {self.startup_error}")
        if not self.ready:
            raise ServiceUnavailableError("recovering state; not ready yet")

    @contextlib.asynccontextmanager
    async def _lifespan(self, _asgi: FastAPI) -> AsyncIterator[None]:
        grpc_server = await self._start_grpc()
        # recovery runs in the background so /health/live answers while it works
        self._tasks.append(asyncio.create_task(self.start()))
        try:
            yield
        finally:
            if grpc_server is not None:
                await grpc_server.stop(self.settings.server.shutdown_grace_s)
            await self.shutdown()

    async def _start_grpc(self) -> OpenInferenceGrpcServer | None:
        """The Open Inference Protocol over gRPC on `server.grpc_port` (None when 0); a port
        already taken fails the start-up."""
        server = self.settings.server
        if not server.grpc_port:
            return None
        grpc_server = OpenInferenceGrpcServer(
            self.control,
            self.inference,
            self.guard,
            server.host,
            server.grpc_port,
            require_ready=self._require_ready,
            max_message_bytes=server.max_request_bytes,
        )
        await grpc_server.start()
        return grpc_server

    async def start(self, *, periodic: bool = True) -> None:
        """Recover state, become ready, then (unless `periodic` is False) start the
        evaluation and counter-flush loops. Tests drive evaluation themselves."""
        self._loop = asyncio.get_running_loop()  # for end_streams, from a signal handler
        heap.collect_less_often()
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
            self.control.close()
            self.store.close()
        log.info("ForestFlow stopped")


def storage_options(settings: Settings) -> StorageOptions:
    """What the fetchers need to know of the settings."""
    storage = settings.storage
    return StorageOptions(
        s3_endpoint_url=storage.s3_endpoint_url,
        mlflow_tracking_uri=storage.mlflow_tracking_uri,
        timeout_s=storage.timeout_s,
        local_roots=tuple(storage.local_roots),
        allow_private_hosts=storage.allow_private_hosts,
        max_artifact_bytes=storage.max_artifact_bytes,
        free_space_reserve_bytes=storage.free_space_reserve_bytes,
        fetch_deadline_s=storage.fetch_deadline_s,
    )


def check_state(data_dir: Path, store: Store, *, reinitialize: bool = False) -> None:
    """Refuse to start on an empty state store beside artifact copies or prediction logs:
    the state was lost or replaced, and starting would orphan (and clean up) the copies.
    With `reinitialize` the copies are moved aside and the server starts afresh."""
    if not store.is_empty():
        return
    artifacts = data_dir / "artifacts"
    copies = [p for p in (artifacts / "servables").glob("*/*/*/*") if p.is_dir()]
    logs = [p for p in (data_dir / "predictions").glob("*") if p.is_file()]
    if not copies and not logs:
        return
    if reinitialize:
        aside = data_dir / f"artifacts.before-reinitialize-{int(time.time())}"
        if artifacts.exists():
            artifacts.rename(aside)
            log.warning("--reinitialize: moved the old artifact copies to %s", aside)
        return
    raise StartupError(
        f"the state store in {data_dir} is empty, but {len(copies)} artifact copies and "
        f"{len(logs)} prediction-log files are there: the state file was lost, emptied or "
        "replaced. Restore it from a backup, or start once with --reinitialize to begin "
        "afresh (the old artifact copies are moved aside, not deleted)"
    )


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
