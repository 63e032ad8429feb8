"""Scoring counters: incremented on the hot path, flushed to the store periodically."""

from __future__ import annotations

from dataclasses import dataclass, field

from forestflow.control.telemetry import RequestTelemetry


@dataclass(slots=True)
class ServableCounters:
    """`scoreCount` and `shadeCount` of one servable, plus whether they changed since the flush.

    Only the event-loop thread touches these, so plain integers are enough. `requests`
    (outcomes and latency per mode, for `/metrics`) lives and dies with them: a deleted
    servable's series go with it.
    """

    score_count: int = 0
    shade_count: int = 0
    shadow_dropped: int = 0
    shadow_failed: int = 0
    dirty: bool = False
    requests: RequestTelemetry = field(default_factory=RequestTelemetry)

    def scored(self) -> None:
        """Count one request the servable answered."""
        self.score_count += 1
        self.dirty = True

    def shadowed(self) -> None:
        """Count one request the servable scored in shadow mode."""
        self.shade_count += 1
        self.dirty = True

    def shadow_dropped_once(self) -> None:
        """Count one shadow request dropped (over the shadow budget, or the shadow queue was
        full); not persisted."""
        self.shadow_dropped += 1

    def shadow_failed_once(self) -> None:
        """Count one shadow request the servable failed to score (not persisted)."""
        self.shadow_failed += 1
