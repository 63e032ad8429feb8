"""What the in-process runner tells `/metrics`: model calls, batch sizes and waiting
requests per servable, served and shadow apart."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from forestflow.domain.frame import Frame, TensorType
from forestflow.domain.signature import FeatureSpec, ModelSignature
from forestflow.flavors.base import Flavor, LoadedModel, LoadPolicy
from forestflow.serving.runner import InProcessRunner
from forestflow.serving.scheduler import WorkScheduler
from tests.builders import make_fqrv

FQRV = make_fqrv("v1")


class GatedModel(LoadedModel):
    """Doubles `x`; its calls wait until `release` is set, and say when one has started."""

    signature = ModelSignature(
        inputs=(FeatureSpec("x", TensorType.Float64),),
        outputs=(FeatureSpec("y", TensorType.Float64),),
    )

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def predict(self, frame: Frame) -> Frame:
        self.entered.set()
        self.release.wait()
        return Frame({"y": frame["x"] * 2})


@dataclass(frozen=True)
class GatedFlavor(Flavor):
    model: GatedModel = field(default_factory=GatedModel)

    def load(self, directory: Path, policy: LoadPolicy) -> LoadedModel:
        return self.model


def frame(value: float) -> Frame:
    return Frame({"x": np.array([value])})


@pytest.fixture
async def started(tmp_path: Path) -> AsyncIterator[tuple[InProcessRunner, GatedModel]]:
    # one worker: while one call runs, every other request waits
    scheduler = WorkScheduler(
        workers=1, shadow_queue_size=10, max_shadow_workers=1, max_shadow_batch=8
    )
    runner = InProcessRunner(scheduler, max_batch_size=8)
    flavor = GatedFlavor()
    await runner.start(FQRV, flavor, tmp_path)
    try:
        yield runner, flavor.model
    finally:
        flavor.model.release.set()
        scheduler.close()


class TestRunnerTelemetry:
    async def test_served_calls_batch_sizes_and_waiting_requests(
        self, started: tuple[InProcessRunner, GatedModel]
    ) -> None:
        runner, model = started
        first = asyncio.ensure_future(runner.predict(FQRV, frame(1.0)))
        await asyncio.to_thread(model.entered.wait)  # the first call holds the worker
        waiting = [asyncio.ensure_future(runner.predict(FQRV, frame(v))) for v in (2.0, 3.0, 4.0)]
        await asyncio.sleep(0)  # yield only: the three reach the batcher and wait
        assert runner.telemetry()[FQRV].served.queued == 3

        model.release.set()
        await asyncio.gather(first, *waiting)
        served = runner.telemetry()[FQRV].served
        assert served.queued == 0
        assert (served.batch_sizes.count, served.batch_sizes.sum) == (2, 4)  # alone, then 3
        assert served.seconds.count == 2

    async def test_shadow_calls_and_queued_shadow_requests(
        self, started: tuple[InProcessRunner, GatedModel]
    ) -> None:
        runner, model = started
        served = asyncio.ensure_future(runner.predict(FQRV, frame(1.0)))
        await asyncio.to_thread(model.entered.wait)
        outcomes: list[asyncio.Future[Any]] = []
        for value in (2.0, 3.0, 4.0):
            done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            outcomes.append(done)
            assert runner.submit_shadow(FQRV, frame(value), done.set_result)
        assert runner.telemetry()[FQRV].shadow.queued == 3

        model.release.set()
        await served
        finished = await asyncio.gather(*outcomes)
        assert all(outcome["y"].size == 1 for outcome in finished)
        shadow = runner.telemetry()[FQRV].shadow
        assert shadow.queued == 0
        assert (shadow.batch_sizes.count, shadow.batch_sizes.sum) == (1, 3)  # one call
        assert shadow.seconds.count == 1

    async def test_a_stopped_servable_is_no_longer_told(
        self, started: tuple[InProcessRunner, GatedModel]
    ) -> None:
        runner, _ = started
        assert set(runner.telemetry()) == {FQRV}
        await runner.stop(FQRV)
        assert runner.telemetry() == {}


async def test_shadow_calls_wait_while_served_requests_are_in_progress(tmp_path: Path) -> None:
    scheduler = WorkScheduler(
        workers=2,
        shadow_queue_size=10,
        max_shadow_workers=1,
        max_shadow_batch=8,
        shadow_batch_wait_s=60,
    )
    runner = InProcessRunner(scheduler, max_batch_size=8)
    flavor = GatedFlavor()
    await runner.start(FQRV, flavor, tmp_path)
    try:
        served = asyncio.ensure_future(runner.predict(FQRV, frame(1.0)))
        await asyncio.to_thread(flavor.model.entered.wait)
        outcomes: list[asyncio.Future[Any]] = []
        for value in (2.0, 3.0):
            done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            outcomes.append(done)
            assert runner.submit_shadow(FQRV, frame(value), done.set_result)
        # a worker is free, but a served request is in progress: the shadows wait to share
        assert runner.telemetry()[FQRV].shadow.queued == 2

        flavor.model.release.set()
        await served  # the last served request ends: the waiting shadows start
        finished = await asyncio.gather(*outcomes)
        assert [outcome["y"].tolist() for outcome in finished] == [[4.0], [6.0]]
        shadow = runner.telemetry()[FQRV].shadow
        assert (shadow.batch_sizes.count, shadow.batch_sizes.sum) == (1, 2)
    finally:
        flavor.model.release.set()
        scheduler.close()
