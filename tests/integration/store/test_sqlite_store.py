"""SqliteStore on a real SQLite file: ordering, atomicity, durability, compaction, locking."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from types import MappingProxyType
from typing import Any

import orjson
import pytest

from forestflow.store.base import Counters, Snapshot, StoredEvent
from forestflow.store.sqlite import (
    _MIGRATIONS,
    DB_FILENAME,
    SCHEMA_VERSION,
    SqliteStore,
    StoreError,
    open_store,
)

StoreFactory = Callable[..., SqliteStore]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    # A missing parent directory checks that the store creates it.
    return tmp_path / "data" / DB_FILENAME


@pytest.fixture
def store_factory(db_path: Path) -> Iterator[StoreFactory]:
    """Open stores (on `db_path` unless told otherwise) and close them all afterwards."""
    opened: list[SqliteStore] = []

    def make(path: Path | None = None, **kwargs: Any) -> SqliteStore:
        store = SqliteStore(path or db_path, **kwargs)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def events_of(store: SqliteStore, after_seq: int = 0) -> list[tuple[int, str, Any]]:
    return [(e.seq, e.kind, e.payload) for e in store.events(after_seq)]


def raw_connection(path: Path) -> closing[sqlite3.Connection]:
    """A plain sqlite3 connection, closed on exit (sqlite3's own `with` only commits)."""
    return closing(sqlite3.connect(path, isolation_level=None))


class TestAppendAndRead:
    def test_round_trip_keeps_order_seq_and_timestamp(self, store_factory: StoreFactory) -> None:
        store = store_factory()
        last = store.append(
            [("ContractCreated", {"contract": "a/b/c"}), ("ServableDeployed", {"n": 1})], 1000
        )

        assert last == 2
        assert list(store.events()) == [
            StoredEvent(
                seq=1, kind="ContractCreated", payload={"contract": "a/b/c"}, recorded_at_ms=1000
            ),
            StoredEvent(seq=2, kind="ServableDeployed", payload={"n": 1}, recorded_at_ms=1000),
        ]

    def test_seqs_continue_across_appends(self, store_factory: StoreFactory) -> None:
        store = store_factory()
        assert store.last_seq() == 0
        assert store.append([("A", {"i": 1})], 1) == 1
        assert store.append([("B", {"i": 2}), ("C", {"i": 3})], 2) == 3
        assert store.last_seq() == 3
        assert events_of(store, after_seq=1) == [(2, "B", {"i": 2}), (3, "C", {"i": 3})]
        assert events_of(store, after_seq=3) == []

    def test_empty_append_is_a_no_op_returning_last_seq(self, store_factory: StoreFactory) -> None:
        store = store_factory()
        store.append([("A", {})], 1)
        assert store.append([], 2) == 1
        assert store.last_seq() == 1

    def test_nested_json_and_read_only_mappings_round_trip(
        self, store_factory: StoreFactory
    ) -> None:
        store = store_factory()
        payload = {"s": "ünïcode", "f": 0.5, "n": None, "l": [1, {"x": True}], "big": 2**53}
        store.append([("A", MappingProxyType(payload))], 1)
        assert events_of(store) == [(1, "A", payload)]

    def test_payload_that_is_not_an_object_is_refused(self, store_factory: StoreFactory) -> None:
        store = store_factory()
        with pytest.raises(TypeError, match="must be a JSON object"):
            store.append([("A", [1, 2])], 1)  # type: ignore[list-item]
        assert store.last_seq() == 0


class TestAtomicBatch:
    def test_unserialisable_payload_stores_nothing_of_the_batch(
        self, store_factory: StoreFactory
    ) -> None:
        store = store_factory()
        store.append([("Before", {})], 1)

        with pytest.raises(TypeError, match=r"event 1 \('Bad'\).*not JSON-serialisable"):
            store.append([("Good", {"i": 1}), ("Bad", {"tags": {"a", "b"}}), ("Good", {})], 2)

        assert events_of(store) == [(1, "Before", {})]
        assert store.last_seq() == 1
        assert store.append([("After", {})], 3) == 2

    def test_failure_inside_the_transaction_rolls_back_the_batch(
        self, store_factory: StoreFactory
    ) -> None:
        # A NULL kind passes serialisation and fails in SQLite on the second INSERT,
        # after the first row is written: only the rollback keeps it out.
        store = store_factory()
        with pytest.raises(StoreError, match="NOT NULL"):
            store.append([("Good", {}), (None, {})], 1)  # type: ignore[list-item]

        assert events_of(store) == []
        assert store.last_seq() == 0
        assert store.append([("After", {})], 2) == 1


class TestDurability:
    def test_events_survive_close_and_reopen(self, store_factory: StoreFactory) -> None:
        store = store_factory()
        store.append([("A", {"i": 1}), ("B", {"i": 2})], 1)
        store.close()

        reopened = store_factory()
        assert events_of(reopened) == [(1, "A", {"i": 1}), (2, "B", {"i": 2})]
        assert reopened.append([("C", {})], 2) == 3

    def test_committed_events_are_visible_without_closing_the_writer(
        self, store_factory: StoreFactory
    ) -> None:
        # The writer stays open (as if its process died): what it acked is on disk.
        writer = store_factory()
        writer.append([("A", {"i": 1})], 1)

        reader = store_factory()
        assert events_of(reader) == [(1, "A", {"i": 1})]
        assert reader.append([("B", {})], 2) == 2
        assert writer.append([("C", {})], 3) == 3

    def test_file_uses_wal_journal(self, store_factory: StoreFactory, db_path: Path) -> None:
        store_factory().close()
        with raw_connection(db_path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)

    def test_open_store_puts_the_file_in_the_data_dir(self, tmp_path: Path) -> None:
        data_dir = tmp_path / "nested" / "data"
        with open_store(data_dir) as store:
            store.append([("A", {})], 1)
            assert store.path == data_dir / "state.sqlite3"
        assert (data_dir / "state.sqlite3").is_file()


# Appends batches forever, printing one line per append only after it returned.
_CRASH_WRITER = """
import sys
from pathlib import Path
from forestflow.store.sqlite import SqliteStore

store = SqliteStore(Path(sys.argv[1]))
batch_size = int(sys.argv[2])
batch = 0
while True:
    batch += 1
    events = [("Part", {"batch": batch, "part": part}) for part in range(batch_size)]
    seq = store.append(events, recorded_at_ms=batch)
    print(f"acked {batch} {seq}", flush=True)
"""


class TestCrashDurability:
    BATCH_SIZE = 3

    def run_writer_until_killed(self, db_path: Path, acks: int) -> list[int]:
        """Start the writer, SIGKILL it after `acks` acknowledgements; the acked batches."""
        acked: list[int] = []
        command = [sys.executable, "-c", _CRASH_WRITER, str(db_path), str(self.BATCH_SIZE)]
        with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                _, batch, seq = line.split()
                assert int(seq) == int(batch) * self.BATCH_SIZE
                acked.append(int(batch))
                if len(acked) == acks:
                    break
            proc.send_signal(signal.SIGKILL)
            # The writer never exits on its own: it died of our signal, mid-loop.
            assert proc.wait() == -signal.SIGKILL
        assert len(acked) == acks, "the writer stopped before it was killed"
        return acked

    @pytest.mark.parametrize("acks", [1, 10, 40])
    def test_sigkill_keeps_every_acked_batch_and_no_partial_one(
        self, store_factory: StoreFactory, db_path: Path, acks: int
    ) -> None:
        acked = self.run_writer_until_killed(db_path, acks)

        store = store_factory()
        events = list(store.events())
        batches = [e.payload["batch"] for e in events]
        assert set(acked) <= set(batches)
        # Whole batches, in order, with gap-free seqs: nothing torn, nothing reordered.
        recorded = max(batches)
        assert [(e.seq, e.payload) for e in events] == [
            (seq, {"batch": batch, "part": part})
            for batch in range(1, recorded + 1)
            for part in range(self.BATCH_SIZE)
            for seq in [(batch - 1) * self.BATCH_SIZE + part + 1]
        ]
        assert store.last_seq() == recorded * self.BATCH_SIZE
        assert store.append([("AfterCrash", {})], 0) == recorded * self.BATCH_SIZE + 1


class TestSnapshots:
    def test_no_snapshot_in_a_new_store(self, store_factory: StoreFactory) -> None:
        assert store_factory().latest_snapshot() is None

    def test_snapshot_compacts_covered_events_and_keeps_seq_monotonic(
        self, store_factory: StoreFactory
    ) -> None:
        store = store_factory()
        store.append([(f"E{i}", {"i": i}) for i in range(1, 6)], 1)

        store.write_snapshot(Snapshot(seq=3, payload={"state": [1, 2, 3]}))

        assert store.latest_snapshot() == Snapshot(seq=3, payload={"state": [1, 2, 3]})
        assert [e.seq for e in store.events()] == [4, 5]
        assert store.last_seq() == 5
        assert store.append([("E6", {})], 2) == 6

    def test_full_compaction_keeps_last_seq_across_reopen(
        self, store_factory: StoreFactory
    ) -> None:
        store = store_factory()
        store.append([("A", {}), ("B", {})], 1)
        store.write_snapshot(Snapshot(seq=2, payload={"v": 2}))
        assert list(store.events()) == []
        assert store.last_seq() == 2
        store.close()

        reopened = store_factory()
        assert reopened.last_seq() == 2
        assert reopened.latest_snapshot() == Snapshot(seq=2, payload={"v": 2})
        assert reopened.append([("C", {})], 2) == 3
        assert events_of(reopened) == [(3, "C", {})]

    def test_newer_snapshot_replaces_older_and_same_seq_overwrites(
        self, store_factory: StoreFactory
    ) -> None:
        store = store_factory()
        store.append([("A", {}), ("B", {}), ("C", {})], 1)
        store.write_snapshot(Snapshot(seq=1, payload={"v": 1}))
        store.write_snapshot(Snapshot(seq=3, payload={"v": 3}))
        store.write_snapshot(Snapshot(seq=3, payload={"v": "3bis"}))
        assert store.latest_snapshot() == Snapshot(seq=3, payload={"v": "3bis"})

    def test_older_snapshot_is_refused(self, store_factory: StoreFactory) -> None:
        store = store_factory()
        store.append([("A", {}), ("B", {})], 1)
        store.write_snapshot(Snapshot(seq=2, payload={"v": 2}))
        with pytest.raises(ValueError, match="older than the stored one at 2"):
            store.write_snapshot(Snapshot(seq=1, payload={"v": 1}))
        assert store.latest_snapshot() == Snapshot(seq=2, payload={"v": 2})

    def test_snapshot_ahead_of_the_log_moves_the_head(self, store_factory: StoreFactory) -> None:
        # State imported into an empty store: new events must sort after the snapshot.
        store = store_factory()
        store.write_snapshot(Snapshot(seq=10, payload={"imported": True}))
        assert store.last_seq() == 10
        assert store.append([("A", {})], 1) == 11

    def test_unserialisable_snapshot_changes_nothing(self, store_factory: StoreFactory) -> None:
        store = store_factory()
        store.append([("A", {})], 1)
        with pytest.raises(TypeError, match="snapshot at seq 1"):
            store.write_snapshot(Snapshot(seq=1, payload={"bad": {1, 2}}))
        assert store.latest_snapshot() is None
        assert events_of(store) == [(1, "A", {})]


class TestCounters:
    def test_upsert_read_and_delete(self, store_factory: StoreFactory) -> None:
        store = store_factory()
        assert store.read_counters() == {}

        store.write_counters({"o/p/1/0": Counters(5, 1), "o/p/2/0": Counters(2, 0)})
        store.write_counters({"o/p/1/0": Counters(9, 3)})
        assert store.read_counters() == {"o/p/1/0": Counters(9, 3), "o/p/2/0": Counters(2, 0)}

        store.delete_counters("o/p/1/0")
        store.delete_counters("never/stored/0/0")
        store.write_counters({})
        assert store.read_counters() == {"o/p/2/0": Counters(2, 0)}

    def test_counters_survive_reopen(self, store_factory: StoreFactory) -> None:
        store = store_factory()
        store.write_counters({"o/p/1/0": Counters(7, 2)})
        store.close()
        assert store_factory().read_counters() == {"o/p/1/0": Counters(7, 2)}


class TestConcurrency:
    THREADS = 4
    APPENDS = 50
    BATCH = 2

    def append_from_threads(self, stores: list[SqliteStore]) -> dict[int, dict[str, int]]:
        """Each thread (round-robin over `stores`) appends; returns seq -> payload acked."""
        barrier = threading.Barrier(self.THREADS)

        def work(thread: int) -> dict[int, dict[str, int]]:
            store = stores[thread % len(stores)]
            barrier.wait()
            acked: dict[int, dict[str, int]] = {}
            for i in range(self.APPENDS):
                events = [("E", {"t": thread, "i": i, "part": p}) for p in range(self.BATCH)]
                last = store.append(events, i)
                for p, payload in enumerate(events):
                    acked[last - self.BATCH + 1 + p] = payload[1]
            return acked

        with ThreadPoolExecutor(self.THREADS) as pool:
            results = list(pool.map(work, range(self.THREADS)))
        merged: dict[int, dict[str, int]] = {}
        for acked in results:
            assert merged.keys().isdisjoint(acked.keys())
            merged |= acked
        return merged

    @pytest.mark.parametrize("connections", [1, 2], ids=["one-store", "two-stores-one-file"])
    def test_concurrent_appends_get_unique_gap_free_seqs(
        self, store_factory: StoreFactory, connections: int
    ) -> None:
        stores = [store_factory() for _ in range(connections)]
        acked = self.append_from_threads(stores)

        total = self.THREADS * self.APPENDS * self.BATCH
        assert sorted(acked) == list(range(1, total + 1))
        # Every seq holds exactly the event whose append returned it: batches stay whole.
        assert {e.seq: e.payload for e in stores[0].events()} == acked
        assert stores[0].last_seq() == total


class TestSchemaVersion:
    def test_new_file_has_the_current_version(
        self, store_factory: StoreFactory, db_path: Path
    ) -> None:
        store_factory().close()
        with raw_connection(db_path) as conn:
            assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)

    def test_newer_schema_is_refused(self, store_factory: StoreFactory, db_path: Path) -> None:
        store_factory().close()
        newer = SCHEMA_VERSION + 1
        with raw_connection(db_path) as conn:
            conn.execute(f"PRAGMA user_version = {newer}")

        with pytest.raises(StoreError, match=f"schema version {newer} is newer") as caught:
            store_factory()
        assert str(db_path) in str(caught.value)


