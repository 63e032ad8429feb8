"""The local-filesystem fetcher: `file:///abs/path` or a plain path."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from urllib.parse import unquote, urlsplit

from forestflow.artifacts.base import ArtifactFetcher
from forestflow.errors import CreateServableRequestInvalidError

log = logging.getLogger(__name__)


class LocalFetcher(ArtifactFetcher):
    """A local directory (its content is copied) or a single file."""

    def fetch(self, location: str, artifact_path: str | None, destination: Path) -> None:
        """Copy a local directory's content, or a single file, into `destination`."""
        source = self._source(location, artifact_path)
        if destination.resolve().is_relative_to(source.resolve()):
            raise CreateServableRequestInvalidError(
                f"'{source}' contains the server's data directory; deploy a directory "
                "that holds only the model",
                field="path",
            )
        if source.is_dir():
            shutil.copytree(source, destination, dirs_exist_ok=True, symlinks=False)
        else:
            shutil.copy2(source, destination / source.name)
        log.info(
            "copied artifact %s into the cache (%d bytes)", source, directory_size(destination)
        )

    @staticmethod
    def _source(location: str, artifact_path: str | None) -> Path:
        parts = urlsplit(location)
        base = Path(unquote(parts.path)) if parts.scheme.lower() == "file" else Path(location)
        path = base / artifact_path if artifact_path else base
        if not path.exists():
            field = "artifactPath" if artifact_path and base.is_dir() else "path"
            raise CreateServableRequestInvalidError(f"'{path}' does not exist", field=field)
        if not (path.is_dir() or path.is_file()):
            raise CreateServableRequestInvalidError(
                f"'{path}' is neither a file nor a directory", field="path"
            )
        return path


def directory_size(directory: Path) -> int:
    """Total size in bytes of the files under `directory`."""
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
