"""The local artifact cache: one directory per servable under the data directory.

Each copy is written to a temporary directory first and renamed into place, so a
crash never leaves a half-copied artifact under a servable's name.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

from forestflow.domain.fqrv import FQRV

log = logging.getLogger(__name__)


class ArtifactCache:
    """Local artifact copies keyed by FQRV: `<root>/servables/<org>/<project>/<n>/<release>/`."""

    def __init__(self, root: Path) -> None:
        self.root = root / "servables"
        self._incoming = root / "incoming"
        self.root.mkdir(parents=True, exist_ok=True)

    def directory(self, fqrv: FQRV) -> Path:
        """Where the artifact of `fqrv` lives (whether or not it exists)."""
        contract = fqrv.contract
        parts = (contract.organization, contract.project, str(contract.contract_number))
        return self.root.joinpath(*parts, fqrv.release_version)

    def has(self, fqrv: FQRV) -> bool:
        """Whether a complete copy of `fqrv`'s artifact is present."""
        return self.directory(fqrv).is_dir()

    def install(self, fqrv: FQRV, fill: Callable[[Path], None]) -> Path:
        """Run `fill(tmp_dir)` and move the result to `directory(fqrv)`; clean up on failure."""
        incoming = self._incoming / uuid.uuid4().hex
        incoming.mkdir(parents=True)
        try:
            fill(incoming)
            final = self.directory(fqrv)
            if final.exists():  # left by a deploy that crashed before it was acknowledged
                shutil.rmtree(final)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.rename(incoming, final)
            return final
        except BaseException:
            shutil.rmtree(incoming, ignore_errors=True)
            raise

    def remove(self, fqrv: FQRV) -> None:
        """Delete `fqrv`'s copy and any parent directories it leaves empty."""
        directory = self.directory(fqrv)
        shutil.rmtree(directory, ignore_errors=True)
        for parent in directory.parents:
            if parent == self.root or not parent.is_relative_to(self.root):
                break
            try:
                parent.rmdir()
            except OSError:
                break

    def remove_orphans(self, keep: Iterable[FQRV]) -> list[Path]:
        """Delete every copy not in `keep` and every unfinished copy; return what was removed."""
        wanted = {self.directory(fqrv) for fqrv in keep}
        removed: list[Path] = []
        shutil.rmtree(self._incoming, ignore_errors=True)
        for release_dir in self.root.glob("*/*/*/*"):
            if release_dir.is_dir() and release_dir not in wanted:
                shutil.rmtree(release_dir, ignore_errors=True)
                removed.append(release_dir)
        if removed:
            log.info("removed %d artifact copies no servable owns", len(removed))
        return removed
