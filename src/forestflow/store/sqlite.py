"""The embedded state store: event log, snapshot and counters in one SQLite file.

Durability comes from SQLite itself: a WAL journal with `synchronous=FULL`, and every
write in one `BEGIN IMMEDIATE … COMMIT` transaction, so a crash at any point leaves a
batch either wholly recorded or absent, and a method returns only after its commit.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import orjson

from forestflow.errors import InsufficientStorage
from forestflow.store.base import (
    Counters,
    HistoryEntry,
    JSONObject,
    Lifetime,
    Snapshot,
    Store,
    StoredEvent,
    TokenExists,
    TokenRecord,
)

DB_FILENAME: Final = "state.sqlite3"
BUSY_TIMEOUT_S: Final = 5.0

# Migration i takes the schema from version i to i + 1. The version lives in SQLite's
# `PRAGMA user_version` (0 in a fresh file), so it changes in the same transaction as
# the tables. Add a migration by appending a tuple; never edit a released one.
_MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """CREATE TABLE events (
            seq INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            payload TEXT NOT NULL,
            recorded_at_ms INTEGER NOT NULL
        )""",
        # The highest seq ever assigned lives apart from `events`: compaction deletes
        # event rows, and a seq must never be handed out twice.
        """CREATE TABLE log_head (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            last_seq INTEGER NOT NULL
        )""",
        "INSERT INTO log_head (id, last_seq) VALUES (1, 0)",
        """CREATE TABLE snapshots (
            seq INTEGER PRIMARY KEY,
            payload TEXT NOT NULL
        )""",
        """CREATE TABLE counters (
            key TEXT PRIMARY KEY,
            score_count INTEGER NOT NULL,
            shade_count INTEGER NOT NULL
        )""",
    ),
    (
        # Tokens are stored by SHA-256 digest: the database never holds a usable token.
        """CREATE TABLE tokens (
            name TEXT PRIMARY KEY,
            role TEXT NOT NULL,
            digest TEXT NOT NULL UNIQUE,
            created_at_ms INTEGER NOT NULL,
            revoked_at_ms INTEGER
        )""",
        # Every command with the token that made it. Unlike `events`, never compacted.
        """CREATE TABLE history (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL,
            payload TEXT NOT NULL,
            recorded_at_ms INTEGER NOT NULL,
            actor TEXT
        )""",
    ),
    (
        # The servable an entry is about, read from its payload's `fqrv`, so that a
        # contract's servables are found without reading the rest of the history (a
        # contract with thousands of deploys, each with its metrics updates). Virtual: the
        # entries already recorded get them too.
        """ALTER TABLE history ADD COLUMN contract_key TEXT GENERATED ALWAYS AS (
            json_extract(payload, '$.fqrv.contract.organization') || '/'
            || json_extract(payload, '$.fqrv.contract.project') || '/'
            || json_extract(payload, '$.fqrv.contract.contractNumber')
        ) VIRTUAL""",
        """ALTER TABLE history ADD COLUMN release_version TEXT GENERATED ALWAYS AS (
            json_extract(payload, '$.fqrv.releaseVersion')
        ) VIRTUAL""",
        "CREATE INDEX history_by_contract ON history (contract_key, kind, seq)",
        "CREATE INDEX history_by_servable ON history (contract_key, release_version, kind, seq)",
    ),
)
SCHEMA_VERSION: Final = len(_MIGRATIONS)
_INSERT_HISTORY: Final = (
    "INSERT INTO history (kind, payload, recorded_at_ms, actor) VALUES (?, ?, ?, ?)"
)


class StoreError(Exception):
    """The state file cannot be used: not SQLite, locked, too new, closed or failing."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"state store {path}: {reason}")
        self.path = path
        self.reason = reason


class StoreFull(StoreError, InsufficientStorage):
    """The state file's disk is full (SQLITE_FULL): the write was rolled back; answers 507.

    Still a `StoreError`, so whatever handles store failures handles this one too.
    """

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(path, reason)
        # The client's message leaves out the server's path; the log keeps `str(self)`.
        self.message = (
            "the state store's disk is full: free space in the data directory, then retry"
        )


