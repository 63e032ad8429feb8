"""The in-process runner: a model stopped while in use is closed only when its jobs finish."""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from forestflow.domain.frame import Frame, TensorType
from forestflow.domain.signature import FeatureSpec, ModelSignature
from forestflow.errors import UnknownServable
from forestflow.flavors.base import Flavor, LoadedModel, LoadPolicy
from forestflow.serving.runner import InProcessRunner
from forestflow.serving.scheduler import WorkScheduler
from tests.builders import make_fqrv


class GatedModel(LoadedModel):
    """Doubles `x`, but only once its gate opens; records whether it was closed."""

    signature = ModelSignature(
        inputs=(FeatureSpec("x", TensorType.Float64),),
        outputs=(FeatureSpec("y", TensorType.Float64),),
    )

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.closed = False

    def predict(self, frame: Frame) -> Frame:
        self.entered.set()
        self.gate.wait(timeout=30)
        assert not self.closed, "predict ran on a closed model"
        return Frame({"y": np.asarray(frame["x"]) * 2})

    def close(self) -> None:
        self.closed = True


@dataclass(frozen=True)
class GatedFlavor(Flavor):
    model: GatedModel = field(default_factory=GatedModel)

    def load(self, directory: Path, policy: LoadPolicy) -> LoadedModel:
        return self.model


@pytest.fixture
async def runner() -> AsyncIterator[InProcessRunner]:
    scheduler = WorkScheduler(workers=2, shadow_queue_size=10, max_shadow_workers=1)
    yield InProcessRunner(scheduler)
    scheduler.close()


FRAME = Frame({"x": np.array([1.0, 2.0])})


class TestStopWhileInUse:
    async def test_an_in_flight_request_finishes_and_the_model_closes_after(
        self, runner: InProcessRunner, tmp_path: Path
    ) -> None:
        flavor = GatedFlavor()
        fqrv = make_fqrv("v1")
        await runner.start(fqrv, flavor, tmp_path)
        request = asyncio.create_task(runner.predict(fqrv, FRAME))
        await asyncio.to_thread(flavor.model.entered.wait, 10)
        await runner.stop(fqrv)
        assert not flavor.model.closed
        with pytest.raises(UnknownServable):
            await runner.predict(fqrv, FRAME)
        flavor.model.gate.set()
        result = await request
        assert result["y"].tolist() == [2.0, 4.0]
        assert flavor.model.closed

    async def test_an_idle_model_closes_at_once(
        self, runner: InProcessRunner, tmp_path: Path
    ) -> None:
        flavor = GatedFlavor()
        flavor.model.gate.set()
        await runner.start(make_fqrv("v1"), flavor, tmp_path)
        assert (await runner.predict(make_fqrv("v1"), FRAME))["y"].tolist() == [2.0, 4.0]
        await runner.stop(make_fqrv("v1"))
        assert flavor.model.closed

    async def test_queued_shadow_work_keeps_the_model_open(
        self, runner: InProcessRunner, tmp_path: Path
    ) -> None:
        flavor = GatedFlavor()
        fqrv = make_fqrv("shadow")
        await runner.start(fqrv, flavor, tmp_path)
        outcomes: list[object] = []
        assert runner.submit_shadow(
            fqrv, FRAME, lambda outcome: outcomes.append(outcome["y"].tolist())
        )
        await runner.stop(fqrv)
        assert not flavor.model.closed
        flavor.model.gate.set()
        await runner._scheduler.shadow_idle()
        assert outcomes == [[2.0, 4.0]]
        assert flavor.model.closed


class Cycle:
    """Something a model leaves behind in a reference cycle."""

    def __init__(self) -> None:
        self.me = self


async def test_a_loaded_model_is_frozen_and_what_a_closed_one_leaves_is_collected(
    runner: InProcessRunner,
) -> None:
    """Full collections do not walk a loaded model (its objects are frozen); once the model
    is closed, the next full collection frees its cycles and what is alive is frozen again."""
    fqrv = make_fqrv()
    flavor = GatedFlavor()
    gc.disable()  # only the collections below: none frees the cycle before the freeze
    try:
        left_behind = weakref.ref(Cycle())  # garbage, but frozen with the model below
        await runner.start(fqrv, flavor, Path("."))
        frozen_after_load = gc.get_freeze_count()
        gc.collect()
        survived_while_loaded = left_behind() is not None
        await runner.stop(fqrv)
        unfrozen_after_close = gc.get_freeze_count()
        gc.collect()
    finally:
        gc.enable()

    assert frozen_after_load > 0
    assert survived_while_loaded
    assert flavor.model.closed
    assert unfrozen_after_close == 0
    assert left_behind() is None
    assert gc.get_freeze_count() > 0
