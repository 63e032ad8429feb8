"""The command log times each state-store write, by operation, on a real SQLite store."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from forestflow.control.command_log import WRITE_OPERATIONS, CommandLog
from forestflow.control.events import ContractCreated
from forestflow.domain.fqrv import FQRV, Contract
from forestflow.domain.settings import ContractSettings
from forestflow.store.base import Counters
from forestflow.store.sqlite import SqliteStore, open_store
from forestflow.testing import FakeClock

CONTRACT = Contract("org", "project", 0)
FQRV_1 = FQRV(CONTRACT, "v1")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    store = open_store(tmp_path)
    yield store
    store.close()


@pytest.fixture
def command_log(store: SqliteStore) -> Iterator[CommandLog]:
    command_log = CommandLog(store, FakeClock(), snapshot_every=1)
    yield command_log
    command_log.close()


def counts(command_log: CommandLog) -> dict[str, int]:
    return {op: values.count for op, values in command_log.write_seconds.items()}


class TestWriteTimings:
    async def test_each_write_is_observed_under_its_operation(
        self, command_log: CommandLog
    ) -> None:
        assert counts(command_log) == dict.fromkeys(WRITE_OPERATIONS, 0)
        await command_log.append([ContractCreated(CONTRACT, ContractSettings())], actor=None)
        await command_log.write_counters({FQRV_1: Counters(3, 1)})
        await command_log.forget_counters(FQRV_1)
        assert counts(command_log) == {
            "append": 1,
            "snapshot": 1,  # snapshot_every=1: one after each append
            "counters": 1,
            "forget_counters": 1,
        }
        assert all(values.sum >= 0 for values in command_log.write_seconds.values())

    async def test_a_failed_write_is_observed_too(
        self, command_log: CommandLog, store: SqliteStore
    ) -> None:
        store.close()
        with pytest.raises(Exception):  # noqa: B017, PT011 - whatever the closed store raises
            await command_log.write_counters({FQRV_1: Counters(1, 0)})
        assert counts(command_log)["counters"] == 1

    async def test_a_write_cancelled_before_it_ran_is_not_observed(
        self, command_log: CommandLog
    ) -> None:
        entered, release = threading.Event(), threading.Event()

        def hold() -> None:
            entered.set()
            release.wait()

        holding = asyncio.ensure_future(command_log.run(hold))
        await asyncio.to_thread(entered.wait)  # the store thread is busy: the write waits
        write = asyncio.ensure_future(command_log.write_counters({FQRV_1: Counters(1, 0)}))
        await asyncio.sleep(0)  # yield only: the write reaches the busy store thread
        write.cancel()
        with pytest.raises(asyncio.CancelledError):
            await write
        release.set()
        await holding
        assert counts(command_log)["counters"] == 0
