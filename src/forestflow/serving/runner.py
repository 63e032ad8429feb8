"""The in-process servable runner: models live in this process, scored on worker threads."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from forestflow.control.runner import ShadowDone
from forestflow.control.telemetry import (
    BATCH_SIZE_BUCKETS,
    LATENCY_BUCKETS_S,
    Histogram,
    ModelCalls,
    RunnerTelemetry,
)
from forestflow.domain.fqrv import FQRV
from forestflow.domain.frame import Frame, Layout
from forestflow.domain.signature import ModelSignature, conform, conform_by_plan
from forestflow.errors import ForestFlowError, ModelFailedError, UnknownServable
from forestflow.flavors.base import Flavor, LoadedModel, LoadPolicy
from forestflow.serving import heap
from forestflow.serving.batching import BatchStats, Outcome, ServedBatcher, shape_key, split, stack
from forestflow.serving.scheduler import ShadowBatch, WorkScheduler

log = logging.getLogger(__name__)
T = TypeVar("T")


def _score(fqrv: FQRV, model: LoadedModel, frame: Frame, *, log_failures: bool = True) -> Frame:
    """Conform the frame to the model's inputs and predict; model crashes become a 500.

    Shadow work passes `log_failures=False`: its caller counts failures and rate-limits
    their log lines, where a traceback per request would flood the log.
    """
    return _predict(fqrv, model, conform(frame, model.signature), log_failures=log_failures)


def _predict(
    fqrv: FQRV, model: LoadedModel, conformed: Frame, *, log_failures: bool = True
) -> Frame:
    try:
        return model.predict(conformed)
    except ForestFlowError:
        raise
    except Exception as error:
        if log_failures:
            log.exception("servable %s failed while scoring", fqrv)
        raise ModelFailedError(f"servable {fqrv} failed: {type(error).__name__}") from error


def _score_batch(
    fqrv: FQRV, model: LoadedModel, frames: list[Frame], *, log_failures: bool = True
) -> list[Outcome]:
    """Each frame's prediction or error; frames that conform alike share one model call.

    Frames of one layout are stacked and conformed at once where no value needs a look
    (`conform_by_plan`); the others are conformed one by one, so that an error names the
    field of its own frame, and then grouped by what they conformed to.
    """
    if len(frames) == 1:
        return [
            _outcome(functools.partial(_score, log_failures=log_failures), fqrv, model, frames[0])
        ]
    outcomes: list[Outcome] = list(frames)  # each replaced below
    calls: list[tuple[list[int], Frame]] = []  # (frames' indexes, their conformed rows)
    alone: dict[Layout, list[tuple[int, Frame]]] = {}
    sizes = [frame.n_rows for frame in frames]
    for indexes in _by_layout(frames):
        together = None
        if len(indexes) > 1 and all(sizes[i] for i in indexes):
            together = conform_by_plan(stack([frames[i] for i in indexes]), model.signature)
        if together is not None:
            calls.append((indexes, together))
            continue
        for index in indexes:
            outcome = _outcome(conform, frames[index], model.signature)
            outcomes[index] = outcome
            if isinstance(outcome, Frame):
                alone.setdefault(shape_key(outcome), []).append((index, outcome))
    for members in alone.values():
        conformed = [frame for _, frame in members]
        rows = conformed[0] if len(conformed) == 1 else stack(conformed)
        calls.append(([index for index, _ in members], rows))
    for indexes, rows in calls:
        rows_of = [sizes[index] for index in indexes]
        results = _predict_together(fqrv, model, rows, rows_of, log_failures=log_failures)
        for index, result in zip(indexes, results, strict=True):
            outcomes[index] = result
    return outcomes


def _by_layout(frames: list[Frame]) -> list[list[int]]:
    """The indexes of `frames`, grouped by layout, in order of first appearance.

    Frames of one matrix whose names are the very same tuple (requests parsed against one
    cached schema) and whose dtypes are equal have one layout: they are grouped by that
    without building and hashing each one's layout; the groups are then merged by layout.
    """
    quick: dict[object, list[int]] = {}
    for index, frame in enumerate(frames):
        blocks = frame.blocks
        if len(blocks) == 1 and frame.in_blocks:
            key: object = (id(blocks[0].names), blocks[0].matrix.dtype)
        else:
            key = frame.layout
        quick.setdefault(key, []).append(index)
    if len(quick) == 1:
        return list(quick.values())
    groups: dict[Layout, list[int]] = {}
    for indexes in quick.values():
        groups.setdefault(frames[indexes[0]].layout, []).extend(indexes)
    return [sorted(indexes) for indexes in groups.values()]


def _predict_together(
    fqrv: FQRV, model: LoadedModel, rows: Frame, sizes: list[int], *, log_failures: bool
) -> list[Outcome]:
    """One model call for the conformed `rows` of requests of `sizes` rows each; if it
    fails, one call per request, so that only the request at fault fails."""
    parts = [rows]
    if len(sizes) > 1:
        with contextlib.suppress(Exception):
            return list(split(model.predict(rows), sizes))
        parts = split(rows, sizes)
    predict = functools.partial(_predict, log_failures=log_failures)
    return [_outcome(predict, fqrv, model, part) for part in parts]


def _outcome(call: Callable[..., Frame], *args: Any) -> Outcome:
    try:
        return call(*args)
    except Exception as error:
        return error


def _timed(call: Callable[..., T], *args: Any) -> tuple[T, float]:
    """`call(*args)` and the seconds it took (on the worker thread that runs it)."""
    started = time.perf_counter()
    result = call(*args)
    return result, time.perf_counter() - started


@dataclass(slots=True)
class _Calls:
    """Model calls of one mode: requests per call and seconds per call. Observed on the
    event loop only (see `control.telemetry`)."""

    sizes: Histogram = field(default_factory=lambda: Histogram(BATCH_SIZE_BUCKETS))
    seconds: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS_S))

    def observe(self, size: int, seconds: float) -> None:
        self.sizes.observe(size)
        self.seconds.observe(seconds)


@dataclass(slots=True, eq=False)  # hashed by identity: its shadow requests' batch key
class _Slot:
    """A loaded model and the jobs using it; it is closed when stopped and idle."""

    fqrv: FQRV
    model: LoadedModel
    batcher: ServedBatcher
    in_flight: int = 0
    stopped: bool = False
    served: _Calls = field(default_factory=_Calls)
    shadow: _Calls = field(default_factory=_Calls)
    # (requests, seconds) of shadow calls, appended on their worker thread and moved into
    # `shadow` on the event loop as each call's requests complete (deque appends and pops
    # are atomic), so the histograms keep one thread
    shadow_timings: collections.deque[tuple[int, float]] = field(default_factory=collections.deque)

    def acquire(self) -> LoadedModel:
        self.in_flight += 1
        return self.model

    def score_shadows(self, frames: list[Frame]) -> list[Outcome]:
        """Score shadow requests together (on a worker thread); failures are not logged
        here: the inference service counts them and rate-limits their log lines."""
        started = time.perf_counter()
        try:
            return _score_batch(self.fqrv, self.model, frames, log_failures=False)
        finally:
            self.shadow_timings.append((len(frames), time.perf_counter() - started))

    def observe_shadow_calls(self) -> None:
        """Move the timings of finished shadow calls into `shadow` (on the event loop)."""
        while self.shadow_timings:
            self.shadow.observe(*self.shadow_timings.popleft())

    def shadows_finished(self, count: int) -> None:
        """A shadow call of `count` requests has completed (on the event loop)."""
        self.observe_shadow_calls()
        self.release(count)

    def release(self, count: int = 1) -> None:
        self.in_flight -= count
        self._close_if_done()

    def stop(self) -> None:
        self.stopped = True
        self._close_if_done()

    def _close_if_done(self) -> None:
        if self.stopped and self.in_flight == 0:
            try:
                self.model.close()
            except Exception:  # a failing close must not break the caller's request
                log.exception("closing servable %s failed", self.fqrv)
            heap.release()


class InProcessRunner:
    """Keeps loaded models in memory and scores them through a `WorkScheduler`.

    Stopping a servable removes it at once for new work; the model itself is closed
    only when the jobs already using it have finished.
    """

    def __init__(
        self,
        scheduler: WorkScheduler,
        load_policy: LoadPolicy | None = None,
        *,
        max_batch_size: int = 1,
    ) -> None:
        self._scheduler = scheduler
        self._load_policy = load_policy if load_policy is not None else LoadPolicy()
        self._max_batch_size = max_batch_size
        self._slots: dict[FQRV, _Slot] = {}

    async def start(
        self, fqrv: FQRV, flavor: Flavor, directory: Path, *, max_batch_size: int | None = None
    ) -> ModelSignature:
        """Load the model on a worker thread (loading is CPU-bound), within the load policy."""
        model = await asyncio.to_thread(flavor.load, directory, self._load_policy)
        heap.settle()  # the model and its libraries live as long as the servable
        previous = self._slots.pop(fqrv, None)
        self._slots[fqrv] = self._new_slot(fqrv, model, max_batch_size or self._max_batch_size)
        if previous is not None:
            previous.stop()
        return model.signature

    async def stop(self, fqrv: FQRV) -> None:
        """Take `fqrv` out of service; a no-op when it is not running."""
        slot = self._slots.pop(fqrv, None)
        if slot is not None:
            slot.stop()

    async def predict(self, fqrv: FQRV, frame: Frame) -> Frame:
        """Score a served request, batched with others waiting for the same servable."""
        slot = self._slot(fqrv)
        slot.acquire()  # the model stays open while requests wait for it
        self._scheduler.served_started()
        try:
            return await slot.batcher.submit(frame)
        finally:
            self._scheduler.served_finished()
            slot.release()

    def batch_stats(self, fqrv: FQRV) -> BatchStats:
        """How `fqrv`'s served requests were grouped into model calls."""
        return self._slot(fqrv).batcher.stats

    def telemetry(self) -> dict[FQRV, RunnerTelemetry]:
        """Each running servable's model calls and waiting requests, served and shadow."""
        found: dict[FQRV, RunnerTelemetry] = {}
        for fqrv, slot in self._slots.items():
            slot.observe_shadow_calls()
            served = ModelCalls(slot.served.sizes, slot.served.seconds, slot.batcher.waiting)
            queued = self._scheduler.queued(slot)
            shadow = ModelCalls(slot.shadow.sizes, slot.shadow.seconds, queued)
            found[fqrv] = RunnerTelemetry(served, shadow)
        return found

    def _new_slot(self, fqrv: FQRV, model: LoadedModel, max_batch_size: int) -> _Slot:
        # Model calls always go to a worker, however cheap: measured with ONNX Runtime at
        # 5 us a call, calling on the event loop instead served 20-30% fewer requests,
        # since requests then never queue into batches (docs/performance.md).
        async def run(frames: list[Frame]) -> list[Outcome]:
            slot.acquire()
            try:
                outcomes, seconds = await self._scheduler.run(
                    lambda: _timed(_score_batch, fqrv, model, frames)
                )
            finally:
                slot.release()
            slot.served.observe(len(frames), seconds)
            return outcomes

        batcher = ServedBatcher(
            run, max_in_flight=self._scheduler.workers, max_batch_size=max_batch_size
        )
        slot = _Slot(fqrv, model, batcher)
        return slot

    def submit_shadow(self, fqrv: FQRV, frame: Frame, done: ShadowDone) -> bool:
        """Queue a shadow request; False when it was dropped (the scheduler does not admit
        it: see `WorkScheduler.admits_shadow`) or `fqrv` is not running."""
        slot = self._slots.get(fqrv)
        if slot is None or not self._scheduler.admits_shadow():
            return False
        slot.acquire()  # released when its call has completed (`shadows_finished`)
        # keyed by the slot: its shadow requests share calls with those of this very
        # model, not of a replaced one
        batch = ShadowBatch(slot, frame, slot.score_shadows, slot.shadows_finished)
        self._scheduler.queue_shadow(batch, done)
        return True

    def _slot(self, fqrv: FQRV) -> _Slot:
        slot = self._slots.get(fqrv)
        if slot is None:
            raise UnknownServable(fqrv)
        return slot
