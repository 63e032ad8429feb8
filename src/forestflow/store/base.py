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


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """A bearer token as stored: its name, role and SHA-256 digest (never the token)."""

    name: str
    role: str
    digest: str
    created_at_ms: int
    revoked_at_ms: int | None = None


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One recorded command or automatic change, with the token that made it."""

    seq: int
    kind: str
    payload: JSONObject
    recorded_at_ms: int
    actor: str | None


@dataclass(frozen=True, slots=True)
class Lifetime:
    """One stay of a servable in the history: the entry that began it, and the entry that
    ended it (None while none is recorded: the servable is still there)."""

    began: HistoryEntry
    ended: HistoryEntry | None


class TokenExists(Exception):
    """A token with that name exists already (revoked ones included)."""


class Store(ABC):
    """Durable control-plane state."""

    @abstractmethod
    def append(
        self,
        events: Sequence[tuple[str, JSONObject]],
        recorded_at_ms: int,
        actor: str | None = None,
    ) -> int:
        """Append `(kind, payload)` events atomically and durably; return the last seq.

        Either all of them are recorded or none is. An empty sequence is a no-op that
        returns the current last seq. Each event also goes to the history, which
        snapshots never compact, with `actor` (the token name that made the command;
        None for the server's own changes).
        """

    @abstractmethod
    def history(self, *, before_seq: int | None = None, limit: int = 100) -> list[HistoryEntry]:
        """History entries, newest first, with `seq < before_seq` when given."""

    @abstractmethod
    def lifetimes(
        self,
        contract_key: str,
        *,
        began_by: str,
        ended_by: Sequence[str],
        before_seq: int | None = None,
        limit: int = 100,
    ) -> list[Lifetime]:
        """The history entries of kind `began_by` about servables of the contract
        `contract_key` (`org/project/n`), newest first, with `seq < before_seq` when given;
        each with the first later entry about the same servable of a kind in `ended_by`.

        An entry is about a servable when its payload names it as `fqrv` (an encoded FQRV).
        Reads only the entries it returns, however long the contract's history.
        """

    @abstractmethod
    def add_token(self, token: TokenRecord, actor: str | None = None) -> None:
        """Record a new token (and a `TokenCreated` history entry); `TokenExists` if taken."""

    @abstractmethod
    def tokens(self) -> list[TokenRecord]:
        """Every token, revoked ones included, by name."""

    @abstractmethod
    def token_by_digest(self, digest: str) -> TokenRecord | None:
        """The unrevoked token with that digest, if any."""

    @abstractmethod
    def revoke_token(self, name: str, at_ms: int, actor: str | None = None) -> bool:
        """Revoke a token by name (and record it); False when no unrevoked token has it."""

    @abstractmethod
    def is_empty(self) -> bool:
        """Whether nothing was ever recorded: no event, snapshot nor token."""

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
