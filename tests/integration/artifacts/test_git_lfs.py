"""Git LFS end to end: a model pushed with the real git-lfs to a bare repository (file://),
fetched by GitFetcher and deployed and scored over the REST API; and an LFS endpoint on a
private host, refused.

git-lfs must be on PATH: `make test` provisions it into the virtualenv (the system's
git-lfs, or Debian's package unpacked without root) and runs pytest with the
virtualenv's bin first on PATH. The server side is run in both configurations a server
can have: `git lfs install` run for its user (the LFS filter in the global git
configuration) and never run (no LFS filter configured anywhere, as after installing the
package alone).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from forestflow.artifacts.base import StorageOptions, fetcher_for
from forestflow.artifacts.git import GitFetcher
from forestflow.artifacts.hosts import HostCheck, IPAddress, is_non_public
from forestflow.errors import CreateServableRequestInvalidError
from tests.git_commands import GIT_ENV, git
from tests.integration.api.conftest import Harness, HarnessFactory, harness_factory
from tests.integration.artifacts.conftest import GitDaemon, TrustingOptions, tree
from tests.payloads import POWERPLANT_FEATURES, SINGLE_INPUT_MODEL, fqrv_json, prediction_values

# pytest finds fixtures by name in the test module: this makes the REST harness usable here
__all__ = ["harness_factory"]

MODEL = SINGLE_INPUT_MODEL / "model.onnx"
EXPECTED = json.loads((SINGLE_INPUT_MODEL / "expected.json").read_text())
TAG = "v1.2026-11-29"
POINTER_PREFIX = b"version https://git-lfs.github.com/spec/v1\n"


def require_git_lfs() -> None:
    """Fail (never skip): Git LFS support is part of the acceptance criteria."""
    if shutil.which("git-lfs") is None:
        pytest.fail(
            "git-lfs is not on PATH: run the suite with `make test` (or `make integration`), "
            "which provisions git-lfs into .venv/bin and puts that directory on PATH"
        )


@dataclass(frozen=True)
class LfsRemote:
    """A bare repository `<root>/acme/powerplant.git` whose `*.onnx` files live in Git LFS."""

    bare: Path

    def location(self, tag: str = TAG) -> str:
        return f"{self.bare.as_uri()}#{tag}"


def push_lfs_repository(root: Path) -> LfsRemote:
    """Commit the model with git-lfs tracking `*.onnx`, tag TAG, push it all over file://."""
    bare = root / "acme" / "powerplant.git"
    bare.parent.mkdir(parents=True)
    git(root, "init", "--quiet", "--bare", str(bare))
    work = root / "work"
    work.mkdir()
    git(work, "init", "--quiet", "--initial-branch", "main")
    git(work, "lfs", "install", "--local")  # the filter and hooks of this repository only
    git(work, "lfs", "track", "*.onnx")
    (work / "models").mkdir()
    shutil.copy(MODEL, work / "models" / "model.onnx")
    (work / "README.md").write_text("power plant model in Git LFS\n")
    git(work, "add", "--all")
    git(work, "commit", "--quiet", "--message", "model in LFS")
    git(work, "tag", TAG)
    git(work, "remote", "add", "origin", bare.as_uri())
    # the pre-push hook uploads the LFS objects (git-lfs's standalone file transfer agent)
    git(work, "push", "--quiet", "origin", "main", TAG)
    shutil.rmtree(work)
    return LfsRemote(bare)


@pytest.fixture(scope="module")
def lfs_remote(tmp_path_factory: pytest.TempPathFactory) -> LfsRemote:
    require_git_lfs()
    return push_lfs_repository(tmp_path_factory.mktemp("git-lfs"))


