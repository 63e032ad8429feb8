"""The HTTP(S) fetcher: a URL of a single file or of an archive (.zip, .tar.gz, .tgz, .tar).

The download streams into a temporary file inside the destination directory (the cache's
private, empty directory that is renamed into place afterwards), so nothing is written
anywhere else. What happens to it is `archives.install_download`'s rule:

- the file name is the `Content-Disposition` filename, else the URL's last path segment
  (of the original URL, then of the final one after redirects);
- a name ending in .zip/.tar.gz/.tgz/.tar — or a name without any suffix whose
  Content-Type is a zip, tar or gzip type — is an archive: it is extracted safely into the
  artifact root. `artifact_path`, when given, selects one sub-directory (or file) of the
  archive, whose content becomes the artifact root: the flavor's `modelPath` is relative
  to it;
- anything else is saved as one file under that name (`artifact_path` is then an error).

Redirects are followed one by one (at most 10), and before each request the host must
pass `hosts.HostCheck`: a name resolving to a private, loopback or other non-public
address is refused unless `storage.allow_private_hosts`, and so is a connection whose peer
turns out to be one. The body is counted as it arrives against the fetch's `FetchBudget`
(size 413, free space 507, deadline 422).

Other failures are a 422 naming `path` that says what happened in general words only
(the name does not resolve, connection failed, timed out, the connection was cut off, an
HTTP status other than 2xx, an empty body, a broken archive): never an address, a port or
the system's error text, which would tell an internal host from a closed port.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from email.message import Message
from http import HTTPStatus
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any
from urllib.parse import unquote, urlsplit

from forestflow.artifacts.archives import install_download
from forestflow.artifacts.base import ArtifactFetcher, StorageOptions, redact_credentials
from forestflow.artifacts.budget import FetchBudget
from forestflow.artifacts.hosts import HostCheck
from forestflow.errors import CreateServableRequestInvalidError

log = logging.getLogger(__name__)

_MAX_REDIRECTS = 10
_DEFAULT_PORTS = {"http": 80, "https": 443}


class DownloadProgress:
    """Logs how far a big download has come: every 10 % of a known size, else every 5 s.

    Thread-safe: boto3 calls `advance` from its transfer threads.
    """

    def __init__(
        self,
        label: str,
        total: int | None,
        *,
        min_bytes: int = 16 * 1024 * 1024,
        interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self._min_bytes = min_bytes
        self._interval_s = interval_s
        self._clock = clock
        self._started = clock()
        self._last_log = self._started
        self._next_tenth = 1
        self._lock = threading.Lock()

    def advance(self, size: int) -> None:
        """Count `size` more bytes and log when a step is reached."""
        with self._lock:
            self.done += size
            now = self._clock()
            if self.total is not None and self.total >= self._min_bytes:
                tenth = self.done * 10 // self.total
                if tenth >= self._next_tenth:
                    self._next_tenth = tenth + 1
                    self._log(now)
            elif self.total is None and now - self._last_log >= self._interval_s:
                self._log(now)

    def finish(self) -> None:
        """Log the end of the download."""
        elapsed = self._clock() - self._started
        log.info("downloaded %s: %d bytes in %.1f s", self.label, self.done, elapsed)

    def _log(self, now: float) -> None:
        self._last_log = now
        if self.total:
            percent = min(100, self.done * 100 // self.total)
            log.info(
                "downloading %s: %d%% (%d of %d bytes)", self.label, percent, self.done, self.total
            )
        else:
            log.info("downloading %s: %d bytes so far", self.label, self.done)


class HttpFetcher(ArtifactFetcher):
    """A file or an archive downloaded over HTTP(S), following redirects to allowed hosts."""

    def __init__(self, options: StorageOptions, hosts: HostCheck | None = None) -> None:
        super().__init__(options)
        self.hosts = hosts or HostCheck(allow_private=options.allow_private_hosts)

    def fetch_within(
        self, location: str, artifact_path: str | None, destination: Path, budget: FetchBudget
    ) -> None:
        """Download `location` into `destination`, extracting it when it is an archive."""
        download = destination / f".forestflow-download-{uuid.uuid4().hex}"
        try:
            name, content_type = self._download(location, download, budget)
            install_download(
                download,
                name,
                destination,
                artifact_path=artifact_path,
                # the client sees the messages; the URL's user:password must not be in them
                source=redact_credentials(location),
                budget=budget,
                content_type=content_type,
            )
        finally:
            download.unlink(missing_ok=True)

    def _download(self, location: str, target: Path, budget: FetchBudget) -> tuple[str, str | None]:
        """Stream `location` to `target`; return the file's name and its Content-Type."""
        httpx = _httpx()
        shown = redact_credentials(location)
        log.info("downloading %s", shown)
        try:
            # identity: a compressed body would be a decompression bomb held in memory
            with httpx.Client(headers={"Accept-Encoding": "identity"}) as client:
                response = self._get(httpx, client, location, budget)
                try:
                    name = _file_name(location, response)
                    size = _save(response, target, shown, budget)
                finally:
                    response.close()
        except httpx.HTTPError as error:
            raise _transport_error(httpx, shown, error, self.options.timeout_s, budget) from None
        if size == 0:
            raise CreateServableRequestInvalidError(
                f"{shown} answered with an empty body", field="path"
            )
        return name, response.headers.get("content-type")

    def _get(self, httpx: ModuleType, client: Any, location: str, budget: FetchBudget) -> Any:
        """The open 2xx response to a GET of `location`, after at most `_MAX_REDIRECTS`
        redirects, each to a host that passes the host check."""
        shown = redact_credentials(location)
        request = client.build_request("GET", location)
        for hop in range(_MAX_REDIRECTS + 1):
            url = request.url
            if url.scheme not in ("http", "https") or not url.host:
                problem = "it redirects to a URL that is not HTTP(S)" if hop else ""
                raise _invalid_url(shown, problem)
            proxied = _proxied(str(url))
            port = url.port or _DEFAULT_PORTS[url.scheme]
            self.hosts.check(shown, url.host, port, must_resolve=not proxied)
            budget.check_deadline()
            timeout = max(0.001, min(self.options.timeout_s, budget.remaining_s))
            request.extensions = {**request.extensions, "timeout": httpx.Timeout(timeout).as_dict()}
            response = client.send(request, stream=True)
            try:
                if not proxied:  # through a proxy, the peer is the proxy
                    self._check_peer(response, shown)
                if response.next_request is None:
                    if not response.is_success:
                        raise _status_error(shown, response)
                    return response
                request = response.next_request
            except BaseException:
                response.close()
                raise
            response.close()
        raise CreateServableRequestInvalidError(
            f"could not fetch {shown}: more than {_MAX_REDIRECTS} redirects", field="path"
        )

    def _check_peer(self, response: Any, shown: str) -> None:
        """Refuse a response from a forbidden address (a name that resolved differently
        for the connection than for the check)."""
        stream = response.extensions.get("network_stream")
        peer = stream.get_extra_info("server_addr") if stream is not None else None
        if isinstance(peer, tuple) and peer:
            self.hosts.check_peer(shown, str(peer[0]))


