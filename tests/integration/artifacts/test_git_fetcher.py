"""GitFetcher against real repositories: bare repos built by the tests, cloned over file://."""

from __future__ import annotations

import hashlib
import ipaddress
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from forestflow.artifacts.base import StorageOptions, fetcher_for
from forestflow.artifacts.git import GitFetcher
from forestflow.artifacts.hosts import HostCheck, IPAddress, is_non_public
from forestflow.domain.fqrv import FQRV, Contract
from forestflow.errors import ArtifactTooLarge, CreateServableRequestInvalidError
from tests.git_commands import GIT_ENV, git
from tests.integration.artifacts.conftest import GitDaemon, TrustingOptions, tree
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
def fetcher(trusting: TrustingOptions) -> GitFetcher:
    return GitFetcher(trusting(timeout_s=30))


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
        assert refused.value.message == (
            f"could not fetch http://***@127.0.0.1:{port}/org/p.git: connection failed"
        )
        assert "s3cret" not in refused.value.message

    def test_a_server_that_never_answers_times_out(
        self, destination: Path, trusting: TrustingOptions
    ) -> None:
        with socket.socket() as silent:  # accepts connections, never says a word
            silent.bind(("127.0.0.1", 0))
            silent.listen()
            port = silent.getsockname()[1]
            fetcher = GitFetcher(trusting(timeout_s=1))
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


def repository_with_links(root: Path, links: dict[str, str]) -> Remote:
    """A bare repository tagged `v1.links`: model.onnx plus the symbolic links `links`."""
    work = root / "work"
    work.mkdir(parents=True)
    git(work, "init", "--quiet", "--initial-branch", "main")
    shutil.copy(MODEL, work / "model.onnx")
    for name, target in links.items():
        (work / name).symlink_to(target)
    commit_all(work, "links", "v1.links")
    bare = root / "acme" / "links.git"
    git(root, "clone", "--quiet", "--bare", str(work), str(bare))
    return Remote(bare)


PRIVATE = "the host resolves to a private or loopback address (setting storage.allow_private_hosts)"


class TestWhereRepositoriesMayBe:
    def test_a_local_repository_outside_the_roots_is_refused(
        self, remote: Remote, tmp_path: Path, destination: Path
    ) -> None:
        fetcher = GitFetcher(StorageOptions(local_roots=(tmp_path / "elsewhere",)))
        for location in (remote.location(), f"{remote.bare}#{RELEASE_TAG}"):
            with pytest.raises(CreateServableRequestInvalidError) as refused:
                fetcher.fetch(location, None, destination)
            assert refused.value.message == (
                f"'{remote.bare}' is not under an allowed local root (setting storage.local_roots)"
            )
        assert list(destination.iterdir()) == []

    @pytest.mark.parametrize(
        ("location", "shown"),
        [
            ("https://127.0.0.1/org/p.git#v1.x", "https://127.0.0.1/org/p.git"),
            ("http://me:pw@localhost:8080/org/p.git#v1.x", "http://***@localhost:8080/org/p.git"),
            ("git://[::1]/org/p.git#v1.x", "git://[::1]/org/p.git"),
            ("ssh://git@127.0.0.2:2222/org/p.git#v1.x", "ssh://***@127.0.0.2:2222/org/p.git"),
            ("git@localhost:org/p.git#v1.x", "git@localhost:org/p.git"),
        ],
    )
    def test_a_private_host_is_refused_before_git_runs(
        self, destination: Path, location: str, shown: str
    ) -> None:
        with pytest.raises(CreateServableRequestInvalidError) as refused:
            GitFetcher(StorageOptions()).fetch(location, None, destination)
        assert refused.value.message == f"could not fetch {shown}: {PRIVATE}"
        assert list(destination.iterdir()) == []

    def test_a_link_leaving_the_repository_is_refused(
        self, tmp_path: Path, destination: Path, trusting: TrustingOptions
    ) -> None:
        linked = repository_with_links(tmp_path, {"passwd": "/etc/passwd"})
        with pytest.raises(CreateServableRequestInvalidError) as refused:
            GitFetcher(trusting()).fetch(linked.location("v1.links"), None, destination)
        assert refused.value.message == (
            f"{linked.bare.as_uri()} at v1.links: 'passwd' is a symlink to a place outside "
            "the artifact; refusing to copy it"
        )

    def test_a_link_inside_is_copied_as_its_file(
        self, tmp_path: Path, destination: Path, trusting: TrustingOptions
    ) -> None:
        linked = repository_with_links(tmp_path, {"alias.onnx": "model.onnx"})
        GitFetcher(trusting()).fetch(linked.location("v1.links"), None, destination)
        assert tree(destination) == {
            "model.onnx": MODEL.read_bytes(),
            "alias.onnx": MODEL.read_bytes(),
        }
        assert not (destination / "alias.onnx").is_symlink()


