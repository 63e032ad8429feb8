"""The local-filesystem fetcher: `file:///abs/path` or a plain path, under `storage.local_roots`.

A deploy request may only name a path under one of the allowed local roots (default:
the server's working directory), checked on the path with every symbolic link resolved.
A path outside them gets one answer whether or not it exists, and nothing of it is read.
Inside, the copy is `trees.TreeCopy`'s: regular files and directories only, links that
stay inside the artifact, every byte counted against the fetch's budget.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit, urlunsplit

from forestflow.artifacts.base import ArtifactFetcher, StorageOptions
from forestflow.artifacts.budget import FetchBudget
from forestflow.artifacts.trees import TreeCopy, inside, special_place
from forestflow.errors import CreateServableRequestInvalidError

log = logging.getLogger(__name__)


class LocalFetcher(ArtifactFetcher):
    """A local directory (its content is copied) or a single file."""

    def fetch_within(
        self, location: str, artifact_path: str | None, destination: Path, budget: FetchBudget
    ) -> None:
        """Copy a local directory's content, or a single file, into `destination`."""
        given, real = self._source(location, artifact_path)
        if inside(os.path.realpath(destination), os.fspath(real)):
            raise CreateServableRequestInvalidError(
                f"'{given}' contains the server's data directory; deploy a directory "
                "that holds only the model",
                field="path",
            )
        copy = TreeCopy(
            budget,
            link_root=real if real.is_dir() else real.parent,
            name_of=lambda relative: f"'{given.joinpath(*relative)}'",
        )
        if real.is_dir():
            copy.copy_tree(real, destination)
        else:
            name = given.name if given.name not in ("", ".", "..") else real.name
            copy.copy_file(real, destination / name)
        log.info("copied artifact %s into the cache (%d bytes)", given, budget.written)

    def directory_of(self, location: str, name: str) -> str | None:
        """`file:///m/MLmodel` → `file:///m`, `m/MLmodel` → `m` (for `name` "MLmodel")."""
        parts = urlsplit(location)
        if parts.scheme.lower() == "file":
            path = PurePosixPath(parts.path)
            return urlunsplit(parts._replace(path=str(path.parent))) if path.name == name else None
        plain = Path(location)
        return str(plain.parent) if plain.name == name else None

    def _source(self, location: str, artifact_path: str | None) -> tuple[Path, Path]:
        """The path as given and its real path, which must be an allowed, existing
        file or directory."""
        parts = urlsplit(location)
        is_url = parts.scheme.lower() == "file"
        if is_url and parts.netloc not in ("", "localhost"):
            raise CreateServableRequestInvalidError(
                f"'{location}' names the host '{parts.netloc}': a file URL takes an absolute "
                "path after three slashes (file:///models/m); a path relative to the "
                "server's working directory is sent without file:// (models/m)",
                field="path",
            )
        base = Path(unquote(parts.path)) if is_url else Path(location)
        given = base / artifact_path if artifact_path else base
        real = Path(os.path.realpath(given))
        roots = allowed_roots(self.options)
        if not any(inside(os.fspath(real), root) for root in roots):
            base_allowed = any(inside(os.path.realpath(base), root) for root in roots)
            raise CreateServableRequestInvalidError(
                f"'{given}' is not under an allowed local root (setting storage.local_roots)",
                field="artifactPath" if artifact_path and base_allowed else "path",
            )
        if special_place(os.fspath(real)):
            raise CreateServableRequestInvalidError(
                f"'{given}' is a special file (under /proc, /sys or /dev)", field="path"
            )
        if not real.exists():
            field = "artifactPath" if artifact_path and base.is_dir() else "path"
            raise CreateServableRequestInvalidError(f"'{given}' does not exist", field=field)
        if not (real.is_dir() or real.is_file()):
            raise CreateServableRequestInvalidError(
                f"'{given}' is neither a file nor a directory", field="path"
            )
        return given, real


def allowed_roots(options: StorageOptions) -> list[str]:
    """The real paths of `options.local_roots`; the working directory when there are none."""
    roots = options.local_roots or (Path.cwd(),)
    return [os.path.realpath(root) for root in roots]


def allowed_local_path(options: StorageOptions, path: Path) -> bool:
    """Whether `path`, with its links resolved, is under an allowed local root."""
    real = os.path.realpath(path)
    return any(inside(real, root) for root in allowed_roots(options))
