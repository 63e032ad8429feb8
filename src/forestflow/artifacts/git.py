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

Where a repository may be: a `file://` URL or a plain path must be under
`storage.local_roots`, as for local files. A remote host (https, http, git, ssh) must
pass `hosts.HostCheck` before git runs — every address its name resolves to is public,
unless `storage.allow_private_hosts` — and so must the Git LFS endpoint the repository
configures. git then connects to the addresses checked (`http.curloptResolve`) and
follows no redirect. (An ssh host name that does not resolve is left to ssh, whose own
configuration may define it. The object URLs an LFS server answers with are not checked.)

git runs within the fetch's budget (`processes.run_bounded`): the checkout's working tree
and its `.git` directory may each hold at most `storage.max_artifact_bytes`, and the disk's
free space and the fetch's deadline are watched while it runs. Errors of a remote
repository say what happened in general words (not found, authentication failed, an HTTP
status, connection failed); git's own text, which may name addresses and ports, goes to
the server's log only.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from forestflow.artifacts.base import ArtifactFetcher, StorageOptions
from forestflow.artifacts.budget import FetchBudget
from forestflow.artifacts.hosts import HostCheck, IPAddress
from forestflow.artifacts.local import allowed_local_path
from forestflow.artifacts.processes import run_bounded
from forestflow.artifacts.trees import TreeCopy, tree_bytes
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
_DEFAULT_PORTS = {"http": 80, "https": 443, "ssh": 22, "git": 9418, "ftp": 21, "ftps": 990}
_AUTH_FAILURES = (
    "authentication failed",
    "could not read username",
    "could not read password",
    "permission denied (publickey",
    "host key verification failed",
)
_NOT_FOUND = (
    "repository not found",
    "does not appear to be a git repository",
    "not exported",
    "no such repository",
)
_LFS_ENDPOINT = re.compile(r"^(?:Endpoint|Endpoint \(\w+\))=(\S+)", re.MULTILINE)


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

    @property
    def is_local(self) -> bool:
        """Whether the repository is on this machine (a `file://` URL)."""
        return urlsplit(self.url).scheme.lower() == "file"

    def host_and_port(self) -> tuple[str, int, str] | None:
        """The remote's host, port and scheme; None for a local repository."""
        if "://" not in self.url:  # scp-like: [user@]host:path, over ssh
            host = self.url.split(":", 1)[0].rsplit("@", 1)[-1]
            return host.strip("[]"), 22, "ssh"
        parts = urlsplit(self.url)
        scheme = parts.scheme.lower()
        if scheme == "file":
            return None
        return parts.hostname or "", parts.port or _DEFAULT_PORTS.get(scheme, 0), scheme