class TestErrors:
    def test_non_sqlite_file_names_the_path(
        self, store_factory: StoreFactory, tmp_path: Path
    ) -> None:
        path = tmp_path / "notes.txt"
        path.write_text("this is not a database\n" * 20)
        with pytest.raises(StoreError, match="not a SQLite database") as caught:
            store_factory(path)
        assert caught.value.path == path
        assert str(path) in str(caught.value)

    def test_write_lock_held_elsewhere_past_the_busy_timeout(
        self, store_factory: StoreFactory, db_path: Path
    ) -> None:
        store = store_factory(busy_timeout_s=0.05)
        store.append([("A", {})], 1)
        # Another connection holds the write lock, as another process would.
        with raw_connection(db_path) as other:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(StoreError, match="locked by another process") as caught:
                store.append([("B", {})], 2)
            other.execute("ROLLBACK")
        assert str(db_path) in str(caught.value)
        # Readers are not blocked by a writer under WAL, and the store recovers.
        assert store.append([("B", {})], 2) == 2

    def test_closed_store_raises(self, store_factory: StoreFactory) -> None:
        store = store_factory()
        store.close()
        store.close()
        with pytest.raises(StoreError, match="closed"):
            store.last_seq()


def about(org: str, release: str, **more: Any) -> dict[str, Any]:
    """A payload naming the servable `org.p.0.<release>` as its `fqrv`."""
    contract = {"organization": org, "project": "p", "contractNumber": 0}
    return {"fqrv": {"contract": contract, "releaseVersion": release}, **more}


