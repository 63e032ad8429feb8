"""GitFetcher against real repositories: bare repos built by the tests, cloned over file://."""

from __future__ import annotations

import hashlib
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

import pytest

from forestflow.artifacts.base import StorageOptions, fetcher_for
from forestflow.artifacts.git import GitFetcher
from forestflow.domain.fqrv import FQRV, Contract
from forestflow.errors import CreateServableRequestInvalidError
from tests.git_commands import GIT_ENV, git
from tests.integration.artifacts.conftest import tree
from tests.payloads import EXAMPLES

MODEL = EXAMPLES / "energy_output" / "model.onnx"
RELEASE_TAG = "v3.2026-11-28"


def commit_all(work: Path, message: str, *tags: str) -> None:
    git(work, "add", "--all")
    git(work, "commit", "--quiet", "--message", message)
    for tag in tags:
        git(work, "tag", tag)


@dataclass(frozen=True)
class Remote:
    """A bare repository `<root>/samples/energy_output.git` with release tags."""

    bare: Path

    def location(self, tag: str | None = RELEASE_TAG) -> str:
        return self.bare.as_uri() + (f"#{tag}" if tag else "")


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Remote:
    root = tmp_path_factory.mktemp("git")
    work = root / "work"
    work.mkdir()
    git(work, "init", "--quiet", "--initial-branch", "main")
    (work / "nested" / "energy_output").mkdir(parents=True)
    shutil.copy(MODEL, work / "model.onnx")
    shutil.copy(MODEL, work / "nested" / "energy_output" / "model.onnx")
    (work / "README.md").write_text("release 3\n")
    commit_all(work, "release 3", "not-a-version")
    git(work, "tag", "--annotate", "--message", "release 3", RELEASE_TAG)
    (work / "README.md").write_text("release 4\n")
    commit_all(work, "release 4", "v4.2026-12-05")
    bare = root / "samples" / "energy_output.git"
    git(root, "clone", "--quiet", "--bare", str(work), str(bare))
    return Remote(bare)


@pytest.fixture
def fetcher() -> GitFetcher:
    return GitFetcher(StorageOptions(timeout_s=30))


def hide_git_lfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run git as on a machine without git-lfs: git alone on PATH, no global LFS filter."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    git_path = shutil.which("git")
    assert git_path is not None
    (bin_dir / "git").symlink_to(git_path)
    monkeypatch.setenv("PATH", str(bin_dir))
    for name in ("GIT_CONFIG_GLOBAL", "GIT_CONFIG_NOSYSTEM"):
        monkeypatch.setenv(name, GIT_ENV[name])


class TestGitFetch:
    def test_fetch_copies_the_tagged_tree_without_git_metadata(
        self, remote: Remote, fetcher: GitFetcher, destination: Path
    ) -> None:
        fetcher.fetch(remote.location(), None, destination)

        assert tree(destination) == {
            "README.md": b"release 3\n",
            "model.onnx": MODEL.read_bytes(),
            "nested/energy_output/model.onnx": MODEL.read_bytes(),
        }
        assert sorted(p.name for p in destination.iterdir()) == [
            "README.md",
            "model.onnx",
            "nested",
        ]
        assert [p.name for p in destination.parent.iterdir()] == ["incoming"]

    def test_each_tag_gives_its_own_tree(
        self, remote: Remote, fetcher: GitFetcher, destination: Path
    ) -> None:
        fetcher.fetch(remote.location("v4.2026-12-05"), None, destination)
        assert (destination / "README.md").read_text() == "release 4\n"

    @pytest.mark.parametrize(
        "location",
        [
            pytest.param("{bare}#" + RELEASE_TAG, id="plain-path"),
            pytest.param("git+{uri}#" + RELEASE_TAG, id="git+file"),
            pytest.param("{uri}#not-a-version", id="any-tag"),
        ],
    )
    def test_location_forms(
        self, remote: Remote, fetcher: GitFetcher, destination: Path, location: str
    ) -> None:
        fetcher.fetch(
            location.format(bare=remote.bare, uri=remote.bare.as_uri()), None, destination
        )
        assert (destination / "README.md").read_text() == "release 3\n"
        assert (destination / "model.onnx").read_bytes() == MODEL.read_bytes()

    @pytest.mark.parametrize(
        ("artifact_path", "expected"),
        [("nested/energy_output", {"model.onnx"}), ("nested/", {"energy_output/model.onnx"})],
    )
    def test_artifact_path_keeps_only_that_sub_directory(
        self,
        remote: Remote,
        fetcher: GitFetcher,
        destination: Path,
        artifact_path: str,
        expected: set[str],
    ) -> None:
        fetcher.fetch(remote.location(), artifact_path, destination)
        assert set(tree(destination)) == expected
        assert [p.name for p in destination.parent.iterdir()] == ["incoming"]

    def test_artifact_path_naming_a_file_keeps_that_file(
        self, remote: Remote, fetcher: GitFetcher, destination: Path
    ) -> None:
        fetcher.fetch(remote.location(), "README.md", destination)
        assert tree(destination) == {"README.md": b"release 3\n"}

    @pytest.mark.parametrize(
        ("artifact_path", "message"),
        [
            ("missing", "'missing' does not exist in the repository"),
            ("../..", "points outside the repository's working tree"),
            (".git", "points outside the repository's working tree"),
            (".git/config", "points outside the repository's working tree"),
        ],
    )
    def test_bad_artifact_path_is_refused(
        self,
        remote: Remote,
        fetcher: GitFetcher,
        destination: Path,
        artifact_path: str,
        message: str,
    ) -> None:
        with pytest.raises(CreateServableRequestInvalidError) as refused:
            fetcher.fetch(remote.location(), artifact_path, destination)
        assert refused.value.field == "artifactPath"
        assert message in refused.value.message
        assert list(destination.iterdir()) == []


