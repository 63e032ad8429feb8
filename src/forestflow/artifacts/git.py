"""The Git fetcher: a tagged revision of a repository, Git LFS files included.

Locations: `git@host:org/project.git#<tag>`, `https://host/org/project.git#<tag>`,
`ssh://…`, `file:///path/org/project.git#<tag>`, a plain path ending in `.git#<tag>`, and
any of these behind a `git+` prefix. The tag is required: it pins what is deployed, and a
tag of the form `v<contract_number>.<release_version>` also names the servable
(`fqrv_hint`): organization = the repository's owner (the path segment before it),
project = the repository's name without `.git`.

The git command line does the work (`git clone --depth 1 --branch <tag>`), so whatever
credentials git is configured with (credential helpers, SSH agent) apply. git never
prompts: `GIT_TERMINAL_PROMPT=0`, no stdin and no controlling terminal. Git LFS objects
are skipped during the clone and pulled afterwards with `git lfs pull`, only when the
checkout holds LFS pointer files; without git-lfs such a repository is refused.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from forestflow.artifacts.base import ArtifactFetcher
from forestflow.domain.fqrv import FQRV, Contract
from forestflow.errors import CreateServableRequestInvalidError, InvalidField

log = logging.getLogger(__name__)

_VERSION_TAG = re.compile(r"v(\d+)\.(.+)")
_SCP_LIKE = re.compile(r"(?:[^@/:]+@)?[^/:]+:(?!//)(?P<path>.+)")
_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")
# https://github.com/git-lfs/git-lfs/blob/main/docs/spec.md: pointers are < 1024 bytes
_LFS_POINTER_PREFIX = b"version https://git-lfs.github.com/spec/v1"
# The LFS filter for the one `git lfs pull` call: without it (no `git lfs install` ever run
# for the server's user) git-lfs downloads the objects but leaves the pointers checked out.
_LFS_FILTER = (
    "-c",
    "filter.lfs.clean=git-lfs clean -- %f",
    "-c",
    "filter.lfs.smudge=git-lfs smudge -- %f",
    "-c",
    "filter.lfs.process=git-lfs filter-process",
    "-c",
    "filter.lfs.required=true",
)
_LFS_POINTER_MAX_BYTES = 1024
_GIT_BOILERPLATE = (
    "Please make sure you have the correct access rights",
    "and the repository exists",
)


@dataclass(frozen=True, slots=True)
class GitLocation:
    """A parsed Git location: what `git clone` gets, the tag, and the repository's path."""

    url: str
    tag: str | None
    repository_path: str

    @classmethod
    def parse(cls, location: str) -> GitLocation:
        """Split `location` into clone URL, tag (after `#`) and repository path."""
        base, _, tag = location.partition("#")
        base = base.removeprefix("git+")
        if "://" in base:
            return cls(base, tag or None, unquote(urlsplit(base).path))
        scp_like = _SCP_LIKE.fullmatch(base)
        if scp_like and not Path(base).exists():
            return cls(base, tag or None, scp_like["path"])
        # a plain path: as a file:// URL, since git ignores --depth for local paths
        return cls(Path(base).absolute().as_uri(), tag or None, base)

    @property
    def owner_and_name(self) -> tuple[str, str] | None:
        """The repository's owner (its parent path segment) and name without `.git`."""
        segments = [segment for segment in self.repository_path.split("/") if segment]
        if len(segments) < 2:
            return None
        return segments[-2], segments[-1].removesuffix(".git")

    @property
    def display_url(self) -> str:
        """The clone URL without any credentials it carries, for messages and logs."""
        return _CREDENTIALS.sub("***@", self.url)