END = ("Expired", "Deleted")


class TestLifetimes:
    """A contract's servables from the history, each with the entry that ended it."""

    def spans(self, store: SqliteStore, org: str = "a", **page: Any) -> list[tuple[Any, ...]]:
        return [
            (
                life.began.seq,
                life.began.payload["fqrv"]["releaseVersion"],
                life.ended and (life.ended.seq, life.ended.kind, life.ended.actor),
            )
            for life in store.lifetimes(f"{org}/p/0", began_by="Deployed", ended_by=END, **page)
        ]

    def test_each_deploy_with_the_first_end_after_it_newest_first(
        self, store_factory: StoreFactory
    ) -> None:
        store = store_factory()
        store.append([("Created", {"contract": {"organization": "a"}})], 1)
        store.append([("Deployed", about("a", "v1"))], 2, "ci")  # 2
        store.append([("Deployed", about("b", "v1"))], 3, "ci")  # 3: another contract
        store.append([("Metrics", about("a", "v1")), ("Deployed", about("a", "v2"))], 4)  # 4, 5
        store.append([("Expired", about("a", "v1"))], 6, "ci")  # 6
        store.append([("Deleted", about("a", "v2"))], 7, "admin")  # 7
        store.append([("Deployed", about("a", "v2"))], 8, "ci")  # 8: v2 again

        assert self.spans(store) == [
            (8, "v2", None),
            (5, "v2", (7, "Deleted", "admin")),
            (2, "v1", (6, "Expired", "ci")),
        ]
        assert self.spans(store, "b") == [(3, "v1", None)]
        assert self.spans(store, "c") == []

    def test_pages_by_seq(self, store_factory: StoreFactory) -> None:
        store = store_factory()
        for n in range(1, 8):
            store.append([("Deployed", about("a", f"v{n}"))], n)
        store.append([("Deleted", about("a", "v2"))], 9)

        assert [s[0] for s in self.spans(store, limit=3)] == [7, 6, 5]
        assert [s[0] for s in self.spans(store, before_seq=5, limit=3)] == [4, 3, 2]
        assert self.spans(store, before_seq=3, limit=3) == [
            (2, "v2", (8, "Deleted", None)),
            (1, "v1", None),
        ]

    def test_entries_recorded_before_the_migration_are_found(self, db_path: Path) -> None:
        """A state file of schema 2 (no lineage columns) gets them for what it recorded."""
        db_path.parent.mkdir(parents=True)
        with raw_connection(db_path) as conn:
            for statements in _MIGRATIONS[:2]:
                for statement in statements:
                    conn.execute(statement)
            conn.execute("PRAGMA user_version = 2")
            rows = [("Deployed", about("a", "v1"), "ci"), ("Deleted", about("a", "v1"), "x")]
            conn.executemany(
                "INSERT INTO history (kind, payload, recorded_at_ms, actor) VALUES (?, ?, 1, ?)",
                [(kind, orjson.dumps(payload).decode(), actor) for kind, payload, actor in rows],
            )

        with SqliteStore(db_path) as store:
            assert self.spans(store) == [(1, "v1", (2, "Deleted", "x"))]
            store.append([("Deployed", about("a", "v2"))], 3)
            assert [s[:2] for s in self.spans(store)] == [(3, "v2"), (1, "v1")]
        with raw_connection(db_path) as conn:
            assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)

    def test_a_page_reads_the_index_not_the_contracts_whole_history(
        self, store_factory: StoreFactory, db_path: Path
    ) -> None:
        store_factory().close()
        with raw_connection(db_path) as conn:
            plans = [
                " ".join(str(row[3]) for row in conn.execute("EXPLAIN QUERY PLAN " + q, args))
                for q, args in [
                    (
                        "SELECT seq FROM history WHERE contract_key = ? AND kind = ?"
                        " AND seq < ? ORDER BY seq DESC LIMIT 10",
                        ("a/p/0", "Deployed", 99),
                    ),
                    (
                        "SELECT seq FROM history WHERE contract_key = ? AND release_version = ?"
                        " AND kind = ? AND seq > ? ORDER BY seq LIMIT 1",
                        ("a/p/0", "v1", "Deleted", 1),
                    ),
                ]
            ]
        assert "USING INDEX history_by_contract (contract_key=? AND kind=? AND seq<?)" in plans[0]
        assert (
            "history_by_servable (contract_key=? AND release_version=? AND kind=? AND seq>?)"
            in (plans[1])
        )
