"""The servable-runner seam: where loaded models live and are scored.

One protocol for every place a model can run: in this process now
(`serving.runner.InProcessRunner`), Ray Serve deployments later, and a fake one for tests
(`forestflow.testing.FakeRunner`). The control plane starts and stops servables through
it; the serving layer scores through the same runner.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from forestflow.control.telemetry import RunnerTelemetry
from forestflow.domain.fqrv import FQRV
from forestflow.domain.frame import Frame
from forestflow.domain.signature import ModelSignature
from forestflow.flavors.base import Flavor

ShadowDone = Callable[[Any], None]
"""Called on the event loop with a shadow request's outcome: its prediction (a `Frame`), or
the exception scoring it raised (`asyncio.CancelledError` when it was cancelled at
shutdown, which is not the model's failure)."""


class ServableRunner(Protocol):
    """Starts, stops and scores servables."""

    async def start(
        self, fqrv: FQRV, flavor: Flavor, directory: Path, *, max_batch_size: int | None = None
    ) -> ModelSignature:
        """Load the model in `directory` and keep it ready to score under `fqrv`, batching
        at most `max_batch_size` served requests per model call (None: the runner's
        default).

        Raises `CreateServableRequestInvalidError` when the model cannot be loaded.
        """
        ...

    async def stop(self, fqrv: FQRV) -> None:
        """Unload `fqrv` (once the work already using it is done); a no-op when absent."""
        ...

    async def predict(self, fqrv: FQRV, frame: Frame) -> Frame:
        """Score a served request; `UnknownServable` when `fqrv` is not running."""
        ...

    def submit_shadow(self, fqrv: FQRV, frame: Frame, done: ShadowDone) -> bool:
        """Queue a shadow request behind served work; False when it was dropped (shadow
        work is over its budget or its queue is full, or `fqrv` is not running). `done`
        gets its outcome."""
        ...

    def telemetry(self) -> Mapping[FQRV, RunnerTelemetry]:
        """Model calls (batch sizes, durations) and waiting requests of each running
        servable, served and shadow apart, for `/metrics`; empty when the runner keeps
        none."""
        ...
