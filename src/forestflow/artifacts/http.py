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

Every failure is a 422 naming `path` that says what happened: host unreachable, DNS
failure, timeout, an HTTP status other than 2xx, an empty body, a broken archive.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from email.message import Message
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any
from urllib.parse import unquote, urlsplit

from forestflow.artifacts.archives import install_download
from forestflow.artifacts.base import ArtifactFetcher
from forestflow.errors import CreateServableRequestInvalidError

log = logging.getLogger(__name__)

_CHUNK = 1024 * 1024
_DNS_FAILURES = (
    "Name or service not known",
    "nodename nor servname",
    "Temporary failure in name resolution",
    "No address associated with hostname",
    "getaddrinfo failed",
)


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
    """A file or an archive downloaded over HTTP(S), following redirects."""

    def fetch(self, location: str, artifact_path: str | None, destination: Path) -> None:
        """Download `location` into `destination`, extracting it when it is an archive."""
        download = destination / f".forestflow-download-{uuid.uuid4().hex}"
        try:
            try:
                name, content_type = self._download(location, download)
            except CreateServableRequestInvalidError as error:
                # the client sees the message; the URL's user:password must not be in it
                raise CreateServableRequestInvalidError(
                    redact_credentials(error.message), field=error.field
                ) from None
            install_download(
                download,
                name,
                destination,
                artifact_path=artifact_path,
                source=location,
                content_type=content_type,
            )
        finally:
            download.unlink(missing_ok=True)

    def _download(self, location: str, target: Path) -> tuple[str, str | None]:
        """Stream `location` to `target`; return the file's name and its Content-Type."""
        httpx = _httpx()
        timeout = self.options.timeout_s
        log.info("downloading %s", redact_credentials(location))
        try:
            with (
                httpx.Client(timeout=timeout, follow_redirects=True) as client,
                client.stream("GET", location) as response,
            ):
                if not response.is_success:
                    raise _status_error(location, response)
                name = _file_name(location, response)
                size = _save(response, target, location)
        except httpx.HTTPError as error:
            raise _transport_error(httpx, location, error, timeout) from None
        if size == 0:
            raise CreateServableRequestInvalidError(
                f"{location} answered with an empty body", field="path"
            )
        return name, response.headers.get("content-type")


_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


def redact_credentials(text: str) -> str:
    """`text` with the user:password of every URL in it replaced by `***`."""
    return _USERINFO.sub("***@", text)


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


def _save(response: Any, target: Path, location: str) -> int:
    """Write the body to `target` in chunks, logging progress; return its size."""
    length = response.headers.get("content-length")
    progress = DownloadProgress(
        redact_credentials(location), int(length) if length and length.isdigit() else None
    )
    with target.open("wb") as out:
        for chunk in response.iter_bytes(_CHUNK):
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
        f"{location} names a directory, not a file; HTTP(S) locations must name a file "
        "or an archive (.zip, .tar.gz, .tgz, .tar)",
        field="path",
    )


def _status_error(location: str, response: Any) -> CreateServableRequestInvalidError:
    final = str(response.url)
    via = f" (redirected to {final})" if final != location else ""
    return CreateServableRequestInvalidError(
        f"GET {location}{via} answered HTTP {response.status_code} {response.reason_phrase}",
        field="path",
    )


def _transport_error(
    httpx: ModuleType, location: str, error: Exception, timeout: float
) -> CreateServableRequestInvalidError:
    """A 422 saying what went wrong on the way to `location`."""
    if isinstance(error, httpx.TimeoutException):
        message = f"timed out after {timeout:g} s downloading {location} ({type(error).__name__})"
    elif isinstance(error, httpx.ConnectError):
        message = connect_error_message(_host(location), str(error))
    elif isinstance(error, httpx.TooManyRedirects):
        message = f"too many redirects downloading {location}"
    elif isinstance(error, httpx.RemoteProtocolError | httpx.ReadError):
        message = f"the download of {location} was cut off: {error}"
    elif isinstance(error, httpx.InvalidURL | httpx.UnsupportedProtocol):
        message = f"{location} is not a valid HTTP(S) URL: {error}"
    else:
        message = f"downloading {location} failed: {type(error).__name__}: {error}"
    return CreateServableRequestInvalidError(message, field="path")


def _host(location: str) -> str:
    """`host[:port]` of `location`, without any user:password that the URL carries."""
    netloc = urlsplit(location).netloc
    return netloc.rsplit("@", 1)[-1] or location


def connect_error_message(host: str, reason: str) -> str:
    """What a failed connection to `host` means, in words: DNS failure or unreachable."""
    if any(marker in reason for marker in _DNS_FAILURES):
        return f"cannot resolve host {host!r} (DNS lookup failed: {reason})"
    if "refused" in reason.lower():
        return f"cannot connect to {host}: connection refused ({reason})"
    return f"cannot reach host {host}: {reason}"
