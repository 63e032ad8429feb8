"""The inference path: route a request, score it, then fan it out to shadow servables."""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

from forestflow.clock import Clock
from forestflow.control.plane import ControlPlane
from forestflow.control.routes import ContractRoute, ServableRoute
from forestflow.control.runner import ServableRunner
from forestflow.domain.fqrv import FQRV, Contract
from forestflow.domain.frame import Frame
from forestflow.domain.settings import LogLevel
from forestflow.domain.signature import check_complete
from forestflow.errors import ForestFlowError, ModelFailedError, NoActiveServablesForContract
from forestflow.predictionlog.events import PredictionEvent, RowKeys, SharedRequest
from forestflow.predictionlog.sinks import PredictionSink
from forestflow.serving.failure_log import FailureLog

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Scored:
    """A prediction and the servable that made it."""

    fqrv: FQRV
    prediction: Frame


@dataclass(slots=True)
class ShadowStats:
    """Shadow outcomes beyond the scheduler's own counters."""

    skipped_by_sampling: int = 0


class InferenceService:
    """Scores requests for contracts (routed) and servables (direct)."""

    def __init__(
        self,
        *,
        control: ControlPlane,
        runner: ServableRunner,
        sink: PredictionSink,
        clock: Clock,
        rng: random.Random,
    ) -> None:
        self._control = control
        self._runner = runner
        self._sink = sink
        self._clock = clock
        self._rng = rng
        self.shadow_stats = ShadowStats()
        self._shadow_failures = FailureLog(log, clock, what="shadow scoring")
        # shadow outcomes waiting to be counted and logged together (`_complete_shadows`)
        self._completed: list[tuple[ServableRoute, SharedRequest, float, Any]] = []
        self._shadow_cpu = 0.0

    async def score(self, contract: Contract, frame: Frame) -> Scored:
        """Route to one servable by the contract's router, score, and queue the shadows.

        The servable counts the request's outcome and latency (from the moment it is chosen
        to its prediction) in `counters.requests.served`."""
        route = self._control.route(contract)
        fqrv = route.plan.choose(self._rng)
        if fqrv is None:
            raise NoActiveServablesForContract(contract)
        servable = route.servables[fqrv]
        started = time.perf_counter()
        try:
            if route.refuse_missing:
                check_complete(frame, servable.inputs)
            prediction = await self._runner.predict(fqrv, frame)
        except BaseException as error:
            servable.counters.requests.served.failed(error, time.perf_counter() - started)
            raise
        seconds = time.perf_counter() - started
        servable.counters.scored()
        servable.counters.requests.served.succeeded(seconds)
        request = SharedRequest(frame)  # logged once for the served and shadow events
        self._log_served(servable, request, prediction, seconds)
        self._fan_out(route, fqrv, request)
        return Scored(fqrv, prediction)

    async def score_servable(self, fqrv: FQRV, frame: Frame) -> Scored:
        """Score on one servable, bypassing the router; not counted in `scoreCount`, but in
        `counters.requests.direct`."""
        servable = self._control.servable_route(fqrv)
        requests = servable.counters.requests.direct
        started = time.perf_counter()
        try:
            if self._control.route(fqrv.contract).refuse_missing:
                check_complete(frame, servable.inputs)
            prediction = await self._runner.predict(fqrv, frame)
        except BaseException as error:
            requests.failed(error, time.perf_counter() - started)
            raise
        requests.succeeded(time.perf_counter() - started)
        return Scored(fqrv, prediction)

    def _fan_out(self, route: ContractRoute, served: FQRV, request: SharedRequest) -> None:
        started = time.perf_counter()
        for shadow in route.shadow_candidates:
            if shadow.fqrv == served:
                continue
            if not self._sampled(shadow):
                self.shadow_stats.skipped_by_sampling += 1
                continue
            done = functools.partial(self._shadow_done, shadow, request, started)
            if not self._runner.submit_shadow(shadow.fqrv, request.frame, done):
                shadow.counters.shadow_dropped_once()

    def _shadow_done(
        self, shadow: ServableRoute, request: SharedRequest, started: float, outcome: Any
    ) -> None:
        """Keep a shadow request's outcome; the outcomes of one model call (all completed
        in one pass of the event loop) are counted and logged together, right after."""
        if not self._completed:
            asyncio.get_running_loop().call_soon(self._complete_shadows)
        self._completed.append((shadow, request, started, outcome))

    @property
    def shadow_cpu_seconds(self) -> float:
        """CPU time spent so far counting and logging shadow outcomes, for the shadow
        budget (the scheduler measures the rest of their completion itself)."""
        return self._shadow_cpu

    def _complete_shadows(self) -> None:
        cpu = time.thread_time()
        completed, self._completed = self._completed, []
        now = time.perf_counter()
        timestamp_ms = self._clock.now_ms()
        events: list[PredictionEvent] = []
        for shadow, request, started, outcome in completed:
            if isinstance(outcome, asyncio.CancelledError):  # shut down: not a model failure
                continue
            seconds = now - started
            if isinstance(outcome, BaseException):
                shadow.counters.shadow_failed_once()
                shadow.counters.requests.shadow.failed(outcome, seconds)
                self._shadow_failures.failed(shadow.fqrv, _reason(outcome))
                continue
            shadow.counters.shadowed()
            shadow.counters.requests.shadow.succeeded(seconds)
            if shadow.logging.log_level is not LogLevel.NONE:  # sampled before it was scored
                event = _event(
                    shadow, request, outcome, seconds, timestamp_ms=timestamp_ms, served=False
                )
                events.append(event)
        if events:
            self._sink.emit_many(events)
        self._shadow_cpu += time.thread_time() - cpu

    def _sampled(self, servable: ServableRoute) -> bool:
        if servable.logging.log_level is LogLevel.SAMPLE:
            return self._rng.random() < servable.logging.sample_rate
        return True

    def _log_served(
        self, servable: ServableRoute, request: SharedRequest, prediction: Frame, seconds: float
    ) -> None:
        level = servable.logging.log_level
        if level is LogLevel.NONE:
            return
        if level is LogLevel.SAMPLE and not self._sampled(servable):
            return
        now_ms = self._clock.now_ms()
        event = _event(servable, request, prediction, seconds, timestamp_ms=now_ms, served=True)
        self._sink.emit(event)


def _event(
    servable: ServableRoute,
    request: SharedRequest,
    prediction: Frame,
    seconds: float,
    *,
    timestamp_ms: int,
    served: bool,
) -> PredictionEvent:
    # each row's key is built off the serving path, when the emitter's thread needs it
    keys = RowKeys.of(servable.logging, request.frame)
    return PredictionEvent(
        fqrv=servable.fqrv,
        served_request=served,
        timestamp_ms=timestamp_ms,
        request=request.frame,
        prediction=prediction,
        latency_ms=seconds * 1000,
        key=None if keys is None else keys.first(),
        row_keys=keys,
        shared_request=request,
    )


def _reason(error: BaseException) -> str:
    """One line on why shadow scoring failed: the model's own error rather than our wrapper."""
    if isinstance(error, ModelFailedError) and error.__cause__ is not None:
        error = error.__cause__
    if isinstance(error, ForestFlowError):
        return error.describe()
    return f"{type(error).__name__}: {error}"