class GitFetcher(ArtifactFetcher):
    """A tagged revision of a Git repository (its working tree, without `.git`)."""

    def __init__(self, options: StorageOptions, hosts: HostCheck | None = None) -> None:
        super().__init__(options)
        self.hosts = hosts or HostCheck(allow_private=options.allow_private_hosts)

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

    def fetch_within(
        self, location: str, artifact_path: str | None, destination: Path, budget: FetchBudget
    ) -> None:
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
        pinned = self._check_where(parsed)
        # the checkout lives inside `destination`: the cache owns that directory alone
        checkout = Path(tempfile.mkdtemp(prefix=".checkout-", dir=destination))
        run = _Runner(self.options.timeout_s, budget, checkout)
        try:
            self._clone(parsed, checkout, run, pinned)
            source = _selected(checkout, artifact_path)
            self._pull_lfs_objects(parsed, checkout, source, artifact_path, run)
            shutil.rmtree(checkout / ".git")
            _keep(source, checkout, destination, budget, parsed)
        finally:
            shutil.rmtree(checkout, ignore_errors=True)
        log.info("checked out %s at %s into the cache", parsed.display_url, parsed.tag)

    def _check_where(self, parsed: GitLocation) -> list[str]:
        """Refuse a local repository outside the local roots, or a remote host with a
        non-public address; return git options that pin the addresses checked."""
        remote = parsed.host_and_port()
        if remote is None:
            path = Path(unquote(urlsplit(parsed.url).path))
            if not allowed_local_path(self.options, path):
                raise CreateServableRequestInvalidError(
                    f"'{path}' is not under an allowed local root (setting storage.local_roots)",
                    field="path",
                )
            return []
        host, port, scheme = remote
        # ssh may know the name from its own configuration (a Host alias)
        addresses = self.hosts.check(parsed.display_url, host, port, must_resolve=scheme != "ssh")
        if self.hosts.allow_private:
            return []
        options = ["-c", "http.followRedirects=false"]
        if addresses and scheme in ("http", "https"):
            listed = ",".join(_curl_address(address) for address in addresses)
            options += ["-c", f"http.curloptResolve={host}:{port}:{listed}"]
        return options

    def _clone(self, parsed: GitLocation, checkout: Path, run: _Runner, pinned: list[str]) -> None:
        tag = parsed.tag or ""
        options = ["-c", "advice.detachedHead=false", "-c", "protocol.ext.allow=never", *pinned]
        shallow = ["--quiet", "--depth", "1", "--branch", tag, "--single-branch"]
        result = run(
            [*options, "clone", *shallow, "--", parsed.url, str(checkout)],
            what=f"cloning {parsed.display_url}",
        )
        if result.returncode == 0:
            return
        detail = _git_error(result.stderr)
        log.info("cloning %s failed: %s", parsed.display_url, detail)
        if "not found in upstream" in detail:
            message = f"tag '{tag}' not found in Git repository {parsed.display_url}"
        elif parsed.is_local:
            message = f"Git repository {parsed.display_url} not found or unreachable: {detail}"
        else:
            message = f"could not fetch {parsed.display_url}: {_remote_failure(result.stderr)}"
        raise CreateServableRequestInvalidError(message, field="path")

    def _check_lfs_endpoints(self, parsed: GitLocation, checkout: Path, run: _Runner) -> None:
        """Refuse LFS endpoints (which `.lfsconfig` may set) on non-public hosts."""
        if self.hosts.allow_private or parsed.is_local:
            return
        result = run(["lfs", "env"], what="reading the Git LFS endpoints", cwd=checkout)
        for endpoint in _LFS_ENDPOINT.findall(result.stdout):
            parts = urlsplit(endpoint)
            scheme = parts.scheme.lower()
            if scheme in ("http", "https") and parts.hostname:
                port = parts.port or _DEFAULT_PORTS[scheme]
                self.hosts.check(parsed.display_url, parts.hostname, port)

    def _pull_lfs_objects(
        self,
        parsed: GitLocation,
        checkout: Path,
        source: Path,
        artifact_path: str | None,
        run: _Runner,
    ) -> None:
        pointers = _lfs_pointers(source)
        if not pointers:
            return
        example = pointers[0].relative_to(checkout)
        if run(["lfs", "version"], what="checking for git-lfs").returncode != 0:
            raise CreateServableRequestInvalidError(
                f"{parsed.display_url} at {parsed.tag} stores {len(pointers)} file(s) with "
                f"Git LFS (e.g. {example}), but git-lfs is not installed on the server; "
                "install git-lfs (https://git-lfs.com) to deploy it",
                field="path",
            )
        self._check_lfs_endpoints(parsed, checkout, run)
        pull = [*_LFS_FILTER, "lfs", "pull"]
        if artifact_path:
            pull += ["--include", f"{artifact_path.strip('/')}/**,{artifact_path.strip('/')}"]
        result = run(pull, what="pulling Git LFS objects", cwd=checkout, lfs=True)
        if result.returncode != 0 or _lfs_pointers(source):
            detail = _git_error(result.stderr or result.stdout)
            log.info("pulling the Git LFS files of %s failed: %s", parsed.display_url, detail)
            raise CreateServableRequestInvalidError(
                f"could not download the Git LFS files of {parsed.display_url} at "
                f"{parsed.tag} (e.g. {example})" + (f": {detail}" if parsed.is_local else ""),
                field="path",
            )


@dataclass(frozen=True, slots=True)
class _Runner:
    """Runs git for one fetch: its timeout per command, its budget, its checkout."""

    timeout_s: float
    budget: FetchBudget
    checkout: Path

    def __call__(
        self, args: list[str], *, what: str, cwd: Path | None = None, lfs: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run git without a shell, a terminal or stdin, within the fetch's budget."""
        # the server's environment is passed through on purpose: credential helpers,
        # SSH agents and proxies configured for git must keep working
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
        if not lfs:
            env["GIT_LFS_SKIP_SMUDGE"] = "1"
        try:
            return run_bounded(
                ["git", *args],
                budget=self.budget,
                timeout_s=self.timeout_s,
                measure=self._checkout_bytes,
                env=env,
                cwd=cwd,
            )
        except subprocess.TimeoutExpired:
            raise CreateServableRequestInvalidError(
                f"{what} timed out after {self.timeout_s:g} s", field="path"
            ) from None

    def _checkout_bytes(self) -> int:
        """The larger of the working tree and `.git`: each may hold a whole artifact."""
        return max(tree_bytes(self.checkout, skip=".git"), tree_bytes(self.checkout / ".git"))


def _curl_address(address: IPAddress) -> str:
    return f"[{address}]" if isinstance(address, ipaddress.IPv6Address) else str(address)


def _remote_failure(stderr: str) -> str:
    """What went wrong with a remote repository, in words that name no address or port."""
    lowered = stderr.lower()
    status = re.search(r"returned error: (\d{3})", stderr)
    if any(marker in lowered for marker in _AUTH_FAILURES):
        return "authentication failed (configure git credentials for the server's user)"
    if status is not None:
        return f"HTTP {status[1]}"
    if any(marker in lowered for marker in _NOT_FOUND):
        return "repository not found"
    return "connection failed"


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


def _keep(
    source: Path, checkout: Path, destination: Path, budget: FetchBudget, parsed: GitLocation
) -> None:
    """Put the selected tree (or file) into `destination`: moved, or — when it holds
    symbolic links — copied with every link resolved, so none points outside the
    artifact (links leaving the repository are refused)."""
    links = source.is_dir() and any(path.is_symlink() for path in source.rglob("*"))
    if not links:
        _move_content(source, destination)
        return
    selected = source.relative_to(checkout).parts

    def name_of(relative: tuple[str, ...]) -> str:
        return f"{parsed.display_url} at {parsed.tag}: {'/'.join((*selected, *relative))!r}"

    TreeCopy(budget.stage(), link_root=checkout, name_of=name_of).copy_tree(source, destination)


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
