"""The storage-protocol seam: `ArtifactFetcher`, its options, and protocol detection.

One fetcher per storage protocol (SPEC §2.2), registered by protocol name and imported
on first use. A location's protocol is its URL scheme, except that Git locations are
recognised by shape (`git@host:org/repo.git#tag`, `…/repo.git#tag` over https or file),
and a plain path is a local path.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit

from forestflow.artifacts.budget import FetchBudget
from forestflow.domain.fqrv import FQRV
from forestflow.domain.registry import Registry
from forestflow.errors import CreateServableRequestInvalidError


@dataclass(frozen=True, slots=True)
class StorageOptions:
    """Server-wide settings of the fetchers (built from the configuration by the app)."""

    s3_endpoint_url: str | None = None
    """Endpoint of an S3-compatible store; None = AWS (or `AWS_ENDPOINT_URL`)."""
    mlflow_tracking_uri: str | None = None
    """MLflow tracking server for `models:/` locations; None = `MLFLOW_TRACKING_URI`."""
    timeout_s: float = 60.0
    """Network timeout of one request to a remote store."""
    local_roots: tuple[Path, ...] = ()
    """Local paths may be deployed only from under these directories; empty = the
    server's working directory."""
    allow_private_hosts: bool = False
    """Allow remote fetches from loopback, private, link-local and other non-public
    addresses."""
    max_artifact_bytes: int = 4 * 1024**3
    """Largest artifact, as downloaded and as unpacked."""
    free_space_reserve_bytes: int = 256 * 1024**2
    """Free space a fetch must leave on the data directory's disk."""
    fetch_deadline_s: float = 900.0
    """A whole fetch must finish within this long."""


class ArtifactFetcher(ABC):
    """Copies artifacts of one storage protocol into a local directory."""

    registry: ClassVar[Registry[ArtifactFetcher]]
    wire_name: ClassVar[str]

    def __init__(self, options: StorageOptions) -> None:
        self.options = options

    def fetch(self, location: str, artifact_path: str | None, destination: Path) -> str | None:
        """Copy the artifact at `location` (its `artifact_path` sub-directory, if given)
        into the existing, empty directory `destination`.

        Returns a location that names exactly what was fetched when `location` may name
        something else later (an MLflow alias), else None. The server records it, so a
        servable whose local copy is lost is fetched again as deployed.

        Raises `CreateServableRequestInvalidError` naming the field (`path`,
        `artifactPath`) when the artifact cannot be found, reached or read;
        `ArtifactTooLarge` (413) over `max_artifact_bytes`; `InsufficientStorage` (507)
        when the disk is full or would drop below `free_space_reserve_bytes`. What a
        failed fetch wrote stays inside `destination`, which the cache deletes.
        """
        budget = FetchBudget.start(self.options, destination, redact_credentials(location))
        budget.check_free_space()
        with budget.guard():
            return self.fetch_within(location, artifact_path, destination, budget)

    @abstractmethod
    def fetch_within(
        self, location: str, artifact_path: str | None, destination: Path, budget: FetchBudget
    ) -> str | None:
        """`fetch`, counting every byte written against `budget` and checking its deadline."""

    def fqrv_hint(self, location: str) -> FQRV | None:
        """The FQRV the location itself implies (Git tags do), used when a request has none."""
        return None

    def directory_of(self, location: str, name: str) -> str | None:
        """The location of the directory holding the file `location` names, when that file
        is called `name` (an MLflow model's `MLmodel`, named instead of its directory);
        None when it is not, or when the protocol has no directories (HTTP, Git, MLflow)."""
        return None


ArtifactFetcher.registry = Registry("storage protocol")
for _name, _target in (
    ("file", "forestflow.artifacts.local:LocalFetcher"),
    ("http", "forestflow.artifacts.http:HttpFetcher"),
    ("https", "forestflow.artifacts.http:HttpFetcher"),
    ("s3", "forestflow.artifacts.s3:S3Fetcher"),
    ("git", "forestflow.artifacts.git:GitFetcher"),
    ("models", "forestflow.artifacts.mlflow_registry:MlflowRegistryFetcher"),
    ("runs", "forestflow.artifacts.mlflow_registry:MlflowRunFetcher"),
):
    ArtifactFetcher.registry.register_lazy(_name, _target)


_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


def redact_credentials(text: str) -> str:
    """`text` with the user:password of every URL in it replaced by `***`."""
    return _USERINFO.sub("***@", text)


def protocol_of(location: str) -> str:
    """The storage protocol of `location`: "git" by shape, else its scheme, else "file"."""
    without_tag = location.split("#", 1)[0]
    if location.startswith("git@") or without_tag.rstrip("/").endswith(".git"):
        return "git"
    scheme = urlsplit(location).scheme.lower()
    if scheme.startswith("git+"):
        return "git"
    return scheme if len(scheme) > 1 else "file"  # one letter: a Windows drive


def fetcher_for(location: str, options: StorageOptions) -> ArtifactFetcher:
    """The fetcher for `location`'s protocol; unknown protocols raise a 422 naming `path`."""
    protocol = protocol_of(location)
    if protocol not in ArtifactFetcher.registry:
        known = ", ".join(
            f"{name}:/" if name in ("models", "runs") else f"{name}://"
            for name in ArtifactFetcher.registry.names()
        )
        raise CreateServableRequestInvalidError(
            f"unsupported storage protocol '{protocol}://'; supported: {known}, "
            "git@host:org/repo.git#tag and plain paths",
            field="path",
        )
    return ArtifactFetcher.registry.get(protocol)(options)
