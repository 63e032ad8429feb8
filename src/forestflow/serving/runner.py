"""The in-process servable runner: models live in this process, scored on worker threads."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from forestflow.control.runner import ServableRunner
from forestflow.domain.fqrv import FQRV
from forestflow.domain.frame import Frame
from forestflow.domain.signature import ModelSignature, conform
from forestflow.errors import ForestFlowError, ModelFailedError, UnknownServable
from forestflow.flavors.base import Flavor, LoadedModel
from forestflow.serving.scheduler import ShadowDone, WorkScheduler

log = logging.getLogger(__name__)


def _score(fqrv: FQRV, model: LoadedModel, frame: Frame) -> Frame:
    """Conform the frame to the model's inputs and predict; model crashes become a 500."""
    conformed = conform(frame, model.signature)
    try:
        return model.predict(conformed)
    except ForestFlowError:
        raise
    except Exception as error:
        log.exception("servable %s failed while scoring", fqrv)
        raise ModelFailedError(f"servable {fqrv} failed: {type(error).__name__}") from error


class InProcessRunner(ServableRunner):
    """Keeps loaded models in memory and scores them through a `WorkScheduler`."""

    def __init__(self, scheduler: WorkScheduler) -> None:
        self._scheduler = scheduler
        self._models: dict[FQRV, LoadedModel] = {}

    async def start(self, fqrv: FQRV, flavor: Flavor, directory: Path) -> ModelSignature:
        """Load the model on a worker thread (loading is CPU-bound) and keep it."""
        model = await asyncio.to_thread(flavor.load, directory)
        previous = self._models.pop(fqrv, None)
        self._models[fqrv] = model
        if previous is not None:
            await asyncio.to_thread(previous.close)
        return model.signature

    async def stop(self, fqrv: FQRV) -> None:
        """Drop the model; its native resources are released off the event loop."""
        model = self._models.pop(fqrv, None)
        if model is not None:
            await asyncio.to_thread(model.close)

    async def predict(self, fqrv: FQRV, frame: Frame) -> Frame:
        """Score a served request."""
        model = self._model(fqrv)
        return await self._scheduler.run(lambda: _score(fqrv, model, frame))

    def predict_shadow(self, fqrv: FQRV, frame: Frame, done: ShadowDone) -> bool:
        """Queue a shadow request; False when it was dropped because the queue is full."""
        model = self._models.get(fqrv)
        if model is None:
            return False
        job: Callable[[], Any] = lambda: _score(fqrv, model, frame)  # noqa: E731
        return self._scheduler.offer_shadow(job, done)

    def _model(self, fqrv: FQRV) -> LoadedModel:
        model = self._models.get(fqrv)
        if model is None:
            raise UnknownServable(fqrv)
        return model
