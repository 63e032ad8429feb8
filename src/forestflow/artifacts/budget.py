"""What one artifact fetch may use: bytes, free disk space and time (`FetchBudget`).

Every fetcher that writes counts its bytes here, so the storage settings bound every
protocol alike:

- `storage.max_artifact_bytes`: what a fetch downloads, and separately what that
  download unpacks to (`stage`), may not exceed it → 413 `ArtifactTooLarge`. A size
  declared up front (a Content-Length, an archive's directory, a file's `lstat`) is refused
  before a byte is written; bytes are counted again as they are written.
- `storage.free_space_reserve_bytes`: the data directory's disk must keep this much free,
  checked before a declared size is written and after every chunk → 507
  `InsufficientStorage`; so is a write that fails with ENOSPC or EDQUOT (`guard`).
- `storage.fetch_deadline_s`: the whole fetch, from its start, checked on every chunk
  → 422 naming `path`.
"""

from __future__ import annotations

import errno
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from forestflow.errors import (
    ArtifactTooLarge,
    CreateServableRequestInvalidError,
    ForestFlowError,
    InsufficientStorage,
)

if TYPE_CHECKING:
    from forestflow.artifacts.base import StorageOptions

CHUNK = 1024 * 1024
"""How much a counted copy reads and writes at a time."""
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


class FetchBudget:
    """The bytes, disk space and time left to one fetch; thread-safe (S3 counts from
    its transfer threads)."""

    def __init__(
        self,
        *,
        max_bytes: int,
        reserve_bytes: int,
        deadline_s: float,
        directory: Path,
        source: str,
        clock: Callable[[], float] = time.monotonic,
        started: float | None = None,
    ) -> None:
        self.max_bytes = max_bytes
        self.reserve_bytes = reserve_bytes
        self.deadline_s = deadline_s
        self.directory = directory
        self.source = source
        self.written = 0
        self._clock = clock
        self._started = clock() if started is None else started
        self._lock = threading.Lock()

    @classmethod
    def start(cls, options: StorageOptions, directory: Path, source: str) -> FetchBudget:
        """The budget of a fetch of `source` into `directory` that starts now."""
        return cls(
            max_bytes=options.max_artifact_bytes,
            reserve_bytes=options.free_space_reserve_bytes,
            deadline_s=options.fetch_deadline_s,
            directory=directory,
            source=source,
        )

    def stage(self) -> FetchBudget:
        """A fresh byte count with the same limits and deadline: what a download unpacks
        to is bounded on its own, not together with the download."""
        return FetchBudget(
            max_bytes=self.max_bytes,
            reserve_bytes=self.reserve_bytes,
            deadline_s=self.deadline_s,
            directory=self.directory,
            source=self.source,
            clock=self._clock,
            started=self._started,
        )

    @property
    def remaining_s(self) -> float:
        """Seconds left before the deadline (0 once it has passed)."""
        return max(0.0, self.deadline_s - (self._clock() - self._started))

    def expect(self, size: int) -> None:
        """Refuse, before writing, `size` more bytes that would not fit (413 or 507)."""
        self.check_size(self.written + size)
        self.check_deadline()
        self.check_free_space(size)

    def add(self, size: int) -> None:
        """Count `size` bytes just written; refuse once over a bound."""
        with self._lock:
            self.written += size
            written = self.written
        self.check_size(written)
        self.check_deadline()
        self.check_free_space()

    def check_size(self, size: int) -> None:
        """413 when `size` bytes are more than the artifact may have."""
        if size > self.max_bytes:
            raise ArtifactTooLarge(self.max_bytes)

    def check_deadline(self) -> None:
        """422 once the fetch has taken longer than its deadline."""
        if self._clock() - self._started > self.deadline_s:
            raise self.deadline_passed()

    def deadline_passed(self) -> CreateServableRequestInvalidError:
        """The 422 of a fetch that took too long."""
        return CreateServableRequestInvalidError(
            f"could not fetch {self.source}: took longer than storage.fetch_deadline_s "
            f"({self.deadline_s:g} s)",
            field="path",
        )

    def check_free_space(self, incoming: int = 0) -> None:
        """507 when writing `incoming` more bytes would leave less than the reserve free."""
        free = self._free_bytes()
        if free is not None and free - incoming < self.reserve_bytes:
            raise self.insufficient_storage(free)

    def insufficient_storage(self, free: int | None = None) -> InsufficientStorage:
        """The 507 of a disk that is (nearly) full."""
        free = self._free_bytes() if free is None else free
        known = "an unknown number of" if free is None else str(free)
        return InsufficientStorage(
            f"not enough free space to fetch {self.source}: the data directory's disk has "
            f"{known} bytes free, and fetches must leave {self.reserve_bytes} bytes free "
            "(setting storage.free_space_reserve_bytes)"
        )

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Turn a write failing because the disk is full (ENOSPC, EDQUOT) into a 507."""
        try:
            yield
        except ForestFlowError:
            raise
        except Exception as error:
            if disk_full(error):
                raise self.insufficient_storage() from None
            raise

    def _free_bytes(self) -> int | None:
        try:
            return shutil.disk_usage(self.directory).free
        except OSError:  # the directory is gone: nothing to measure, nothing to protect
            return None


def disk_full(error: BaseException) -> bool:
    """Whether `error`, or an error it was raised from, says the disk or quota is full."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _DISK_FULL:
            return True
        current = current.__cause__ or current.__context__
    return False
