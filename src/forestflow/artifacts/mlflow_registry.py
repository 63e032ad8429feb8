"""The MLflow fetchers: the Model Registry's `models:/<name>/<version>` and
`models:/<name>@<alias>`, and a run's artifacts, `runs:/<run_id>/<path>`.

The registry is the one of the tracking server in `StorageOptions.mlflow_tracking_uri`,
else the one `MLFLOW_TRACKING_URI` names (read by mlflow itself; `MLFLOW_REGISTRY_URI`,
`MLFLOW_TRACKING_TOKEN` and the other mlflow variables apply as usual). mlflow's own
client resolves the version and downloads its artifacts (imported on first use: it needs
`pip install 'forestflow[mlflow]'`). An alias is resolved to its version once, at deploy
time: the servable keeps the files it was deployed with.

The tracking server is the operator's, so it is not subject to
`storage.allow_private_hosts`. The download itself runs in a child Python process that
`processes.run_bounded` watches: the bytes it has written, the disk's free space and the
fetch's deadline are checked while it runs, and it is killed on a breach (mlflow offers no
way to count its chunks, and a thread could not be stopped). That costs the child's
start-up (importing mlflow, about two seconds) on each deploy from the registry.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from forestflow.artifacts.base import ArtifactFetcher
from forestflow.artifacts.budget import FetchBudget
from forestflow.artifacts.processes import run_bounded
from forestflow.artifacts.trees import tree_bytes
from forestflow.errors import CreateServableRequestInvalidError

log = logging.getLogger(__name__)

_SCHEME = "models:/"
_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")
_NOT_FOUND_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"})
_USAGE = "use models:/<name>/<version> or models:/<name>@<alias>"
_RUNS = "runs:/"
_RUN_USAGE = "use runs:/<run_id>/<artifact path>, such as runs:/<run_id>/model"
_RUN_ID = re.compile(r"[0-9A-Za-z_-]+")
_MLFLOW_FAILED = 3
# The child's program: download, then one JSON line saying where the files are, or why not.
_DOWNLOAD = """
import errno, json, sys
import mlflow.artifacts, mlflow.exceptions
uri, destination, tracking_uri = sys.argv[1:4]
try:
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=uri, dst_path=destination, tracking_uri=tracking_uri
    )
except mlflow.exceptions.MlflowException as error:
    print(json.dumps({"error_code": str(error.error_code), "message": str(error.message)}))
    sys.exit(3)
except OSError as error:
    full = error.errno in (errno.ENOSPC, errno.EDQUOT)
    print(json.dumps({"disk_full": full, "message": f"{type(error).__name__}: {error}"}))
    sys.exit(3)
print(json.dumps({"path": local}))
"""


@dataclass(frozen=True, slots=True)
class _MlflowFailure:
    """Why the child's download failed, as mlflow said it."""

    error_code: str
    message: str


@dataclass(frozen=True, slots=True)
class ModelReference:
    """A registered model version, by number or by alias."""

    name: str
    version: str | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, location: str) -> ModelReference:
        """Parse `models:/<name>/<version>` or `models:/<name>@<alias>`; 422 otherwise."""
        rest = location[len(_SCHEME) :] if location.startswith(_SCHEME) else ""
        if rest.startswith("/") or not rest:
            raise CreateServableRequestInvalidError(f"{location!r}: {_USAGE}", field="path")
        rest = rest.rstrip("/")
        if "/" in rest:
            name, version = rest.split("/", 1)
            if name and version.isdigit():
                return cls(name, version=version)
        elif "@" in rest:
            name, alias = rest.rsplit("@", 1)
            if name and alias:
                return cls(name, alias=alias)
        raise CreateServableRequestInvalidError(f"{location!r}: {_USAGE}", field="path")

    def __str__(self) -> str:
        suffix = f"@{self.alias}" if self.alias else f"/{self.version}"
        return f"{_SCHEME}{self.name}{suffix}"


@dataclass(frozen=True, slots=True)
class RunReference:
    """Artifacts of an MLflow run: `runs:/<run_id>/<path>`."""

    run_id: str
    path: str

    @classmethod
    def parse(cls, location: str) -> RunReference:
        """Parse `runs:/<run_id>/<path>`; 422 otherwise."""
        rest = location[len(_RUNS) :] if location.startswith(_RUNS) else ""
        run_id, _, path = rest.strip("/").partition("/")
        path = posixpath.normpath(path) if path else ""
        if not _RUN_ID.fullmatch(run_id) or path in ("", ".") or path.startswith(".."):
            raise CreateServableRequestInvalidError(f"{location!r}: {_RUN_USAGE}", field="path")
        return cls(run_id, path)

    def __str__(self) -> str:
        return f"{_RUNS}{self.run_id}/{self.path}"


