"""`FileSink` on a real disk: what it writes, how it rotates, and how it drops (SPEC §5)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pytest

from forestflow.domain.frame import Frame
from forestflow.predictionlog.events import SCHEMA_VERSION, PredictionEvent, event_record
from forestflow.predictionlog.files import FileSink, file_name
from forestflow.predictionlog.sinks import PredictionSink, SinkStats
from forestflow.testing import FakeClock
from tests.builders import make_fqrv, make_frame

REPO = Path(__file__).resolve().parents[3]
START_MS = 1_700_000_000_000
SinkFactory = Callable[..., Awaitable[FileSink]]


def make_event(i: int, *, served: bool = True, release: str = "v1") -> PredictionEvent:
    """Event `i`: two rows of a float (NaN in row 2), a string (None), int64 and bytes."""
    request = make_frame(
        {"customer": f"c{i}"},
        TemperatureCelcius=[20.0 + i, math.nan],
        site=[f"site-{i}", None],
        blob=[b"\x00\xff", f"b{i}".encode()],
    )
    request = Frame(
        {**request.columns, "count": np.array([i, 2**40 + i], dtype=np.int64)}, request.configs
    )
    prediction = Frame({"prediction": np.array([400.0 + i, math.nan])})
    return PredictionEvent(
        fqrv=make_fqrv(release),
        served_request=served,
        timestamp_ms=START_MS + i,
        request=request,
        prediction=prediction,
        latency_ms=1.5,
        key=f"k{i}",
    )


def files_in(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.jsonl"))


def lines_in(directory: Path) -> list[dict[str, Any]]:
    """Every line of every file, in file-name order; each must be a whole JSON object."""
    records: list[dict[str, Any]] = []
    for path in files_in(directory):
        text = path.read_text()
        assert text.endswith("\n"), f"{path.name} ends inside a line"
        records.extend(json.loads(line) for line in text.splitlines())
    return records


async def until(condition: Callable[[], bool], what: str) -> None:
    """Poll `condition` (the writer is another thread) for up to 10 s."""
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0)  # yield only: the writer thread moves the counters


async def written(sink: FileSink, n: int) -> None:
    await until(lambda: sink.stats().written >= n, f"{n} events written")


@pytest.fixture
async def sink_factory(tmp_path: Path) -> AsyncIterator[SinkFactory]:
    made: list[FileSink] = []

    async def make(
        directory: Path | None = None, *, start: bool = True, **options: Any
    ) -> FileSink:
        """A FileSink in `directory` (default tmp/predictions), started unless told not to."""
        sink = FileSink(directory or tmp_path / "predictions", **options)
        made.append(sink)
        if start:
            await sink.start()
        return sink

    yield make
    for sink in made:
        await sink.close()


class TestRegistration:
    def test_files_is_the_registered_file_sink(self) -> None:
        assert PredictionSink.registry.get("files") is FileSink
        assert FileSink.wire_name == "files"


class TestReadingBack:
    async def test_pandas_reads_every_event_as_emitted(
        self, sink_factory: SinkFactory, tmp_path: Path
    ) -> None:
        sink = await sink_factory()
        for i in range(30):
            sink.emit(make_event(i, served=i % 3 != 0, release=f"r{i % 2}"))
        await sink.close()

        events = pd.concat(
            [pd.read_json(path, lines=True) for path in files_in(tmp_path / "predictions")],
            ignore_index=True,
        )
        assert len(events) == 30
        assert list(events["key"]) == [f"k{i}" for i in range(30)]
        assert set(events["schemaVersion"]) == {SCHEMA_VERSION}
        assert list(events["servedRequest"]) == [i % 3 != 0 for i in range(30)]
        assert [f["releaseVersion"] for f in events["fqrv"]] == [f"r{i % 2}" for i in range(30)]
        assert events["fqrv"][0]["contract"] == {
            "organization": "samples",
            "project": "energy_output",
            "contractNumber": 0,
        }
        # pandas turns a column named timestamp* into datetimes (UTC, naive)
        assert events["timestampMS"][7] == pd.Timestamp(START_MS + 7, unit="ms")
        request = events["request"][7]
        assert request["configs"] == {"customer": "c7"}
        assert request["features"] == {
            "TemperatureCelcius": [27.0, None],
            "site": ["site-7", None],
            "blob": ["AP8=", "Yjc="],
            "count": [7, 2**40 + 7],
        }
        assert events["prediction"][7] == {"prediction": [407.0, None]}
        assert sink.stats() == SinkStats(emitted=30, written=30, dropped=0)

    async def test_duckdb_reads_the_files_while_the_sink_is_still_open(
        self, sink_factory: SinkFactory, tmp_path: Path
    ) -> None:
        directory = tmp_path / "predictions"
        sink = await sink_factory(directory, max_file_bytes=4096)
        for i in range(40):
            sink.emit(make_event(i, served=i % 2 == 0))
        await written(sink, 40)
        assert len(files_in(directory)) > 1  # rotated files plus the active one

        rows = duckdb.execute(
            f"""
            SELECT key, schemaVersion, servedRequest, fqrv.releaseVersion AS release,
                   request.features.TemperatureCelcius AS temperature,
                   request.features.site AS site, request.features.count AS count,
                   request.configs.customer AS customer, prediction.prediction AS prediction
            FROM read_json('{directory}/*.jsonl', format = 'newline_delimited')
            ORDER BY timestampMS
            """
        ).fetchall()
        assert len(rows) == 40
        assert rows[5] == (
            "k5",
            SCHEMA_VERSION,
            False,
            "v1",
            [25.0, None],
            ["site-5", None],
            [5, 2**40 + 5],
            "c5",
            [405.0, None],
        )
        assert [row[0] for row in rows] == [f"k{i}" for i in range(40)]

        sink.emit(make_event(40))  # the sink keeps appending to the file duckdb just read
        await written(sink, 41)
        total = duckdb.execute(f"SELECT count(*) FROM read_json('{directory}/*.jsonl')").fetchall()
        assert total == [(41,)]


class TestRotation:
    async def test_size_limit_splits_files_at_whole_lines_keeping_order(
        self, sink_factory: SinkFactory, tmp_path: Path
    ) -> None:
        directory = tmp_path / "predictions"
        line = len(json.dumps(event_record(make_event(0)), separators=(",", ":"))) + 1
        limit = 3 * line + line // 2  # about three lines per file
        sink = await sink_factory(directory, max_file_bytes=limit)
        for i in range(25):
            sink.emit(make_event(i))
            if i % 4 == 0:
                await written(sink, i + 1)  # several batches, not one
        await sink.close()

        files = files_in(directory)
        assert len(files) >= 25 // 3
        assert all(path.stat().st_size <= limit for path in files)
        assert [r["key"] for r in lines_in(directory)] == [f"k{i}" for i in range(25)]
        assert sink.stats() == SinkStats(emitted=25, written=25, dropped=0)

    async def test_a_line_longer_than_the_limit_gets_a_file_of_its_own(
        self, sink_factory: SinkFactory, tmp_path: Path
    ) -> None:
        directory = tmp_path / "predictions"
        sink = await sink_factory(directory, max_file_bytes=10)
        for i in range(4):
            sink.emit(make_event(i))
        await sink.close()
        files = files_in(directory)
        assert len(files) == 4
        assert [len(path.read_text().splitlines()) for path in files] == [1, 1, 1, 1]
        assert [r["key"] for r in lines_in(directory)] == ["k0", "k1", "k2", "k3"]

    async def test_age_limit_starts_a_new_file_by_the_sink_clock(
        self, sink_factory: SinkFactory, tmp_path: Path
    ) -> None:
        directory = tmp_path / "predictions"
        clock = FakeClock(START_MS)
        sink = await sink_factory(directory, max_file_age_s=60, clock=clock)
        for i in range(3):
            sink.emit(make_event(i))
        await written(sink, 3)
        clock.advance(seconds=59.999)
        sink.emit(make_event(3))
        await written(sink, 4)
        assert len(files_in(directory)) == 1
        clock.advance(ms=1)
        sink.emit(make_event(4))
        sink.emit(make_event(5))
        await sink.close()

        assert [p.name for p in files_in(directory)] == [
            file_name(START_MS, 0),
            file_name(START_MS + 60_000, 1),
        ]
        first, second = files_in(directory)
        assert [json.loads(x)["key"] for x in first.read_text().splitlines()] == [
            "k0",
            "k1",
            "k2",
            "k3",
        ]
        assert [json.loads(x)["key"] for x in second.read_text().splitlines()] == ["k4", "k5"]

    def test_file_names_sort_in_time_order(self) -> None:
        names = [
            file_name(START_MS, 0),
            file_name(START_MS, 9),
            file_name(START_MS, 10),
            file_name(START_MS + 1, 0),
            file_name(START_MS + 1000, 0),
            file_name(START_MS + 86_400_000, 0),
        ]
        assert sorted(names) == names
        assert names[0] == "predictions-20231114T221320.000Z-000000.jsonl"
        assert re.fullmatch(r"predictions-\d{8}T\d{6}\.\d{3}Z-\d{6}\.jsonl", names[-1])

    async def test_a_restart_never_appends_to_an_earlier_file(
        self, sink_factory: SinkFactory, tmp_path: Path
    ) -> None:
        directory = tmp_path / "predictions"
        clock = FakeClock(START_MS)  # the same instant twice: only the sequence differs
        for run in range(2):
            sink = await sink_factory(directory, clock=clock)
            sink.emit(make_event(run))
            await sink.close()
        assert [p.name for p in files_in(directory)] == [
            file_name(START_MS, 0),
            file_name(START_MS, 1),
        ]
        assert [r["key"] for r in lines_in(directory)] == ["k0", "k1"]

    async def test_max_files_deletes_the_oldest(
        self, sink_factory: SinkFactory, tmp_path: Path
    ) -> None:
        directory = tmp_path / "predictions"
        sink = await sink_factory(directory, max_file_bytes=10, max_files=2)
        for i in range(5):
            sink.emit(make_event(i))
        await sink.close()
        assert len(files_in(directory)) == 2
        assert [r["key"] for r in lines_in(directory)] == ["k3", "k4"]


class TestBuffering:
    async def test_a_full_buffer_drops_and_counts_then_start_writes_the_rest(
        self, sink_factory: SinkFactory, tmp_path: Path
    ) -> None:
        sink = await sink_factory(start=False, buffer_size=5)
        for i in range(8):
            sink.emit(make_event(i))
        assert sink.stats() == SinkStats(emitted=8, written=0, dropped=3)
        assert not (tmp_path / "predictions").exists()

        await sink.start()
        await written(sink, 5)
        assert sink.stats() == SinkStats(emitted=8, written=5, dropped=3)
        assert [r["key"] for r in lines_in(tmp_path / "predictions")] == [f"k{i}" for i in range(5)]

    async def test_close_drains_the_buffer(self, sink_factory: SinkFactory, tmp_path: Path) -> None:
        sink = await sink_factory()
        for i in range(500):
            sink.emit(make_event(i))
        await sink.close()
        assert sink.stats() == SinkStats(emitted=500, written=500, dropped=0)
        assert len(lines_in(tmp_path / "predictions")) == 500

    async def test_events_after_close_are_dropped_and_counted(
        self, sink_factory: SinkFactory, tmp_path: Path
    ) -> None:
        sink = await sink_factory()
        sink.emit(make_event(0))
        await sink.close()
        await sink.close()  # idempotent
        sink.emit(make_event(1))
        await sink.start()  # a closed sink stays closed
        sink.emit(make_event(2))
        assert sink.stats() == SinkStats(emitted=3, written=1, dropped=2)
        assert [r["key"] for r in lines_in(tmp_path / "predictions")] == ["k0"]

    async def test_closing_a_sink_never_started_drops_its_buffer(
        self, sink_factory: SinkFactory, tmp_path: Path
    ) -> None:
        sink = await sink_factory(start=False)
        sink.emit(make_event(0))
        await sink.close()
        assert sink.stats() == SinkStats(emitted=1, written=0, dropped=1)
        assert not (tmp_path / "predictions").exists()

    async def test_close_gives_up_on_a_stuck_writer_after_its_timeout(
        self, sink_factory: SinkFactory, tmp_path: Path
    ) -> None:
        clock = StallingClock(START_MS)
        sink = await sink_factory(clock=clock)
        sink.emit(make_event(0))
        await written(sink, 1)
        clock.stall()
        sink.emit(make_event(1))  # the writer takes it and blocks on the clock
        assert await asyncio.to_thread(clock.entered.wait, 10)
        for i in range(2, 5):
            sink.emit(make_event(i))

        await asyncio.wait_for(sink.close(timeout_s=0.05), timeout=5)
        assert sink.stats() == SinkStats(emitted=5, written=1, dropped=3)

        clock.release()  # the writer finishes the batch it held, then stops
        await written(sink, 2)
        assert sink.stats() == SinkStats(emitted=5, written=2, dropped=3)
        assert [r["key"] for r in lines_in(tmp_path / "predictions")] == ["k0", "k1"]


class TestFailures:
    async def test_an_unwritable_directory_drops_and_counts_without_raising(
        self, sink_factory: SinkFactory, tmp_path: Path
    ) -> None:
        not_a_directory = tmp_path / "taken"
        not_a_directory.write_text("a file, not a directory")
        sink = await sink_factory(not_a_directory)
        for i in range(5):
            sink.emit(make_event(i))
        await sink.close()
        assert sink.stats() == SinkStats(emitted=5, written=0, dropped=5)
        assert not_a_directory.read_text() == "a file, not a directory"

    async def test_writing_resumes_when_the_directory_becomes_usable(
        self, sink_factory: SinkFactory, tmp_path: Path
    ) -> None:
        directory = tmp_path / "predictions"
        directory.write_text("in the way")
        sink = await sink_factory(directory)
        sink.emit(make_event(0))
        await until(lambda: sink.stats().dropped == 1, "the first event dropped")

        directory.unlink()
        sink.emit(make_event(1))
        await sink.close()
        assert sink.stats() == SinkStats(emitted=2, written=1, dropped=1)
        assert [r["key"] for r in lines_in(directory)] == ["k1"]

    async def test_an_unencodable_event_is_dropped_alone(
        self, sink_factory: SinkFactory, tmp_path: Path
    ) -> None:
        sink = await sink_factory()
        odd = make_event(1)
        # a set: nothing in the schema encodes it (a flavor returning odd objects)
        odd_request = Frame({"thing": np.array([{1, 2}], dtype=object)})
        sink.emit(make_event(0))
        sink.emit(dataclasses.replace(odd, request=odd_request))
        sink.emit(make_event(2))
        await sink.close()
        assert sink.stats() == SinkStats(emitted=3, written=2, dropped=1)
        assert [r["key"] for r in lines_in(tmp_path / "predictions")] == ["k0", "k2"]


class TestDocumentation:
    async def test_the_reading_snippets_of_the_docs_run(
        self, sink_factory: SinkFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        data_dir = tmp_path / "data"
        sink = await sink_factory(data_dir / "predictions", max_file_bytes=4096)
        for i in range(12):
            sink.emit(make_event(i, served=i % 2 == 0))
        await written(sink, 12)  # the docs read the files of a running server

        doc = (REPO / "docs" / "prediction-log.md").read_text()
        snippets = re.findall(r"```python\n(.*?)```", doc, flags=re.DOTALL)
        assert len(snippets) >= 2
        monkeypatch.chdir(tmp_path)  # the snippets use the default data dir, ./data
        namespace: dict[str, Any] = {}
        for snippet in snippets:
            exec(snippet, namespace)  # running our own docs is the point
        assert len(namespace["events"]) == 12
        assert len(namespace["rows"]) == 24  # two rows per request


class StallingClock(FakeClock):
    """A fake clock whose reads can be made to block, standing in for a stuck disk.

    The writer reads its clock before each batch (to check the file's age), so a stalled
    clock holds the writer in the middle of a batch.
    """

    def __init__(self, now_ms: int) -> None:
        super().__init__(now_ms)
        self.entered = threading.Event()
        self._go = threading.Event()
        self._go.set()

    def stall(self) -> None:
        """Make the next reads block until `release`."""
        self._go.clear()

    def release(self) -> None:
        """Let blocked and later reads through."""
        self._go.set()

    def now_ms(self) -> int:
        """The fake time, once reads are allowed."""
        if not self._go.is_set():
            self.entered.set()
            self._go.wait(10)
        return super().now_ms()