@pytest.fixture(params=["lfs-installed-for-the-server-user", "lfs-never-installed"])
def server_git_config(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The global git configuration the fetcher (this process) sees, in both variants."""
    require_git_lfs()
    home = tmp_path / "server-home"
    home.mkdir()
    config = home / ".gitconfig"
    if request.param == "lfs-installed-for-the-server-user":
        git(home, "lfs", "install", HOME=str(home), GIT_CONFIG_GLOBAL=str(config))
        assert 'filter "lfs"' in config.read_text()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config) if config.exists() else os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


class TestLfsRemote:
    def test_the_bare_repository_holds_a_pointer_and_the_object_holds_the_model(
        self, lfs_remote: LfsRemote
    ) -> None:
        model = MODEL.read_bytes()
        oid = hashlib.sha256(model).hexdigest()
        blob = subprocess.run(
            ["git", "cat-file", "blob", f"{TAG}:models/model.onnx"],
            cwd=lfs_remote.bare,
            env={**os.environ, **GIT_ENV},
            check=True,
            capture_output=True,
        ).stdout
        assert blob == POINTER_PREFIX + f"oid sha256:{oid}\nsize {len(model)}\n".encode()
        stored = lfs_remote.bare / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
        assert stored.read_bytes() == model


@pytest.mark.usefixtures("server_git_config")
class TestGitLfsFetch:
    def test_fetch_downloads_the_lfs_files(
        self, lfs_remote: LfsRemote, destination: Path, trusting: TrustingOptions
    ) -> None:
        fetcher = fetcher_for(lfs_remote.location(), trusting(timeout_s=60))
        assert isinstance(fetcher, GitFetcher)

        fetcher.fetch(lfs_remote.location(), None, destination)

        assert tree(destination) == {
            ".gitattributes": b"*.onnx filter=lfs diff=lfs merge=lfs -text\n",
            "README.md": b"power plant model in Git LFS\n",
            "models/model.onnx": MODEL.read_bytes(),
        }

    def test_an_artifact_path_pulls_only_what_it_keeps(
        self, lfs_remote: LfsRemote, destination: Path, trusting: TrustingOptions
    ) -> None:
        fetcher = GitFetcher(trusting(timeout_s=60))
        fetcher.fetch(lfs_remote.location(), "models", destination)
        assert tree(destination) == {"model.onnx": MODEL.read_bytes()}

    def test_a_missing_lfs_object_is_refused_clearly(
        self,
        lfs_remote: LfsRemote,
        tmp_path: Path,
        destination: Path,
        trusting: TrustingOptions,
    ) -> None:
        broken = LfsRemote(tmp_path / "broken" / "acme" / "powerplant.git")
        shutil.copytree(lfs_remote.bare, broken.bare)
        shutil.rmtree(broken.bare / "lfs" / "objects")

        with pytest.raises(CreateServableRequestInvalidError) as refused:
            GitFetcher(trusting(timeout_s=60)).fetch(broken.location(), None, destination)

        assert refused.value.field == "path"
        assert refused.value.message.startswith(
            f"could not download the Git LFS files of {broken.bare.as_uri()} at {TAG} "
            "(e.g. models/model.onnx): "
        )
        oid = hashlib.sha256(MODEL.read_bytes()).hexdigest()
        assert f"remote missing object {oid}" in refused.value.message
        assert list(destination.iterdir()) == []


def loopback_1_is_public(address: IPAddress) -> bool:
    """`is_non_public`, except that 127.0.0.1 passes: the local git daemon plays a public
    host, and any other loopback address a private one."""
    return address != ipaddress.ip_address("127.0.0.1") and is_non_public(address)


@pytest.fixture(scope="module")
def lfsconfig_daemon(
    lfs_remote: LfsRemote, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GitDaemon, Path]]:
    """A copy of the LFS repository whose tag `v1.lfsconfig` adds a `.lfsconfig` naming an
    LFS server on a private address, served by `git daemon`; and the copy's path."""
    root = tmp_path_factory.mktemp("lfsconfig")
    bare = root / "acme" / "powerplant.git"
    shutil.copytree(lfs_remote.bare, bare)
    work = root / "work"
    git(root, "clone", "--quiet", "--branch", "main", str(bare), str(work), GIT_LFS_SKIP_SMUDGE="1")
    (work / ".lfsconfig").write_text("[lfs]\n\turl = http://127.0.0.2:9/acme/lfs\n")
    git(work, "add", ".lfsconfig")
    git(work, "commit", "--quiet", "--message", "LFS elsewhere")
    git(work, "tag", "v1.lfsconfig")
    git(work, "push", "--quiet", "origin", "v1.lfsconfig", GIT_LFS_SKIP_PUSH="1")
    served = GitDaemon(root, root / "daemon.log")
    yield served, bare
    served.stop()


@pytest.mark.usefixtures("server_git_config")
class TestLfsEndpoints:
    def test_an_lfs_server_on_a_private_host_is_refused(
        self, lfsconfig_daemon: tuple[GitDaemon, Path], destination: Path
    ) -> None:
        daemon, bare = lfsconfig_daemon
        fetcher = GitFetcher(
            StorageOptions(timeout_s=60), hosts=HostCheck(forbidden=loopback_1_is_public)
        )
        location = daemon.url(bare, "v1.lfsconfig")
        with pytest.raises(CreateServableRequestInvalidError) as refused:
            fetcher.fetch(location, None, destination)
        assert refused.value.message == (
            f"could not fetch {location.split('#', 1)[0]}: the host resolves to a private or "
            "loopback address (setting storage.allow_private_hosts)"
        )
        assert list(destination.iterdir()) == []


def score_rows() -> dict[str, Any]:
    """A score request of the fixture's rows."""
    return {
        "schema": [{"type": "Float64", "fields": POWERPLANT_FEATURES}],
        "datum": [{"tensors": [{"Float64": {"data": row}}]} for row in EXPECTED["rows"]],
    }


@pytest.mark.usefixtures("server_git_config")
class TestGitLfsDeploy:
    async def test_a_model_in_git_lfs_is_deployed_and_scores(
        self, harness_factory: HarnessFactory, lfs_remote: LfsRemote
    ) -> None:
        harness: Harness = await harness_factory()
        body = {
            "path": lfs_remote.location(),
            "flavor": {
                "ONNX": {"modelPath": "models/model.onnx", "featureNames": POWERPLANT_FEATURES}
            },
            "servableSettings": {
                "policySettings": {
                    "validityPolicy": [{"ImmediatelyValid": {}}],
                    "phaseInPolicy": {"ImmediatePhaseIn": {}},
                },
                "loggingSettings": {"logLevel": "FULL"},
            },
        }
        response = await harness.client.post("/servable", json=body)
        assert response.status_code == 201, response.text
        fqrv = fqrv_json("2026-11-29", org="acme", project="powerplant", n=1)
        assert response.json() == {"ServableCreatedSuccessfully": {"fqrv": fqrv}}

        scored = await harness.client.post("/acme/powerplant/1/score", json=score_rows())
        assert scored.status_code == 200, scored.text
        predicted = [row[0] for row in prediction_values(scored.json())]
        expected = [row[0] for row in EXPECTED["outputs"]["variable"]]
        np.testing.assert_allclose(predicted, expected, rtol=1e-6)
