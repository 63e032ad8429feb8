"""Rate-limited warnings for repeated failures: the first at once, then one summary a minute.

A failing shadow servable fails on every request it shadows; a line (let alone a
traceback) per request would bury everything else in the log. Per key, `FailureLog`
writes the first failure as it happens, counts the ones that follow, and writes one
summary line with the count and the last reason once the interval has passed since its
previous line. Time comes from the injected `Clock`, so tests step it with `FakeClock`.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from dataclasses import dataclass

from forestflow.clock import Clock

MINUTE_MS = 60_000


@dataclass(slots=True)
class _Window:
    """What happened to one key since its last log line."""

    logged_at_ms: int
    suppressed: int = 0
    last_reason: str = ""


class FailureLog:
    """Logs failures per key at WARNING: at most one line a minute for each key.

    Guarantees: a key's first failure (or its first after a quiet interval) is written at
    once; later failures are counted and reported, with the last reason, in one summary
    line on the first failure at least a minute after the key's previous line. When a
    line is written, other keys' summaries that are due are written too, so a count is not
    held back forever by a key that stopped failing (a deleted servable).
    """

    def __init__(self, logger: logging.Logger, clock: Clock, *, what: str) -> None:
        self._logger = logger
        self._clock = clock
        self._what = what
        self._windows: dict[Hashable, _Window] = {}

    def failed(self, key: Hashable, reason: str) -> None:
        """Record one failure of `key`; write a line only if the rate limit allows."""
        now = self._clock.now_ms()
        window = self._windows.get(key)
        if window is None or (window.suppressed == 0 and self._due(window, now)):
            self._windows[key] = _Window(logged_at_ms=now)
            self._logger.warning(
                "%s on %s failed: %s (repeats are summarised once a minute)",
                self._what,
                key,
                reason,
            )
            self._sweep(now)
            return
        window.suppressed += 1
        window.last_reason = reason
        if self._due(window, now):
            self._summarise(key, window, now)
            self._sweep(now)

    def _due(self, window: _Window, now: int) -> bool:
        return now - window.logged_at_ms >= MINUTE_MS

    def _summarise(self, key: Hashable, window: _Window, now: int) -> None:
        self._logger.warning(
            "%s on %s failed %d more %s in the last %s: %s",
            self._what,
            key,
            window.suppressed,
            "time" if window.suppressed == 1 else "times",
            _span(now - window.logged_at_ms),
            window.last_reason,
        )
        window.logged_at_ms = now
        window.suppressed = 0

    def _sweep(self, now: int) -> None:
        """Write the other keys' due summaries and forget keys that have gone quiet."""
        for key, window in list(self._windows.items()):
            if not self._due(window, now):
                continue
            if window.suppressed:
                self._summarise(key, window, now)
            else:
                del self._windows[key]


def _span(elapsed_ms: int) -> str:
    minutes = elapsed_ms // MINUTE_MS
    return "minute" if minutes <= 1 else f"{minutes} minutes"
