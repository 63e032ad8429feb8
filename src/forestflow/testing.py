"""Test support shipped with the package: a controllable clock, prediction capture and a
runner that loads no models."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from forestflow.control.runner import ShadowDone
from forestflow.control.telemetry import RunnerTelemetry
from forestflow.domain.fqrv import FQRV
from forestflow.domain.frame import Frame
from forestflow.domain.signature import ModelSignature
from forestflow.errors import UnknownServable
from forestflow.flavors.base import Flavor
from forestflow.predictionlog.events import PredictionEvent
from forestflow.predictionlog.sinks import MemorySink


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now_ms: int = 1_700_000_000_000) -> None:
        self._now_ms = now_ms

    def now_ms(self) -> int:
        """The current fake time, epoch milliseconds."""
        return self._now_ms

    def advance(self, *, ms: int = 0, seconds: float = 0) -> int:
        """Move time forward and return the new time."""
        if ms < 0 or seconds < 0:
            raise ValueError("time only moves forward")
        self._now_ms += ms + round(seconds * 1000)
        return self._now_ms

    def set(self, now_ms: int) -> None:
        """Jump to `now_ms` (forward only)."""
        if now_ms < self._now_ms:
            raise ValueError("time only moves forward")
        self._now_ms = now_ms


@contextlib.contextmanager
def capture_predictions(sink: MemorySink) -> Iterator[list[PredictionEvent]]:
    """Collect the prediction events `sink` receives inside the block."""
    start = sink.stats().emitted
    captured: list[PredictionEvent] = []
    try:
        yield captured
    finally:
        new = sink.stats().emitted - start
        captured.extend(list(sink.events)[-new:] if new else [])


class FakeRunner:
    """A `ServableRunner` that loads nothing: `start` records the servable and answers
    `signature`; `predict` answers `respond(fqrv, frame)` (by default the frame itself);
    shadow work completes at once on the event loop. `calls` lists what was asked, in
    order, as `(method, fqrv)`. For testing routing, shadowing and the control plane
    without model files."""

    def __init__(
        self,
        respond: Callable[[FQRV, Frame], Frame] | None = None,
        signature: ModelSignature | None = None,
    ) -> None:
        self.respond = respond or (lambda _fqrv, frame: frame)
        self.signature = signature or ModelSignature(inputs=(), outputs=())
        self.running: set[FQRV] = set()
        self.calls: list[tuple[str, FQRV]] = []

    async def start(
        self, fqrv: FQRV, flavor: Flavor, directory: Path, *, max_batch_size: int | None = None
    ) -> ModelSignature:
        """Record `fqrv` as running (it scores one request at a time: nothing to batch)."""
        self.calls.append(("start", fqrv))
        self.running.add(fqrv)
        return self.signature

    async def stop(self, fqrv: FQRV) -> None:
        """Record `fqrv` as stopped."""
        self.calls.append(("stop", fqrv))
        self.running.discard(fqrv)

    async def predict(self, fqrv: FQRV, frame: Frame) -> Frame:
        """`respond(fqrv, frame)`; `UnknownServable` when `fqrv` is not running."""
        self.calls.append(("predict", fqrv))
        if fqrv not in self.running:
            raise UnknownServable(fqrv)
        return self.respond(fqrv, frame)

    def submit_shadow(self, fqrv: FQRV, frame: Frame, done: ShadowDone) -> bool:
        """Complete the shadow request on the next turn of the event loop."""
        self.calls.append(("shadow", fqrv))
        if fqrv not in self.running:
            return False
        outcome: Any
        try:
            outcome = self.respond(fqrv, frame)
        except Exception as error:
            outcome = error
        asyncio.get_running_loop().call_soon(done, outcome)
        return True

    def telemetry(self) -> dict[FQRV, RunnerTelemetry]:
        """None: nothing here is batched or timed."""
        return {}
