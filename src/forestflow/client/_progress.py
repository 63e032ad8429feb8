"""A spinner with the elapsed time on a terminal, while a call that takes long is waited on.

A deploy answers only once the server has fetched and loaded the model, and shows no
state before (a servable appears in the lists once it is deployed), so all there is to
show is that it is still going, and for how long. Nothing is drawn when the stream is not
a terminal: scripts and logs see only the outcome.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import TextIO

FRAMES = "|/-\\"
INTERVAL_S = 0.1


class Spinner:
    """`with Spinner(stream, "deploying …"):` draws `| deploying … 3.2 s` until the block ends."""

    def __init__(self, stream: TextIO, label: str) -> None:
        self.stream = stream
        self.label = label
        self.started = time.monotonic()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def elapsed_s(self) -> float:
        """Seconds since the spinner was made."""
        return time.monotonic() - self.started

    def __enter__(self) -> Spinner:
        if self.stream.isatty():
            self._thread = threading.Thread(target=self._spin, name="forestflow-spinner")
            self._thread.daemon = True
            self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()
            self.stream.write("\r\033[K")  # the line cleared: the outcome takes its place
            self.stream.flush()

    def _spin(self) -> None:
        frame = 0
        while not self._done.wait(INTERVAL_S if frame else 0):
            symbol = FRAMES[frame % len(FRAMES)]
            self.stream.write(f"\r\033[K{symbol} {self.label} {self.elapsed_s:.1f} s")
            self.stream.flush()
            frame += 1
