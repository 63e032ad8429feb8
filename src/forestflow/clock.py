"""The clock seam: every time read in ForestFlow goes through a `Clock`."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """A source of the current time in epoch milliseconds."""

    def now_ms(self) -> int:
        """The current time, epoch milliseconds."""
        ...


class SystemClock:
    """The wall clock."""

    def now_ms(self) -> int:
        """The current wall-clock time, epoch milliseconds."""
        return time.time_ns() // 1_000_000
