"""The servable-runner seam: where loaded models live (in-process now; Ray Serve later)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from forestflow.domain.fqrv import FQRV
from forestflow.domain.signature import ModelSignature
from forestflow.flavors.base import Flavor


class ServableRunner(ABC):
    """Starts and stops servables; the serving layer scores through the same runner."""

    @abstractmethod
    async def start(self, fqrv: FQRV, flavor: Flavor, directory: Path) -> ModelSignature:
        """Load the model in `directory` and keep it ready to score under `fqrv`.

        Raises `CreateServableRequestInvalidError` when the model cannot be loaded.
        """

    @abstractmethod
    async def stop(self, fqrv: FQRV) -> None:
        """Unload `fqrv`; a no-op when it is not running."""
