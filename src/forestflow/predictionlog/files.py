"""`FileSink`: prediction events as rotating JSON Lines files (SPEC §5, the embedded default).

One event is one line holding `event_record(event)` (docs/prediction-log.md): the bytes of
`encode_record`, which the emitter makes once for every sink (`write_encoded`), plus a
newline. `emit` and `write_encoded` only append to a bounded in-memory buffer; a background
thread writes, so scoring never waits on the disk. The thread writes whole lines only and
hands each drained batch to the OS before taking the next, so a reader (pandas, duckdb) sees
complete lines in every file, the active one included. A full buffer, an unencodable event
or a disk error drops events and counts them in `stats().dropped`; none of them ever raises
into the serving path.

Files are named `predictions-<UTC yyyymmddThhmmss.mmm>Z-<seq>.jsonl`, so sorting the names
sorts them in time. A new file starts when the current one would grow past
`max_file_bytes` (a single line bigger than that gets a file of its own) or is older than
`max_file_age_s` by the sink's clock. With `max_files` set, the oldest files beyond that
count are deleted when a new file starts.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from forestflow.clock import Clock, SystemClock
from forestflow.predictionlog.events import EncodedEvent, PredictionEvent, encode_record
from forestflow.predictionlog.sinks import PredictionSink, SinkStats

log = logging.getLogger(__name__)

FILE_PREFIX = "predictions-"
FILE_SUFFIX = ".jsonl"
DEFAULT_MAX_FILE_BYTES = 64 * 1024 * 1024
DEFAULT_CLOSE_TIMEOUT_S = 5.0


def file_name(opened_at_ms: int, seq: int) -> str:
    """The name of a file opened at `opened_at_ms` (epoch ms); names sort chronologically."""
    stamp = datetime.fromtimestamp(opened_at_ms // 1000, tz=UTC).strftime("%Y%m%dT%H%M%S")
    return f"{FILE_PREFIX}{stamp}.{opened_at_ms % 1000:03d}Z-{seq:06d}{FILE_SUFFIX}"


class _ActiveFile:
    """The file being appended to, owned by the writer thread."""

    def __init__(self, path: Path, opened_at_ms: int) -> None:
        self.path = path
        self.opened_at_ms = opened_at_ms
        # unbuffered: each write goes straight to the OS, so no partial line lingers in a buffer
        self.handle: BinaryIO = path.open("ab", buffering=0)
        self.size = self.handle.seek(0, 2)

    def append(self, chunk: bytes) -> None:
        """Write `chunk` (whole lines) fully; on error cut the file back to whole lines."""
        start = self.size
        view = memoryview(chunk)
        try:
            while view:
                written = self.handle.write(view) or 0
                view = view[written:]
        except OSError:
            self._truncate(start)
            raise
        self.size = start + len(chunk)

    def _truncate(self, size: int) -> None:
        try:
            self.handle.truncate(size)
        except OSError:
            log.warning("could not cut %s back to whole lines", self.path)

    def close(self) -> None:
        """Close the handle, ignoring errors (the data is already with the OS)."""
        try:
            self.handle.close()
        except OSError:
            log.warning("closing %s failed", self.path, exc_info=True)


class FileSink(PredictionSink):
    """Writes prediction events to rotating JSON Lines files in `directory`."""

    takes_encoded = True

    def __init__(
        self,
        directory: Path,
        *,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        max_file_age_s: float = 3600.0,
        buffer_size: int = 10_000,
        max_files: int | None = None,
        clock: Clock | None = None,
    ) -> None:
        if max_file_bytes < 1 or max_file_age_s <= 0 or buffer_size < 1:
            raise ValueError("max_file_bytes, max_file_age_s and buffer_size must be positive")
        if max_files is not None and max_files < 1:
            raise ValueError("max_files must be at least 1")
        self.directory = Path(directory)
        self.max_file_bytes = max_file_bytes
        self.max_file_age_ms = max_file_age_s * 1000
        self.buffer_size = buffer_size
        self.max_files = max_files
        self._clock: Clock = clock or SystemClock()
        # one lock guards the buffer, the counters and the lifecycle flags; it is never
        # held during I/O, so `emit` waits at most for a deque swap. The buffer holds
        # encoded records (from the emitter) and events (`emit`, encoded by the writer).
        self._lock = threading.Condition()
        self._pending: collections.deque[bytes | PredictionEvent] = collections.deque()
        self._emitted = self._written = self._dropped = 0
        self._closed = self._abandoned = False
        self._thread: threading.Thread | None = None
        # writer-thread state
        self._file: _ActiveFile | None = None
        self._seq = 0
        self._failing = False
        self._warned_encoding = False

    def emit(self, event: PredictionEvent) -> None:
        """Buffer `event` for the writer; drop and count it if the buffer is full or closed."""
        with self._lock:
            self._emitted += 1
            if self._closed or len(self._pending) >= self.buffer_size:
                self._dropped += 1
                return
            self._pending.append(event)
            self._lock.notify()

    def write_encoded(self, records: Sequence[EncodedEvent]) -> None:
        """Buffer encoded events for the writer; drop and count those that do not fit."""
        with self._lock:
            self._emitted += len(records)
            room = 0 if self._closed else max(0, self.buffer_size - len(self._pending))
            kept = records[:room]
            self._dropped += len(records) - len(kept)
            if kept:
                self._pending.extend(record.value for record in kept)
                self._lock.notify()

    def count_dropped(self, count: int) -> None:
        """Count events dropped on their way to this sink (emitted and dropped)."""
        with self._lock:
            self._emitted += count
            self._dropped += count

    def stats(self) -> SinkStats:
        """Events emitted, written to a file, and dropped, since construction."""
        with self._lock:
            return SinkStats(emitted=self._emitted, written=self._written, dropped=self._dropped)

    async def start(self) -> None:
        """Start the writer thread; events emitted before this wait in the buffer."""
        with self._lock:
            if self._thread is not None or self._closed:
                return
            self._thread = threading.Thread(
                target=self._run, name=f"forestflow-file-sink:{self.directory}", daemon=True
            )
            self._thread.start()

    async def close(self, timeout_s: float = DEFAULT_CLOSE_TIMEOUT_S) -> None:
        """Write what is buffered within `timeout_s`, then stop; the rest is dropped.

        Idempotent. Events emitted afterwards are dropped and counted; a sink that was never
        started drops its buffer here.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._lock.notify_all()
            thread = self._thread
        if thread is not None:
            await asyncio.to_thread(thread.join, timeout_s)
        with self._lock:
            # the writer finishes at most the batch it holds, then stops
            self._abandoned = True
            self._dropped += len(self._pending)
            self._pending.clear()
        if thread is not None and thread.is_alive():
            log.warning(
                "prediction files in %s: writer still busy after %.1f s; "
                "the buffered events were dropped",
                self.directory,
                timeout_s,
            )

    # --- the writer thread ----------------------------------------------------------

    def _run(self) -> None:
        try:
            while (batch := self._next_batch()) is not None:
                try:
                    self._write_batch(batch)
                except Exception:  # unexpected (a bug): the writer must outlive one bad batch
                    log.exception("prediction files in %s: batch lost", self.directory)
                    self._count(dropped=len(batch))
                    self._drop_file()
        finally:
            self._drop_file()

    def _next_batch(self) -> list[bytes | PredictionEvent] | None:
        """Wait for events and take them all; None once closed and drained (or abandoned)."""
        with self._lock:
            while not self._pending and not self._closed:
                self._lock.wait()
            if self._abandoned or not self._pending:
                return None
            batch = list(self._pending)
            self._pending.clear()
            return batch

    def _write_batch(self, batch: list[bytes | PredictionEvent]) -> None:
        records = self._records(batch)
        self._rotate_if_old()
        chunk: list[bytes] = []
        size = self._file.size if self._file is not None else 0
        for record in records:
            line_size = len(record) + 1  # and its newline
            # rotate before a line that would not fit; a line bigger than a whole file
            # still gets written, alone in its file
            if size and size + line_size > self.max_file_bytes:
                self._write_chunk(chunk)
                self._drop_file()
                chunk, size = [], 0
            chunk.append(record)
            size += line_size
        self._write_chunk(chunk)

    def _write_chunk(self, chunk: list[bytes]) -> None:
        """Append the records of `chunk` as lines: each followed by a newline."""
        if not chunk:
            return
        try:
            self._append(b"\n".join(chunk) + b"\n")
        except Exception as error:  # disk errors mostly; nothing here may kill the writer
            self._report_failure(error)
            self._drop_file()
            self._count(dropped=len(chunk))
        else:
            self._report_recovery()
            self._count(written=len(chunk))

    def _records(self, batch: Iterable[bytes | PredictionEvent]) -> list[bytes]:
        """The batch's records, encoding the events given to `emit`."""
        records: list[bytes] = []
        for event in batch:
            if isinstance(event, bytes):
                records.append(event)
                continue
            try:
                records.append(encode_record(event))
            except Exception as error:  # any unencodable value drops just that event
                self._count(dropped=1)
                # a flavor returning odd values would fail on every request: warn once
                level = logging.DEBUG if self._warned_encoding else logging.WARNING
                self._warned_encoding = True
                log.log(
                    level, "prediction event of %s dropped: cannot encode: %s", event.fqrv, error
                )
        return records

    def _rotate_if_old(self) -> None:
        if self._file is None:
            return
        if self._clock.now_ms() - self._file.opened_at_ms >= self.max_file_age_ms:
            self._drop_file()

    def _append(self, chunk: bytes) -> None:
        if self._file is None:
            self._file = self._open()
        self._file.append(chunk)

    def _open(self) -> _ActiveFile:
        self.directory.mkdir(parents=True, exist_ok=True)
        now = self._clock.now_ms()
        path = self.directory / file_name(now, self._seq)
        while path.exists():  # a previous run used this name: keep order, never share
            self._seq += 1
            path = self.directory / file_name(now, self._seq)
        self._seq += 1
        active = _ActiveFile(path, now)
        if self.max_files is not None:
            self._apply_retention(active.path, self.max_files)
        return active

    def _apply_retention(self, active: Path, keep: int) -> None:
        files = sorted(self.directory.glob(f"{FILE_PREFIX}*{FILE_SUFFIX}"))
        older = [f for f in files if f != active]
        for old in older[: max(0, len(files) - keep)]:
            try:
                old.unlink()
            except OSError as error:
                log.warning("could not delete old prediction file %s: %s", old, error)

    def _drop_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _count(self, *, written: int = 0, dropped: int = 0) -> None:
        with self._lock:
            self._written += written
            self._dropped += dropped

    def _report_failure(self, error: Exception) -> None:
        # warn once per outage, not once per batch; drops are counted either way
        if not self._failing:
            log.warning(
                "prediction files in %s cannot be written (%s); dropping events until it works",
                self.directory,
                error,
            )
        self._failing = True

    def _report_recovery(self) -> None:
        if self._failing:
            log.warning("prediction files in %s are written again", self.directory)
        self._failing = False