class GitFetcher(ArtifactFetcher):
    """A tagged revision of a Git repository (its working tree, without `.git`)."""

    def fqrv_hint(self, location: str) -> FQRV | None:
        """The FQRV a `v<contract_number>.<release_version>` tag names; None for other tags."""
        parsed = GitLocation.parse(location)
        owner_and_name = parsed.owner_and_name
        version = _VERSION_TAG.fullmatch(parsed.tag or "")
        if owner_and_name is None or version is None:
            return None
        try:
            contract = Contract(owner_and_name[0], owner_and_name[1], int(version[1]))
            return FQRV(contract, version[2])
        except InvalidField as error:
            log.info("%s names no valid FQRV: %s", parsed.display_url, error.describe())
            return None

    def fetch(self, location: str, artifact_path: str | None, destination: Path) -> None:
        """Clone the tagged revision into `destination` and keep its (sub-)tree there."""
        parsed = GitLocation.parse(location)
        if parsed.tag is None:
            raise CreateServableRequestInvalidError(
                f"a Git location needs a tag: {parsed.display_url}#<tag>, "
                "e.g. #v1.2024-06-01 for contract 1, release 2024-06-01",
                field="path",
            )
        if shutil.which("git") is None:
            raise CreateServableRequestInvalidError(
                "git is not installed on the server: cannot deploy from a Git repository",
                field="path",
            )
        # the checkout lives inside `destination`: the cache owns that directory alone
        checkout = Path(tempfile.mkdtemp(prefix=".checkout-", dir=destination))
        try:
            self._clone(parsed, checkout)
            source = _selected(checkout, artifact_path)
            self._pull_lfs_objects(parsed, checkout, source, artifact_path)
            shutil.rmtree(checkout / ".git")
            _move_content(source, destination)
        finally:
            shutil.rmtree(checkout, ignore_errors=True)
        log.info("checked out %s at %s into the cache", parsed.display_url, parsed.tag)

    def _clone(self, parsed: GitLocation, checkout: Path) -> None:
        tag = parsed.tag or ""
        options = ["-c", "advice.detachedHead=false", "-c", "protocol.ext.allow=never"]
        shallow = ["--quiet", "--depth", "1", "--branch", tag, "--single-branch"]
        result = self._git(
            [*options, "clone", *shallow, "--", parsed.url, str(checkout)],
            what=f"cloning {parsed.display_url}",
        )
        if result.returncode == 0:
            return
        detail = _git_error(result.stderr)
        if "not found in upstream" in detail:
            message = f"tag '{tag}' not found in Git repository {parsed.display_url}"
        else:
            message = f"Git repository {parsed.display_url} not found or unreachable: {detail}"
        raise CreateServableRequestInvalidError(message, field="path")

    def _pull_lfs_objects(
        self, parsed: GitLocation, checkout: Path, source: Path, artifact_path: str | None
    ) -> None:
        pointers = _lfs_pointers(source)
        if not pointers:
            return
        example = pointers[0].relative_to(checkout)
        if self._git(["lfs", "version"], what="checking for git-lfs").returncode != 0:
            raise CreateServableRequestInvalidError(
                f"{parsed.display_url} at {parsed.tag} stores {len(pointers)} file(s) with "
                f"Git LFS (e.g. {example}), but git-lfs is not installed on the server; "
                "install git-lfs (https://git-lfs.com) to deploy it",
                field="path",
            )
        pull = [*_LFS_FILTER, "lfs", "pull"]
        if artifact_path:
            pull += ["--include", f"{artifact_path.strip('/')}/**,{artifact_path.strip('/')}"]
        result = self._git(pull, what="pulling Git LFS objects", cwd=checkout, lfs=True)
        if result.returncode != 0 or _lfs_pointers(source):
            raise CreateServableRequestInvalidError(
                f"could not download the Git LFS files of {parsed.display_url} at "
                f"{parsed.tag} (e.g. {example}): "
                f"{_git_error(result.stderr or result.stdout)}",
                field="path",
            )

    def _git(
        self, args: list[str], *, what: str, cwd: Path | None = None, lfs: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run git without a shell, a terminal or stdin; kill its process group on timeout."""
        # the server's environment is passed through on purpose: credential helpers,
        # SSH agents and proxies configured for git must keep working
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
        if not lfs:
            env["GIT_LFS_SKIP_SMUDGE"] = "1"
        process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            ["git", *args],  # noqa: S607 - git from PATH, like the rest of the toolchain
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # no controlling terminal: ssh cannot prompt either
        )
        try:
            stdout, stderr = process.communicate(timeout=self.options.timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # git's helpers (ssh, remote-https) too
            process.communicate()
            raise CreateServableRequestInvalidError(
                f"{what} timed out after {self.options.timeout_s:g} s", field="path"
            ) from None
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _selected(checkout: Path, artifact_path: str | None) -> Path:
    """The checkout, or its `artifact_path` sub-directory or file (which must stay inside)."""
    if not artifact_path:
        return checkout
    root = checkout.resolve()
    source = (root / artifact_path).resolve()
    inside = source == root or root in source.parents
    if not inside or source == root / ".git" or root / ".git" in source.parents:
        raise CreateServableRequestInvalidError(
            f"{artifact_path!r} points outside the repository's working tree", field="artifactPath"
        )
    if not source.exists():
        raise CreateServableRequestInvalidError(
            f"{artifact_path!r} does not exist in the repository", field="artifactPath"
        )
    return source


def _lfs_pointers(source: Path) -> list[Path]:
    """The Git LFS pointer files under `source` (or `source` itself), sorted."""
    files = [source] if source.is_file() else sorted(source.rglob("*"))
    pointers = []
    for path in files:
        if ".git" in path.relative_to(source).parts or path.is_symlink() or not path.is_file():
            continue
        if path.stat().st_size < _LFS_POINTER_MAX_BYTES:
            with path.open("rb") as file:
                if file.read(len(_LFS_POINTER_PREFIX)) == _LFS_POINTER_PREFIX:
                    pointers.append(path)
    return pointers


def _move_content(source: Path, destination: Path) -> None:
    """Move a directory's entries (or a single file) into `destination`."""
    entries = sorted(source.iterdir()) if source.is_dir() else [source]
    for entry in entries:
        shutil.move(entry, destination / entry.name)


def _git_error(stderr: str) -> str:
    """git's own explanation, without its prefixes and its generic access-rights hint."""
    lines = [line.strip() for line in stderr.splitlines()]
    reasons = [
        line.removeprefix("fatal:").removeprefix("error:").strip()
        for line in lines
        if line and not line.startswith(_GIT_BOILERPLATE)
    ]
    return _CREDENTIALS.sub("***@", "; ".join(reasons))[:500] or "no output from git"