class TestGitBounds:
    def test_a_checkout_over_the_size_limit_is_refused(
        self, remote: Remote, destination: Path, trusting: TrustingOptions
    ) -> None:
        with pytest.raises(ArtifactTooLarge) as refused:
            GitFetcher(trusting(max_artifact_bytes=1000)).fetch(
                remote.location(), None, destination
            )
        assert refused.value.status == 413
        assert list(destination.iterdir()) == []

    def test_the_fetch_deadline_ends_a_silent_server(
        self, destination: Path, trusting: TrustingOptions
    ) -> None:
        with socket.socket() as silent:  # accepts connections, never says a word
            silent.bind(("127.0.0.1", 0))
            silent.listen()
            port = silent.getsockname()[1]
            fetcher = GitFetcher(trusting(timeout_s=60, fetch_deadline_s=1))
            with pytest.raises(CreateServableRequestInvalidError) as refused:
                fetcher.fetch(f"http://127.0.0.1:{port}/org/p.git#v1.x", None, destination)
        assert refused.value.message == (
            f"could not fetch http://127.0.0.1:{port}/org/p.git#v1.x: took longer than "
            "storage.fetch_deadline_s (1 s)"
        )
        assert list(destination.iterdir()) == []


def loopback_1_is_public(address: IPAddress) -> bool:
    """`is_non_public`, except that 127.0.0.1 passes: the local git daemon plays a public
    host, and any other loopback address a private one."""
    return address != ipaddress.ip_address("127.0.0.1") and is_non_public(address)


@pytest.fixture(scope="module")
def daemon(remote: Remote, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitDaemon]:
    """`git daemon` serving the directory that holds `remote` (as `samples/…`)."""
    served = GitDaemon(remote.bare.parents[1], tmp_path_factory.mktemp("daemon") / "log")
    yield served
    served.stop()


class TestRemoteRepositories:
    """Over git:// from a real `git daemon`, with the host check on (127.0.0.1 plays public)."""

    def fetcher(self, **overrides: float) -> GitFetcher:
        options = StorageOptions(**{"timeout_s": 30, **overrides})  # type: ignore[arg-type]
        return GitFetcher(options, hosts=HostCheck(forbidden=loopback_1_is_public))

    def test_a_public_remote_is_cloned(
        self, remote: Remote, daemon: GitDaemon, destination: Path
    ) -> None:
        self.fetcher().fetch(daemon.url(remote.bare, RELEASE_TAG), None, destination)
        assert tree(destination) == {
            "README.md": b"release 3\n",
            "model.onnx": MODEL.read_bytes(),
            "nested/energy_output/model.onnx": MODEL.read_bytes(),
        }

    def test_an_unknown_repository_says_so_without_git_s_text(
        self, remote: Remote, daemon: GitDaemon, destination: Path
    ) -> None:
        location = daemon.url(remote.bare.parents[1] / "samples" / "missing.git", "v1.x")
        with pytest.raises(CreateServableRequestInvalidError) as refused:
            self.fetcher().fetch(location, None, destination)
        shown = location.split("#", 1)[0]
        assert refused.value.message == f"could not fetch {shown}: repository not found"

    def test_a_remote_checkout_over_the_size_limit_is_refused(
        self, remote: Remote, daemon: GitDaemon, destination: Path
    ) -> None:
        location = daemon.url(remote.bare, RELEASE_TAG)
        with pytest.raises(ArtifactTooLarge):
            self.fetcher(max_artifact_bytes=1000).fetch(location, None, destination)
        assert list(destination.iterdir()) == []

    def test_git_connects_to_the_address_that_was_checked(self, destination: Path) -> None:
        # "models.example.test" resolves, for the check only, to 127.0.0.1; git can reach
        # the silent server under that name only through the pinned address, and then
        # waits on it until the fetch deadline
        def resolver(host: str, port: int) -> list[IPAddress]:
            return [ipaddress.ip_address("127.0.0.1")]

        hosts = HostCheck(resolver=resolver, forbidden=loopback_1_is_public)
        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen()
            port = silent.getsockname()[1]
            fetcher = GitFetcher(StorageOptions(timeout_s=60, fetch_deadline_s=1), hosts=hosts)
            location = f"http://models.example.test:{port}/org/p.git#v1.x"
            with pytest.raises(CreateServableRequestInvalidError) as refused:
                fetcher.fetch(location, None, destination)
        assert "took longer than storage.fetch_deadline_s (1 s)" in refused.value.message
