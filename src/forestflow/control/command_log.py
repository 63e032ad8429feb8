"""The durable command log: events appended to the store, then applied to the state.

An event is applied to the in-memory `RegistryState` only once the store has it, so an
acknowledged change is never lost. The store is used from one thread of its own: it
serialises access anyway, and store work never waits behind an artifact fetch.

Each write is timed on that thread, around the store call alone (not its wait for the
thread), into `write_seconds` by operation (`/metrics`: `forestflow_store_write_duration_seconds`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from forestflow.clock import Clock
from forestflow.control.events import (
    Event,
    ServableDeleted,
    ServableDeployed,
    ServableExpired,
    from_record,
    to_record,
)
from forestflow.control.state import RegistryState
from forestflow.control.telemetry import LATENCY_BUCKETS_S, Histogram
from forestflow.domain.fqrv import FQRV, Contract
from forestflow.store.base import Counters, HistoryEntry, Lifetime, Snapshot, Store

log = logging.getLogger(__name__)

T = TypeVar("T")

WRITE_OPERATIONS = ("append", "snapshot", "counters", "forget_counters")
"""The store writes that are timed: events, state snapshots, counter upserts and deletes."""


def contract_key(contract: Contract) -> str:
    """A stable string key for `contract` (names cannot contain '/')."""
    return f"{contract.organization}/{contract.project}/{contract.contract_number}"


def servable_key(fqrv: FQRV) -> str:
    """A stable string key for `fqrv` (names cannot contain '/')."""
    return f"{contract_key(fqrv.contract)}/{fqrv.release_version}"


class CommandLog:
    """The state as the store records it, and the only way to change it."""

    def __init__(self, store: Store, clock: Clock, *, snapshot_every: int = 1000) -> None:
        self._store = store
        self._clock = clock
        self._snapshot_every = snapshot_every
        self._since_snapshot = 0
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="forestflow-store")
        self.state = RegistryState()
        self.write_seconds = {op: Histogram(LATENCY_BUCKETS_S) for op in WRITE_OPERATIONS}
        """How long each store write took, by operation (read on the event loop)."""

    async def append(self, events: Sequence[Event], actor: str | None) -> None:
        """Record `events` durably in one transaction (with `actor` in the history), then
        apply them. A failed snapshot afterwards is logged, not raised: the events are in."""
        records = [to_record(event) for event in events]
        seq = await self._write("append", self._store.append, records, self._clock.now_ms(), actor)
        for event in events:
            self.state.apply(event)
        self._since_snapshot += len(events)
        if self._since_snapshot < self._snapshot_every:
            return
        try:
            snapshot = Snapshot(seq, self.state.to_snapshot())
            await self._write("snapshot", self._store.write_snapshot, snapshot)
        except Exception as error:
            log.warning("could not write a state snapshot (retried later): %s", error)
        else:
            self._since_snapshot = 0

    async def replay(self) -> RegistryState:
        """Rebuild the state from the newest snapshot and the events after it."""
        snapshot = await self.run(self._store.latest_snapshot)
        state = RegistryState.from_snapshot(snapshot.payload) if snapshot else RegistryState()
        after = snapshot.seq if snapshot else 0
        for event in await self.run(lambda: list(self._store.events(after))):
            state.apply(from_record(event.kind, event.payload))
        self.state = state
        return state

    async def read_counters(self) -> dict[FQRV, Counters]:
        """The scoring counters last flushed, for the servables of the state."""
        rows = await self.run(self._store.read_counters)
        servables = self.state.servables()
        found = ((s.fqrv, rows.get(servable_key(s.fqrv))) for s in servables)
        return {fqrv: row for fqrv, row in found if row is not None}

    async def write_counters(self, counters: dict[FQRV, Counters]) -> None:
        """Upsert scoring counters."""
        rows = {servable_key(fqrv): row for fqrv, row in counters.items()}
        await self._write("counters", self._store.write_counters, rows)

    async def forget_counters(self, fqrv: FQRV) -> None:
        """Delete the stored counters of `fqrv`."""
        await self._write("forget_counters", self._store.delete_counters, servable_key(fqrv))

    def history(self, *, before_seq: int | None = None, limit: int = 100) -> list[HistoryEntry]:
        """Recorded commands and automatic changes, newest first."""
        return self._store.history(before_seq=before_seq, limit=limit)

    async def lifetimes(
        self, contract: Contract, *, before_seq: int | None = None, limit: int = 100
    ) -> list[Lifetime]:
        """The servables `contract` ever had, newest deploy first: each deploy's history
        entry with the expiry or deletion that ended it, if any."""
        return await self.run(
            functools.partial(
                self._store.lifetimes,
                contract_key(contract),
                began_by=ServableDeployed.wire_name,
                ended_by=(ServableExpired.wire_name, ServableDeleted.wire_name),
                before_seq=before_seq,
                limit=limit,
            )
        )

    async def run(self, call: Callable[..., T], *args: Any) -> T:
        """Run a blocking store call on the store's thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, functools.partial(call, *args))

    async def _write(self, operation: str, call: Callable[..., T], *args: Any) -> T:
        """Run a store write on the store's thread, timing the call itself there; the time
        is observed here, on the event loop, whether the write succeeded or failed."""
        elapsed: list[float] = []

        def timed() -> T:
            started = time.perf_counter()
            try:
                return call(*args)
            finally:
                elapsed.append(time.perf_counter() - started)

        try:
            return await self.run(timed)
        finally:
            for seconds in elapsed:  # empty when cancelled before the write ran
                self.write_seconds[operation].observe(seconds)

    def close(self) -> None:
        """Stop the store thread once its current work is done."""
        self._thread.shutdown(wait=True)
