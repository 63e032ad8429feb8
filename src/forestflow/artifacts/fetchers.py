"""Artifact fetchers: copy a model artifact from where the client keeps it into the cache.

One fetcher per storage protocol, registered by URL scheme (SPEC §2.2). A plain path
is a local path.
"""

from __future__ import annotations

import logging
import shutil
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar
from urllib.parse import unquote, urlsplit

from forestflow.domain.registry import Registry
from forestflow.errors import CreateServableRequestInvalidError

log = logging.getLogger(__name__)


class ArtifactFetcher(ABC):
    """Copies artifacts of one storage protocol."""

    registry: ClassVar[Registry[ArtifactFetcher]]
    wire_name: ClassVar[str]

    @abstractmethod
    def fetch(self, location: str, artifact_path: str | None, destination: Path) -> None:
        """Copy the artifact at `location` (its `artifact_path` sub-directory, if given)
        into the existing, empty directory `destination`.

        Raises `CreateServableRequestInvalidError` naming the field when the artifact
        cannot be found or read.
        """


ArtifactFetcher.registry = Registry("storage protocol")


def scheme_of(location: str) -> str:
    """The URL scheme of `location`; "file" for plain paths."""
    scheme = urlsplit(location).scheme
    return scheme.lower() if len(scheme) > 1 else "file"  # one letter: a Windows drive


def fetcher_for(location: str) -> ArtifactFetcher:
    """The fetcher for `location`'s protocol; unknown protocols raise a 422 naming `path`."""
    scheme = scheme_of(location)
    if scheme not in ArtifactFetcher.registry:
        known = ", ".join(f"{name}://" for name in ArtifactFetcher.registry.names())
        raise CreateServableRequestInvalidError(
            f"unsupported storage protocol '{scheme}://'; supported: {known} and plain paths",
            field="path",
        )
    return ArtifactFetcher.registry.get(scheme)()


@ArtifactFetcher.registry.register("file")
class LocalFetcher(ArtifactFetcher):
    """`file:///abs/path` or a plain path, to a directory or a single file."""

    def fetch(self, location: str, artifact_path: str | None, destination: Path) -> None:
        """Copy a local directory's content, or a single file, into `destination`."""
        source = self._source(location, artifact_path)
        if source.is_dir():
            shutil.copytree(source, destination, dirs_exist_ok=True, symlinks=False)
        else:
            shutil.copy2(source, destination / source.name)
        log.info("copied artifact %s into the cache (%d bytes)", source, _size(destination))

    @staticmethod
    def _source(location: str, artifact_path: str | None) -> Path:
        parts = urlsplit(location)
        path = Path(unquote(parts.path)) if parts.scheme.lower() == "file" else Path(location)
        if artifact_path:
            path = path / artifact_path
        if not path.exists():
            field = "artifactPath" if artifact_path and path.parent.exists() else "path"
            raise CreateServableRequestInvalidError(f"'{path}' does not exist", field=field)
        if not (path.is_dir() or path.is_file()):
            raise CreateServableRequestInvalidError(
                f"'{path}' is neither a file nor a directory", field="path"
            )
        return path


def _size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