def _httpx() -> ModuleType:
    try:
        import httpx  # noqa: PLC0415 - optional dependency, imported on first use
    except ImportError:
        raise CreateServableRequestInvalidError(
            "HTTP(S) locations need the 'httpx' package, which is not installed; "
            "install it with: pip install 'forestflow[http]'",
            field="path",
        ) from None
    return httpx


def _proxied(url: str) -> bool:
    """Whether the environment sends requests for `url` through a proxy (as httpx does)."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    if not (proxies.get(parts.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(parts.hostname or "")


def _save(response: Any, target: Path, shown: str, budget: FetchBudget) -> int:
    """Write the body to `target` as it arrives, counting and logging; return its size.

    A Content-Length over the limit is refused before a byte is read. Every chunk is
    counted before it is written and checks the deadline, so neither an endless body
    nor a server that trickles it slowly can hold the fetch beyond its bounds.
    """
    length = response.headers.get("content-length")
    declared = int(length) if length and length.isdigit() else None
    if declared is not None:
        budget.expect(declared)
    progress = DownloadProgress(shown, declared)
    with target.open("wb") as out:
        for chunk in response.iter_bytes():
            budget.add(len(chunk))
            out.write(chunk)
            progress.advance(len(chunk))
    progress.finish()
    return progress.done


def _file_name(location: str, response: Any) -> str:
    """The download's name: Content-Disposition, else the URL's last path segment."""
    disposition = response.headers.get("content-disposition")
    if disposition:
        message = Message()
        message["content-disposition"] = disposition
        filename = message.get_filename()
        if filename:  # a bare name only: the header must not choose a directory
            return PurePosixPath(filename.replace("\\", "/")).name
    for url in (location, str(response.url)):
        path = unquote(urlsplit(url).path)
        if path and not path.endswith("/"):
            return PurePosixPath(path).name
    raise CreateServableRequestInvalidError(
        f"{redact_credentials(location)} names a directory, not a file; HTTP(S) locations "
        "must name a file or an archive (.zip, .tar.gz, .tgz, .tar)",
        field="path",
    )


def _status_error(shown: str, response: Any) -> CreateServableRequestInvalidError:
    final = redact_credentials(str(response.url))
    via = f" (redirected to {final})" if final != shown else ""
    code = response.status_code
    phrase = HTTPStatus(code).phrase if code in HTTPStatus._value2member_map_ else ""
    return CreateServableRequestInvalidError(
        f"could not fetch {shown}{via}: HTTP {code} {phrase}".rstrip(), field="path"
    )


def _invalid_url(shown: str, problem: str) -> CreateServableRequestInvalidError:
    if problem:
        return CreateServableRequestInvalidError(
            f"could not fetch {shown}: {problem}", field="path"
        )
    return CreateServableRequestInvalidError(f"{shown} is not a valid HTTP(S) URL", field="path")


def _transport_error(
    httpx: ModuleType, shown: str, error: Exception, timeout: float, budget: FetchBudget
) -> CreateServableRequestInvalidError:
    """A 422 saying, in general words only, what went wrong on the way to `shown`.

    The client learns neither the address nor the port nor the system's error text: those
    would tell an internal host from a closed port. The server's log has the details.
    """
    log.info("fetching %s failed: %s: %s", shown, type(error).__name__, error)
    if isinstance(error, httpx.TimeoutException):
        if budget.remaining_s <= 0:
            return budget.deadline_passed()
        reason = f"timed out (storage.timeout_s = {timeout:g} s)"
    elif isinstance(error, httpx.InvalidURL | httpx.UnsupportedProtocol):
        return _invalid_url(shown, "")
    elif isinstance(error, httpx.RemoteProtocolError | httpx.ReadError):
        reason = "the connection was cut off"
    elif isinstance(error, httpx.TransportError):
        reason = "connection failed"
    else:
        reason = "the request failed"
    return CreateServableRequestInvalidError(f"could not fetch {shown}: {reason}", field="path")
