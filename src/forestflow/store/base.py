"""The state-store seam: an append-only event log, snapshots, and scoring counters.

The store knows nothing of ForestFlow's event types: an event is a kind (its wire name)
and a JSON object. Every method is synchronous and thread-safe; the control plane calls
them from worker threads. `append` returns only once the events are durable.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

JSONObject = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One event as recorded: its sequence number, kind and payload."""

    seq: int
    kind: str
    payload: JSONObject
    recorded_at_ms: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The whole control-plane state as of event `seq`."""

    seq: int
    payload: JSONObject


@dataclass(frozen=True, slots=True)
class Counters:
    """Scoring counters of one servable, as last flushed."""

    score_count: int
    shade_count: int


class Store(ABC):
    """Durable control-plane state."""

    @abstractmethod
    def append(self, events: Sequence[tuple[str, JSONObject]], recorded_at_ms: int) -> int:
        """Append `(kind, payload)` events atomically and durably; return the last seq.

        Either all of them are recorded or none is. An empty sequence is a no-op that
        returns the current last seq.
        """

    @abstractmethod
    def events(self, after_seq: int = 0) -> Iterator[StoredEvent]:
        """Recorded events with `seq > after_seq`, in order."""

    @abstractmethod
    def last_seq(self) -> int:
        """The seq of the newest event, 0 when there is none."""

    @abstractmethod
    def write_snapshot(self, snapshot: Snapshot) -> None:
        """Durably record a snapshot; events up to its seq may then be compacted away."""

    @abstractmethod
    def latest_snapshot(self) -> Snapshot | None:
        """The newest snapshot, if any."""

    @abstractmethod
    def write_counters(self, counters: Mapping[str, Counters]) -> None:
        """Upsert counters keyed by servable key (`org/project/n/release`)."""

    @abstractmethod
    def read_counters(self) -> dict[str, Counters]:
        """Every stored counter row."""

    @abstractmethod
    def delete_counters(self, key: str) -> None:
        """Forget the counters of a removed servable."""

    @abstractmethod
    def close(self) -> None:
        """Release the underlying connection; the store is not used afterwards."""