class MlflowRegistryFetcher(ArtifactFetcher):
    """A model version's artifacts from an MLflow tracking server's model registry."""

    def fetch_within(
        self, location: str, artifact_path: str | None, destination: Path, budget: FetchBudget
    ) -> str:
        """Resolve the model version and download its artifacts into `destination`;
        return `models:/<name>/<version>`, the version an alias named at this moment."""
        reference = ModelReference.parse(location)
        relative = _relative_artifact_path(artifact_path)
        mlflow, tracking_uri, client = self._client()
        try:
            version = self._version(client, reference)
            source = client.get_model_version_download_uri(reference.name, version)
        except mlflow.exceptions.MlflowException as error:
            raise _refusal(reference, tracking_uri, error, "path") from None
        _download_into(
            destination, source, relative, reference, tracking_uri=tracking_uri, budget=budget
        )
        log.info("downloaded %s (version %s) from %s", reference, version, _redacted(tracking_uri))
        return str(ModelReference(reference.name, version=version))

    def _client(self) -> tuple[Any, str, Any]:
        """mlflow, the tracking server's URI (checked to answer) and a client of it."""
        mlflow = _import_mlflow()
        tracking_uri = self._tracking_uri(mlflow)
        self._check_reachable(tracking_uri)
        return mlflow, tracking_uri, mlflow.tracking.MlflowClient(tracking_uri=tracking_uri)

    def _tracking_uri(self, mlflow: Any) -> str:
        """The configured tracking URI, else `MLFLOW_TRACKING_URI` as mlflow reads it."""
        uri: str | None = (
            self.options.mlflow_tracking_uri
            or mlflow.environment_variables.MLFLOW_TRACKING_URI.get()
        )
        if not uri:
            raise CreateServableRequestInvalidError(
                "models:/ and runs:/ locations need an MLflow tracking server, and none is "
                "configured: "
                "set storage.mlflow_tracking_uri (FORESTFLOW_STORAGE__MLFLOW_TRACKING_URI) "
                "or MLFLOW_TRACKING_URI",
                field="path",
            )
        return uri

    def _check_reachable(self, tracking_uri: str) -> None:
        """Refuse quickly when an HTTP tracking server does not answer at all.

        mlflow's client retries a refused connection with backoff for minutes; one plain
        request with the storage timeout tells the client what is wrong at once.
        """
        if urlsplit(tracking_uri).scheme.lower() not in ("http", "https"):
            return
        import requests  # noqa: PLC0415 - a dependency of mlflow, imported with it

        try:
            requests.get(f"{tracking_uri.rstrip('/')}/health", timeout=self.options.timeout_s)
        except requests.exceptions.SSLError:
            return  # it answers; mlflow's own TLS settings may still accept it
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as error:
            raise CreateServableRequestInvalidError(
                f"MLflow tracking server {_redacted(tracking_uri)} is unreachable: "
                f"{type(error).__name__}",
                field="path",
            ) from None

    @staticmethod
    def _version(client: Any, reference: ModelReference) -> str:
        """The version number `reference` names (an alias resolved now)."""
        if reference.alias is not None:
            return str(client.get_model_version_by_alias(reference.name, reference.alias).version)
        return str(client.get_model_version(reference.name, reference.version).version)


class MlflowRunFetcher(MlflowRegistryFetcher):
    """Artifacts logged by an MLflow run (`runs:/<run_id>/<path>`), from the tracking
    server that recorded the run. A run's artifacts do not change: the location is pinned
    as it is."""

    def fetch_within(
        self, location: str, artifact_path: str | None, destination: Path, budget: FetchBudget
    ) -> str:
        """Download the run's artifacts at the path into `destination`."""
        reference = RunReference.parse(location)
        relative = _relative_artifact_path(artifact_path)
        mlflow, tracking_uri, client = self._client()
        try:
            client.get_run(reference.run_id)
        except mlflow.exceptions.MlflowException as error:
            raise _refusal(reference, tracking_uri, error, "path") from None
        _download_into(
            destination,
            str(reference),
            relative,
            reference,
            tracking_uri=tracking_uri,
            budget=budget,
        )
        log.info("downloaded %s from %s", reference, _redacted(tracking_uri))
        return str(reference)