class SqliteStore(Store):
    """The `Store` on one SQLite file, for a single ForestFlow process."""

    def __init__(self, path: Path, *, busy_timeout_s: float = BUSY_TIMEOUT_S) -> None:
        self.path = Path(path)
        self._busy_timeout_s = busy_timeout_s
        # One connection shared by the control plane's worker threads; the lock
        # serialises them, since a sqlite3 connection is not safe for concurrent use.
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(self.path, f"cannot create its directory: {exc}") from exc
        self._conn: sqlite3.Connection | None = self._open()

    def append(
        self,
        events: Sequence[tuple[str, JSONObject]],
        recorded_at_ms: int,
        actor: str | None = None,
    ) -> int:
        """Append `(kind, payload)` events (and their history) in one durable transaction;
        return the last seq."""
        # Serialise before taking the lock: a bad payload fails with nothing written.
        rows = [
            (kind, _dumps(payload, f"event {index} ({kind!r})"))
            for index, (kind, payload) in enumerate(events)
        ]
        with self._connection() as conn:
            if not rows:
                return _last_seq(conn)
            with _immediate(conn):
                # Read inside the write transaction: another process may share the file.
                first = _last_seq(conn) + 1
                conn.executemany(
                    "INSERT INTO events (seq, kind, payload, recorded_at_ms) VALUES (?, ?, ?, ?)",
                    [
                        (first + offset, kind, payload, recorded_at_ms)
                        for offset, (kind, payload) in enumerate(rows)
                    ],
                )
                last = first + len(rows) - 1
                conn.execute("UPDATE log_head SET last_seq = ? WHERE id = 1", (last,))
                conn.executemany(
                    _INSERT_HISTORY,
                    [(kind, payload, recorded_at_ms, actor) for kind, payload in rows],
                )
        return last

    def history(self, *, before_seq: int | None = None, limit: int = 100) -> list[HistoryEntry]:
        """History entries, newest first."""
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT seq, kind, payload, recorded_at_ms, actor FROM history"
                " WHERE seq < ? ORDER BY seq DESC LIMIT ?",
                (_before(before_seq), limit),
            ).fetchall()
        return [_history_entry(row) for row in rows]

    def lifetimes(
        self,
        contract_key: str,
        *,
        began_by: str,
        ended_by: Sequence[str],
        before_seq: int | None = None,
        limit: int = 100,
    ) -> list[Lifetime]:
        """A page of a contract's servables as the history has them, newest first."""
        with self._connection() as conn:
            began = conn.execute(
                "SELECT seq, kind, payload, recorded_at_ms, actor, release_version FROM history"
                " WHERE contract_key = ? AND kind = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
                (contract_key, began_by, _before(before_seq), limit),
            ).fetchall()
            found: list[Lifetime] = []
            for *entry, release in began:
                # one index lookup per kind: the first end of this stay, not a later one's
                ends = [
                    conn.execute(
                        "SELECT seq, kind, payload, recorded_at_ms, actor FROM history"
                        " WHERE contract_key = ?"
                        " AND release_version = ? AND kind = ? AND seq > ?"
                        " ORDER BY seq LIMIT 1",
                        (contract_key, release, kind, entry[0]),
                    ).fetchone()
                    for kind in ended_by
                ]
                first = min((row for row in ends if row), default=None, key=lambda r: r[0])
                found.append(
                    Lifetime(_history_entry(entry), _history_entry(first) if first else None)
                )
        return found

    def add_token(self, token: TokenRecord, actor: str | None = None) -> None:
        """Record a new token; `TokenExists` when its name is taken."""
        entry = _dumps({"name": token.name, "role": token.role}, "token")
        with self._connection() as conn, _immediate(conn):
            taken = conn.execute("SELECT 1 FROM tokens WHERE name = ?", (token.name,)).fetchone()
            if taken:
                raise TokenExists(token.name)
            conn.execute(
                "INSERT INTO tokens (name, role, digest, created_at_ms) VALUES (?, ?, ?, ?)",
                (token.name, token.role, token.digest, token.created_at_ms),
            )
            conn.execute(
                _INSERT_HISTORY,
                ("TokenCreated", entry, token.created_at_ms, actor),
            )

    def tokens(self) -> list[TokenRecord]:
        """Every token, by name."""
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT name, role, digest, created_at_ms, revoked_at_ms FROM tokens ORDER BY name"
            ).fetchall()
        return [TokenRecord(*row) for row in rows]

    def token_by_digest(self, digest: str) -> TokenRecord | None:
        """The unrevoked token with that digest."""
        with self._connection() as conn:
            row = conn.execute(
                "SELECT name, role, digest, created_at_ms, revoked_at_ms FROM tokens"
                " WHERE digest = ? AND revoked_at_ms IS NULL",
                (digest,),
            ).fetchone()
        return TokenRecord(*row) if row else None

    def revoke_token(self, name: str, at_ms: int, actor: str | None = None) -> bool:
        """Revoke the token called `name`; False when there is no such unrevoked token."""
        entry = _dumps({"name": name}, "token")
        with self._connection() as conn, _immediate(conn):
            changed = conn.execute(
                "UPDATE tokens SET revoked_at_ms = ? WHERE name = ? AND revoked_at_ms IS NULL",
                (at_ms, name),
            ).rowcount
            if changed:
                conn.execute(
                    _INSERT_HISTORY,
                    ("TokenRevoked", entry, at_ms, actor),
                )
        return bool(changed)

    def is_empty(self) -> bool:
        """Whether nothing was ever recorded here."""
        with self._connection() as conn:
            recorded = conn.execute(
                "SELECT (SELECT last_seq FROM log_head WHERE id = 1)"
                " + (SELECT COUNT(*) FROM snapshots) + (SELECT COUNT(*) FROM tokens)"
            ).fetchone()[0]
        return not recorded

    def events(self, after_seq: int = 0) -> Iterator[StoredEvent]:
        """Recorded events with `seq > after_seq`, in order (compacted ones are gone)."""
        with self._connection() as conn:
            # fetchall under the lock so no cursor outlives it across the caller's yields.
            rows = conn.execute(
                "SELECT seq, kind, payload, recorded_at_ms FROM events WHERE seq > ? ORDER BY seq",
                (after_seq,),
            ).fetchall()
        return iter(
            [
                StoredEvent(seq=seq, kind=kind, payload=orjson.loads(payload), recorded_at_ms=at)
                for seq, kind, payload, at in rows
            ]
        )

    def last_seq(self) -> int:
        """The highest seq ever assigned (kept across compaction), 0 when none."""
        with self._connection() as conn:
            return _last_seq(conn)

    def write_snapshot(self, snapshot: Snapshot) -> None:
        """Record `snapshot` and delete the events it covers, in one transaction."""
        if snapshot.seq < 0:
            raise ValueError(f"snapshot seq must not be negative, got {snapshot.seq}")
        payload = _dumps(snapshot.payload, f"snapshot at seq {snapshot.seq}")
        with self._connection() as conn, _immediate(conn):
            (newest,) = conn.execute("SELECT MAX(seq) FROM snapshots").fetchone()
            if newest is not None and snapshot.seq < newest:
                # The events between the two are already compacted away: going back
                # would lose them, so this is a caller bug.
                raise ValueError(
                    f"snapshot at seq {snapshot.seq} is older than the stored one at {newest}"
                )
            conn.execute(
                "INSERT INTO snapshots (seq, payload) VALUES (?, ?)"
                " ON CONFLICT (seq) DO UPDATE SET payload = excluded.payload",
                (snapshot.seq, payload),
            )
            # Older snapshots are useless for recovery once their events are gone.
            conn.execute("DELETE FROM snapshots WHERE seq < ?", (snapshot.seq,))
            conn.execute("DELETE FROM events WHERE seq <= ?", (snapshot.seq,))
            # A snapshot ahead of the log (state imported from another store) moves the
            # head, so that new events sort after it and are replayed.
            conn.execute(
                "UPDATE log_head SET last_seq = MAX(last_seq, ?) WHERE id = 1", (snapshot.seq,)
            )

    def latest_snapshot(self) -> Snapshot | None:
        """The newest snapshot, if any."""
        with self._connection() as conn:
            row = conn.execute(
                "SELECT seq, payload FROM snapshots ORDER BY seq DESC LIMIT 1"
            ).fetchone()
        if row is None:
            return None
        seq, payload = row
        return Snapshot(seq=seq, payload=orjson.loads(payload))

    def write_counters(self, counters: Mapping[str, Counters]) -> None:
        """Upsert counters keyed by servable key, all in one transaction."""
        rows = [(key, c.score_count, c.shade_count) for key, c in counters.items()]
        if not rows:
            return
        with self._connection() as conn, _immediate(conn):
            conn.executemany(
                "INSERT INTO counters (key, score_count, shade_count) VALUES (?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET"
                " score_count = excluded.score_count, shade_count = excluded.shade_count",
                rows,
            )

    def read_counters(self) -> dict[str, Counters]:
        """Every stored counter row, by servable key."""
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT key, score_count, shade_count FROM counters ORDER BY key"
            ).fetchall()
        return {key: Counters(score_count=score, shade_count=shade) for key, score, shade in rows}

    def delete_counters(self, key: str) -> None:
        """Forget the counters of a removed servable (no-op when there are none)."""
        with self._connection() as conn:
            # A single statement outside BEGIN is its own durable transaction.
            conn.execute("DELETE FROM counters WHERE key = ?", (key,))

    def close(self) -> None:
        """Close the connection; later calls raise `StoreError`. Idempotent."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _open(self) -> sqlite3.Connection:
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, never the module.
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout_s,
                check_same_thread=False,
                isolation_level=None,
            )
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        try:
            # journal_mode is stored in the file; synchronous is per connection. WAL with
            # FULL syncs the log on every commit, so a returned commit survives power loss.
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            _migrate(conn, self.path)
        except sqlite3.Error as exc:
            conn.close()
            raise self._error(exc) from exc
        except BaseException:
            conn.close()
            raise
        return conn

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """The open connection, held under the lock, with SQLite errors as `StoreError`."""
        with self._lock:
            if self._conn is None:
                raise StoreError(self.path, "the store is closed")
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise self._error(exc) from exc

    def _error(self, exc: sqlite3.Error) -> StoreError:
        """`exc` as a `StoreError` that says why; `StoreFull` (507) when the disk is full."""
        name = getattr(exc, "sqlite_errorname", "")
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
            reason = f"locked by another process for more than {self._busy_timeout_s:g} s"
        elif name == "SQLITE_NOTADB":
            reason = "not a SQLite database"
        elif name == "SQLITE_FULL":
            return StoreFull(self.path, f"the disk is full ({exc})")
        else:
            reason = str(exc)
        return StoreError(self.path, f"{reason} ({exc})" if reason != str(exc) else reason)


def open_store(data_dir: Path) -> SqliteStore:
    """Open (creating if needed) the state store of the data directory `data_dir`."""
    return SqliteStore(data_dir / DB_FILENAME)


@contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """Run the block as one write transaction, committed on success, rolled back on error."""
    # IMMEDIATE takes the write lock up front, so reads in the block see the state the
    # writes commit against, and two processes never deadlock upgrading a read lock.
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        # A failed COMMIT may already have ended the transaction.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    try:
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the file's schema up to `SCHEMA_VERSION`; refuse a newer one."""
    version = _user_version(conn)
    _check_version(version, path)
    if version == SCHEMA_VERSION:
        return
    with _immediate(conn):
        # Re-read under the write lock: another process may have migrated meanwhile.
        version = _user_version(conn)
        _check_version(version, path)
        for statements in _MIGRATIONS[version:]:
            for statement in statements:
                conn.execute(statement)
        # PRAGMA takes no bound parameters; the value is our own integer constant.
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")