class TestGitFetchRefusals:
    def test_a_location_without_tag_is_refused(
        self, remote: Remote, fetcher: GitFetcher, destination: Path
    ) -> None:
        with pytest.raises(CreateServableRequestInvalidError) as refused:
            fetcher.fetch(remote.location(tag=None), None, destination)
        assert refused.value.field == "path"
        assert "a Git location needs a tag" in refused.value.message

    def test_an_unknown_tag_is_refused(
        self, remote: Remote, fetcher: GitFetcher, destination: Path
    ) -> None:
        with pytest.raises(CreateServableRequestInvalidError) as refused:
            fetcher.fetch(remote.location("v9.missing"), None, destination)
        assert refused.value.field == "path"
        assert refused.value.message == (
            f"tag 'v9.missing' not found in Git repository {remote.bare.as_uri()}"
        )
        assert list(destination.iterdir()) == []

    def test_an_unknown_repository_is_refused(
        self, remote: Remote, fetcher: GitFetcher, destination: Path
    ) -> None:
        missing = remote.bare.parent / "missing.git"
        with pytest.raises(CreateServableRequestInvalidError) as refused:
            fetcher.fetch(f"{missing.as_uri()}#v1.x", None, destination)
        assert refused.value.field == "path"
        assert refused.value.message.startswith(
            f"Git repository {missing.as_uri()} not found or unreachable: "
        )
        assert "does not appear to be a git repository" in refused.value.message

    def test_an_unreachable_host_is_refused_without_its_credentials(
        self, fetcher: GitFetcher, destination: Path
    ) -> None:
        with socket.socket() as closed:  # a port nothing listens on
            closed.bind(("127.0.0.1", 0))
            port = closed.getsockname()[1]
        with pytest.raises(CreateServableRequestInvalidError) as refused:
            fetcher.fetch(f"http://me:s3cret@127.0.0.1:{port}/org/p.git#v1.x", None, destination)
        assert refused.value.message.startswith(
            f"Git repository http://***@127.0.0.1:{port}/org/p.git not found or unreachable: "
        )
        assert "s3cret" not in refused.value.message

    def test_a_server_that_never_answers_times_out(self, destination: Path) -> None:
        with socket.socket() as silent:  # accepts connections, never says a word
            silent.bind(("127.0.0.1", 0))
            silent.listen()
            port = silent.getsockname()[1]
            fetcher = GitFetcher(StorageOptions(timeout_s=1))
            with pytest.raises(CreateServableRequestInvalidError) as refused:
                fetcher.fetch(f"http://127.0.0.1:{port}/org/p.git#v1.x", None, destination)
        assert refused.value.message == (
            f"cloning http://127.0.0.1:{port}/org/p.git timed out after 1 s"
        )
        assert list(destination.iterdir()) == []

    def test_without_git_installed_deploys_are_refused(
        self,
        remote: Remote,
        fetcher: GitFetcher,
        destination: Path,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        empty = tmp_path / "empty-bin"
        empty.mkdir()
        monkeypatch.setenv("PATH", str(empty))
        with pytest.raises(CreateServableRequestInvalidError) as refused:
            fetcher.fetch(remote.location(), None, destination)
        assert "git is not installed on the server" in refused.value.message


@pytest.fixture(scope="module")
def lfs_remote(tmp_path_factory: pytest.TempPathFactory) -> Remote:
    """A repository whose model is stored with Git LFS (committed as its pointer file)."""
    root = tmp_path_factory.mktemp("git-lfs")
    work = root / "work"
    (work / "models").mkdir(parents=True)
    git(work, "init", "--quiet", "--initial-branch", "main")
    (work / ".gitattributes").write_text("*.onnx filter=lfs diff=lfs merge=lfs -text\n")
    digest = hashlib.sha256(MODEL.read_bytes()).hexdigest()
    pointer = (
        "version https://git-lfs.github.com/spec/v1\n"
        f"oid sha256:{digest}\nsize {MODEL.stat().st_size}\n"
    )
    (work / "models" / "model.onnx").write_text(pointer)
    (work / "README.md").write_text("model in LFS\n")
    commit_all(work, "model in LFS", "v1.lfs")
    bare = root / "acme" / "lfs-model.git"
    git(root, "clone", "--quiet", "--bare", str(work), str(bare))
    return Remote(bare)


class TestGitLfs:
    def test_lfs_files_without_git_lfs_are_refused_clearly(
        self,
        lfs_remote: Remote,
        fetcher: GitFetcher,
        destination: Path,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        hide_git_lfs(tmp_path, monkeypatch)  # whether or not this machine has git-lfs
        with pytest.raises(CreateServableRequestInvalidError) as refused:
            fetcher.fetch(lfs_remote.location("v1.lfs"), None, destination)
        assert refused.value.field == "path"
        assert refused.value.message == (
            f"{lfs_remote.bare.as_uri()} at v1.lfs stores 1 file(s) with Git LFS "
            "(e.g. models/model.onnx), but git-lfs is not installed on the server; "
            "install git-lfs (https://git-lfs.com) to deploy it"
        )
        assert list(destination.iterdir()) == []

    def test_a_sub_directory_without_lfs_files_needs_no_git_lfs(
        self,
        lfs_remote: Remote,
        fetcher: GitFetcher,
        destination: Path,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        hide_git_lfs(tmp_path, monkeypatch)
        fetcher.fetch(lfs_remote.location("v1.lfs"), "README.md", destination)
        assert tree(destination) == {"README.md": b"model in LFS\n"}


class TestFqrvHint:
    @pytest.mark.parametrize(
        ("location", "expected"),
        [
            ("git@github.com:acme/churn-model.git#v1.x", ("acme", "churn-model", 1, "x")),
            ("https://github.com/acme/churn.git#v1.x", ("acme", "churn", 1, "x")),
            (
                "https://gitlab.example.com/group/acme/churn.git#v12.2024-01-01",
                ("acme", "churn", 12, "2024-01-01"),
            ),
            ("git+https://host/acme/churn#v0.r1", ("acme", "churn", 0, "r1")),
            ("ssh://git@host:2222/acme/churn.git#v2.1.0.3", ("acme", "churn", 2, "1.0.3")),
            (
                "file:///srv/git/samples/energy_output.git#v3.2026-11-28",
                ("samples", "energy_output", 3, "2026-11-28"),
            ),
            (
                "/srv/git/samples/energy_output.git#v3.2026-11-28",
                ("samples", "energy_output", 3, "2026-11-28"),
            ),
        ],
    )
    def test_owner_name_and_version_tag_give_the_fqrv(
        self, fetcher: GitFetcher, location: str, expected: tuple[str, str, int, str]
    ) -> None:
        org, project, number, release = expected
        assert fetcher.fqrv_hint(location) == FQRV(Contract(org, project, number), release)

    @pytest.mark.parametrize(
        "location",
        [
            "git@github.com:acme/churn.git#not-a-version",
            "git@github.com:acme/churn.git#V1.x",
            "git@github.com:acme/churn.git#v1.",
            "git@github.com:acme/churn.git#vx.1",
            "git@github.com:acme/churn.git#v1.bad/release",
            "git@github.com:acme/churn.git",
            "git@github.com:churn.git#v1.x",
            "https://host/churn.git#v1.x",
            "https://host/~me/churn.git#v1.x",
        ],
    )
    def test_no_fqrv_without_a_version_tag_and_valid_names(
        self, fetcher: GitFetcher, location: str
    ) -> None:
        assert fetcher.fqrv_hint(location) is None

    def test_the_local_bare_repository(self, remote: Remote, fetcher: GitFetcher) -> None:
        expected = FQRV(Contract("samples", "energy_output", 3), "2026-11-28")
        assert fetcher.fqrv_hint(remote.location()) == expected
        assert fetcher.fqrv_hint(remote.location("not-a-version")) is None

    @pytest.mark.parametrize(
        "location",
        ["git@host:a/b.git#v1.x", "https://host/a/b.git#v1.x", "git+https://host/a/b#v1.x"],
    )
    def test_git_locations_get_the_git_fetcher(self, location: str) -> None:
        assert isinstance(fetcher_for(location, StorageOptions()), GitFetcher)
