"""`LocalFetcher` on real files: allowed roots, untrusted trees, and the fetch's bounds."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from forestflow.artifacts.base import StorageOptions, fetcher_for
from forestflow.artifacts.cache import ArtifactCache
from forestflow.artifacts.local import LocalFetcher
from forestflow.artifacts.trees import tree_bytes
from forestflow.domain.fqrv import FQRV, Contract
from forestflow.errors import (
    ArtifactTooLarge,
    CreateServableRequestInvalidError,
    InsufficientStorage,
)
from tests.integration.artifacts.conftest import MODEL_BYTES, MODEL_TREE, model_dir, tree

FQRV_ = FQRV(Contract("acme", "churn", 1), "r1")
OUTSIDE = "is a symlink to a place outside the artifact"


@pytest.fixture
def roots(tmp_path: Path) -> Path:
    """The one allowed local root, holding the model directory `model/`."""
    root = tmp_path / "models"
    model_dir(root / "model")
    return root


def fetcher(roots: Path, **overrides: int) -> LocalFetcher:
    return LocalFetcher(StorageOptions(local_roots=(roots,), **overrides))


def refusal(
    fetch: LocalFetcher, location: str, destination: Path, artifact_path: str | None = None
) -> CreateServableRequestInvalidError:
    with pytest.raises(CreateServableRequestInvalidError) as caught:
        fetch.fetch(location, artifact_path, destination)
    assert list(destination.iterdir()) == [], "nothing is copied"
    return caught.value


class TestCopies:
    def test_a_directory_is_copied(self, roots: Path, destination: Path) -> None:
        fetcher(roots).fetch(str(roots / "model"), None, destination)
        assert tree(destination) == MODEL_TREE

    def test_a_file_url_and_an_artifact_path(self, roots: Path, destination: Path) -> None:
        fetcher(roots).fetch((roots / "model").as_uri(), "model.onnx", destination)
        assert tree(destination) == {"model.onnx": MODEL_BYTES}

    def test_links_inside_the_artifact_are_copied_as_what_they_point_to(
        self, roots: Path, destination: Path
    ) -> None:
        model = roots / "model"
        (model / "alias.onnx").symlink_to("model.onnx")
        (model / "shared").mkdir()
        (model / "shared" / "notes.txt").write_text("n")
        (model / "current").symlink_to("shared", target_is_directory=True)

        fetcher(roots).fetch(str(model), None, destination)

        assert tree(destination) == {
            **MODEL_TREE,
            "alias.onnx": MODEL_BYTES,
            "current/notes.txt": b"n",
            "shared/notes.txt": b"n",
        }
        assert not any(path.is_symlink() for path in destination.rglob("*"))

    def test_the_working_directory_is_the_default_root(
        self, roots: Path, destination: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(roots)
        LocalFetcher(StorageOptions()).fetch("model", None, destination)
        assert tree(destination) == MODEL_TREE

    def test_the_protocol_is_registered(self) -> None:
        assert isinstance(fetcher_for("/srv/models/m", StorageOptions()), LocalFetcher)


class TestOutsideTheRoots:
    def test_an_existing_and_a_missing_path_get_the_same_answer(
        self, roots: Path, tmp_path: Path, destination: Path
    ) -> None:
        secret = tmp_path / "secret.txt"
        secret.write_text("do not copy")
        answers = []
        for path in (secret, tmp_path / "missing.txt", Path("/etc/shadow"), Path("/nope/x")):
            error = refusal(fetcher(roots), str(path), destination)
            answers.append((error.status, error.field, error.message.replace(str(path), "<p>")))
        assert (
            answers
            == [
                (
                    422,
                    "path",
                    "'<p>' is not under an allowed local root (setting storage.local_roots)",
                )
            ]
            * 4
        )

    def test_a_file_url_outside(self, roots: Path, destination: Path) -> None:
        error = refusal(fetcher(roots), "file:///usr/share", destination)
        assert error.message == (
            "'/usr/share' is not under an allowed local root (setting storage.local_roots)"
        )

    def test_a_file_url_naming_a_host_is_refused_not_read_without_it(
        self, roots: Path, destination: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """`file://model/...` would be `/...` with the host `model` dropped."""
        monkeypatch.chdir(roots)
        error = refusal(fetcher(roots), "file://model/model.onnx", destination)
        assert error.field == "path"
        assert error.message.startswith(
            "'file://model/model.onnx' names the host 'model': a file URL takes an absolute path"
        )
        fetcher(roots).fetch(f"file://localhost{roots / 'model'}", None, destination)
        assert tree(destination) == MODEL_TREE

    def test_a_link_out_of_the_root_does_not_lead_out(
        self, roots: Path, tmp_path: Path, destination: Path
    ) -> None:
        (tmp_path / "elsewhere").mkdir()
        (roots / "exit").symlink_to(tmp_path / "elsewhere")
        error = refusal(fetcher(roots), str(roots / "exit"), destination)
        assert "is not under an allowed local root" in error.message

    def test_an_artifact_path_that_climbs_out(self, roots: Path, destination: Path) -> None:
        error = refusal(fetcher(roots), str(roots / "model"), destination, "../../secret.txt")
        assert error.field == "artifactPath"
        assert "is not under an allowed local root" in error.message

    def test_a_root_of_slash_still_refuses_device_files(self, destination: Path) -> None:
        fetch = LocalFetcher(StorageOptions(local_roots=(Path("/"),)))
        for path in ("/dev/zero", "/proc/self/environ", "/sys/kernel"):
            error = refusal(fetch, path, destination)
            assert error.message == f"'{path}' is a special file (under /proc, /sys or /dev)"


class TestUntrustedTrees:
    @pytest.mark.parametrize(
        ("make", "reason"),
        [
            (lambda m: (m / "zero").symlink_to("/dev/zero"), OUTSIDE),
            (lambda m: (m / "zero").symlink_to("/etc/hostname"), OUTSIDE),
            (lambda m: (m / "zero").symlink_to("../../.."), OUTSIDE),
            (lambda m: (m / "zero").symlink_to("missing.onnx"), "is a dangling symlink"),
            (
                lambda m: os.mkfifo(m / "zero"),
                "is a device file, FIFO or socket, not a regular file",
            ),
        ],
        ids=["to /dev/zero", "to /etc", "to an ancestor", "dangling", "fifo"],
    )
    def test_refused_naming_the_file(
        self, roots: Path, destination: Path, make: Callable[[Path], object], reason: str
    ) -> None:
        model = roots / "model"
        make(model)
        error = refusal(fetcher(roots), str(model), destination)
        assert error.status == 422
        assert error.field == "path"
        assert error.message == f"'{model / 'zero'}' {reason}; refusing to copy it"

    def test_a_socket_is_refused(self, roots: Path, destination: Path) -> None:
        with bound_unix_socket(roots / "model" / "s.sock"):
            error = refusal(fetcher(roots), str(roots / "model"), destination)
        assert "s.sock' is a device file, FIFO or socket" in error.message

    def test_a_link_loop_is_refused(self, roots: Path, destination: Path) -> None:
        (roots / "model" / "again").symlink_to(".", target_is_directory=True)
        error = refusal(fetcher(roots), str(roots / "model"), destination)
        assert error.message.endswith("again' is a symlink loop; refusing to copy it")

    def test_a_link_to_dev_zero_leaves_nothing_in_the_cache(
        self, roots: Path, tmp_path: Path
    ) -> None:
        (roots / "model" / "weights.bin").symlink_to("/dev/zero")
        data_dir = tmp_path / "data"
        cache = ArtifactCache(data_dir)
        before = tree_bytes(data_dir)

        with pytest.raises(CreateServableRequestInvalidError, match=r"weights\.bin"):
            cache.install(
                FQRV_, lambda target: fetcher(roots).fetch(str(roots / "model"), None, target)
            )

        assert list((data_dir / "incoming").iterdir()) == []
        assert not cache.has(FQRV_)
        assert tree_bytes(data_dir) == before


class TestBounds:
    def test_over_the_size_limit_nothing_is_copied(self, roots: Path, destination: Path) -> None:
        with pytest.raises(ArtifactTooLarge) as caught:
            fetcher(roots, max_artifact_bytes=1000).fetch(str(roots / "model"), None, destination)
        assert caught.value.status == 413
        assert "storage.max_artifact_bytes" in caught.value.message
        assert list(destination.iterdir()) == []

    def test_too_little_free_space(self, roots: Path, destination: Path) -> None:
        reserve = shutil.disk_usage(destination).free + 2**30
        with pytest.raises(InsufficientStorage) as caught:
            fetcher(roots, free_space_reserve_bytes=reserve).fetch(
                str(roots / "model"), None, destination
            )
        assert caught.value.status == 507
        assert "storage.free_space_reserve_bytes" in caught.value.message
        assert list(destination.iterdir()) == []

    def test_the_data_directory_inside_the_artifact_is_refused(self, roots: Path) -> None:
        inside = roots / "model" / "cache"
        inside.mkdir()
        error = refusal(fetcher(roots), str(roots / "model"), inside)
        assert "contains the server's data directory" in error.message


@contextlib.contextmanager
def bound_unix_socket(path: Path) -> Iterator[None]:
    """A Unix socket bound at `path` while the block runs."""
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        yield