def _check_version(version: int, path: Path) -> None:
    if version > SCHEMA_VERSION:
        raise StoreError(
            path,
            f"schema version {version} is newer than this ForestFlow supports"
            f" ({SCHEMA_VERSION}); upgrade ForestFlow to open it",
        )


def _user_version(conn: sqlite3.Connection) -> int:
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    return int(version)


def _before(seq: int | None) -> int:
    """An upper bound for `seq < ?`: `seq`, or past every seq."""
    return seq if seq is not None else 2**63 - 1


def _history_entry(row: Sequence[Any]) -> HistoryEntry:
    seq, kind, payload, at, actor = row
    return HistoryEntry(seq, kind, orjson.loads(payload), at, actor)


def _last_seq(conn: sqlite3.Connection) -> int:
    (last,) = conn.execute("SELECT last_seq FROM log_head WHERE id = 1").fetchone()
    return int(last)


def _dumps(payload: JSONObject, what: str) -> str:
    """`payload` as JSON text; TypeError naming `what` when it is not a JSON object."""
    if not isinstance(payload, Mapping):
        raise TypeError(f"{what}: payload must be a JSON object, got {type(payload).__name__}")
    try:
        return orjson.dumps(payload, default=_mapping_as_dict).decode()
    except orjson.JSONEncodeError as exc:
        raise TypeError(f"{what}: payload is not JSON-serialisable: {exc}") from exc


def _mapping_as_dict(value: Any) -> dict[str, Any]:
    """Let read-only mappings through orjson, which only knows `dict`; reject the rest."""
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")