def _download_into(
    destination: Path,
    source: str,
    relative: str | None,
    reference: ModelReference | RunReference,
    *,
    tracking_uri: str,
    budget: FetchBudget,
) -> None:
    """Download the artifacts at `source` (and `relative` inside it) into `destination`."""
    if relative:
        source = posixpath.join(source.rstrip("/"), relative)
    # downloads land inside `destination`: the cache owns that directory alone
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=destination))
    try:
        local = _download(source, staging, tracking_uri, budget)
        if isinstance(local, _MlflowFailure):
            field = "artifactPath" if relative else "path"
            raise _refusal(reference, tracking_uri, local, field)
        _move_content(local, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _download(
    source: str, staging: Path, tracking_uri: str, budget: FetchBudget
) -> Path | _MlflowFailure:
    """Download the artifacts at `source` into `staging` in a watched child process;
    return where they are, or mlflow's reason for failing."""
    result = run_bounded(
        [sys.executable, "-c", _DOWNLOAD, source, str(staging), tracking_uri],
        budget=budget,
        timeout_s=float("inf"),  # the fetch's deadline bounds it
        measure=lambda: tree_bytes(staging),
        env=os.environ,
    )
    lines = result.stdout.strip().splitlines()
    answer: dict[str, Any] = {}
    if lines and result.returncode in (0, _MLFLOW_FAILED):
        try:
            answer = json.loads(lines[-1])
        except ValueError:
            answer = {}
    if result.returncode == 0 and "path" in answer:
        return Path(answer["path"])
    if answer.get("disk_full"):
        raise budget.insufficient_storage()
    if "message" in answer:
        return _MlflowFailure(str(answer.get("error_code", "")), str(answer["message"]))
    log.warning("the MLflow download of %s failed: %s", _redacted(source), result.stderr[-2000:])
    return _MlflowFailure("", f"the download failed (exit status {result.returncode})")


def _import_mlflow() -> Any:
    """mlflow's client modules, or a 422 naming the package to install."""
    try:
        import mlflow.artifacts  # noqa: PLC0415 - heavy, needed only for models:/ paths
        import mlflow.environment_variables  # noqa: PLC0415
        import mlflow.exceptions  # noqa: PLC0415
        import mlflow.tracking  # noqa: PLC0415
    except ImportError:
        raise CreateServableRequestInvalidError(
            "models:/ and runs:/ locations need the 'mlflow-skinny' package, which is not "
            "installed; "
            "install it with: pip install 'forestflow[mlflow]'",
            field="path",
        ) from None
    return mlflow


def _relative_artifact_path(artifact_path: str | None) -> str | None:
    """`artifact_path` as a relative POSIX path inside the model version; 422 if it leaves it."""
    if not artifact_path:
        return None
    relative = posixpath.normpath(artifact_path.strip("/"))
    if relative == "." or relative.startswith(".."):
        raise CreateServableRequestInvalidError(
            f"{artifact_path!r} must name a path inside the model version", field="artifactPath"
        )
    return relative


def _refusal(
    reference: ModelReference | RunReference, tracking_uri: str, error: Any, field: str
) -> CreateServableRequestInvalidError:
    """A 422 explaining an mlflow error in one line (its first, without the code prefix)."""
    code = str(getattr(error, "error_code", ""))
    lines = str(getattr(error, "message", error)).strip().splitlines() or ["(no detail)"]
    detail = _redacted(lines[0][:300]).removeprefix(f"{code}: ")
    server = "registry" if isinstance(reference, ModelReference) else "tracking server"
    where = f"the MLflow {server} at {_redacted(tracking_uri)}"
    if code in _NOT_FOUND_CODES:
        message = f"{reference} not found in {where}: {detail}"
    else:
        message = f"could not fetch {reference} from {where}: {detail}"
    return CreateServableRequestInvalidError(message, field=field)


def _move_content(source: Path, destination: Path) -> None:
    """Move a directory's entries (or a single file) into `destination`."""
    entries = sorted(source.iterdir()) if source.is_dir() else [source]
    for entry in entries:
        shutil.move(entry, destination / entry.name)


def _redacted(uri: str) -> str:
    """`uri` without the credentials it may carry."""
    return _CREDENTIALS.sub("***@", uri)
