"""`PredictionEmitter` with real sinks: encoded once, off the serving path, nothing lost
uncounted (SPEC §5, issue 9)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer

from forestflow.domain.frame import Frame
from forestflow.feedback.joiner import FeedbackJoiner
from forestflow.feedback.records import FeedbackRecord
from forestflow.predictionlog.emitter import PredictionEmitter
from forestflow.predictionlog.events import EncodedEvent, PredictionEvent, event_record
from forestflow.predictionlog.files import FileSink
from forestflow.predictionlog.kafka import KafkaSink
from forestflow.predictionlog.sinks import MemorySink, PredictionSink, SinkStats
from forestflow.testing import FakeClock
from tests.integration.predictionlog.test_file_sink import (
    START_MS,
    StallingClock,
    files_in,
    lines_in,
    make_event,
    until,
)
from tests.kafka_broker import MockKafkaCluster

EmitterFactory = Callable[..., Any]


class StuckSink(PredictionSink):
    """A plugin sink whose destination hangs: `write_encoded` blocks until `release`.

    It stands in for a misbehaving third-party sink; the built-in ones never block there."""

    wire_name = "stuck"
    takes_encoded = True

    def __init__(self) -> None:
        self.entered = threading.Event()
        self._go = threading.Event()
        self.records: list[EncodedEvent] = []
        self.dropped = 0

    def release(self) -> None:
        self._go.set()

    def emit(self, event: PredictionEvent) -> None:
        raise AssertionError("the emitter hands this sink encoded events only")

    def write_encoded(self, records: Sequence[EncodedEvent]) -> None:
        self.entered.set()
        self._go.wait(10)
        self.records.extend(records)

    def count_dropped(self, count: int) -> None:
        self.dropped += count

    def stats(self) -> SinkStats:
        n = len(self.records)
        return SinkStats(emitted=n + self.dropped, written=n, dropped=self.dropped)


@pytest.fixture
async def emitter_factory() -> AsyncIterator[EmitterFactory]:
    made: list[PredictionEmitter] = []

    async def make(sinks: list[PredictionSink], *, start: bool = True, **options: Any) -> Any:
        emitter = PredictionEmitter(sinks, **options)
        made.append(emitter)
        if start:
            await emitter.start()
        return emitter

    yield make
    for emitter in made:
        for sink in emitter.sinks:
            if isinstance(sink, StuckSink):
                sink.release()
        await emitter.close()


async def raw_messages(bootstrap: str, topic: str, at_least: int) -> list[Any]:
    """The records on `topic` as aiokafka hands them over: value and key still bytes."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    records: list[Any] = []
    await consumer.start()
    try:
        async with asyncio.timeout(15):
            while len(records) < at_least:
                batch = await consumer.getmany(timeout_ms=200)
                records += [record for part in batch.values() for record in part]
    finally:
        await consumer.stop()
    return records


def file_lines(directory: Path) -> list[bytes]:
    """Every line of every file, in order, without its newline."""
    lines: list[bytes] = []
    for path in files_in(directory):
        data = path.read_bytes()
        assert data.endswith(b"\n")
        lines += data.split(b"\n")[:-1]
    return lines


def in_thread(action: Callable[[], object]) -> bool:
    """Run `action` in a thread; True if it finished within 10 s (a blocked emit would not)."""
    thread = threading.Thread(target=action, daemon=True)
    thread.start()
    thread.join(10)
    return not thread.is_alive()


class TestEncodedOnce:
    async def test_a_file_line_and_the_kafka_message_of_an_event_are_the_same_bytes(
        self,
        tmp_path: Path,
        kafka_broker: MockKafkaCluster,
        kafka_topic_factory: Any,
        emitter_factory: EmitterFactory,
    ) -> None:
        topic = kafka_topic_factory(partitions=2)
        files = FileSink(tmp_path / "predictions")
        kafka = KafkaSink(kafka_broker.bootstrap, topic=topic)
        emitter = await emitter_factory([files, kafka])
        events = [
            dataclasses.replace(make_event(i), key=None if i % 4 == 3 else f"k{i}")
            for i in range(12)
        ]
        for event in events:
            emitter.emit(event)
        await emitter.close()  # drains the emitter, then flushes both sinks

        lines = file_lines(tmp_path / "predictions")
        messages = sorted(
            await raw_messages(kafka_broker.bootstrap, topic, at_least=12),
            key=lambda record: record.timestamp,
        )
        assert [message.value for message in messages] == lines
        assert [json.loads(line) for line in lines] == [event_record(e) for e in events]
        assert [m.key for m in messages] == [
            None if e.key is None else e.key.encode() for e in events
        ]
        assert {tuple(m.headers) for m in messages} == {
            (("schemaVersion", b"1"), ("fqrv", b"samples.energy_output.0.v1"))
        }
        for sink in (files, kafka):
            assert sink.stats() == SinkStats(emitted=12, written=12, dropped=0)
        assert emitter.stats() == SinkStats(emitted=12, written=12, dropped=0)

    async def test_an_unencodable_event_is_dropped_and_counted_for_every_sink(
        self, tmp_path: Path, emitter_factory: EmitterFactory
    ) -> None:
        first, second = FileSink(tmp_path / "a"), FileSink(tmp_path / "b")
        emitter = await emitter_factory([first, second])
        odd = Frame({"thing": np.array([{1, 2}], dtype=object)})  # a set has no JSON form
        emitter.emit(make_event(0))
        emitter.emit(dataclasses.replace(make_event(1), request=odd))
        emitter.emit(make_event(2))
        await emitter.close()

        for sink, directory in ((first, tmp_path / "a"), (second, tmp_path / "b")):
            assert sink.stats() == SinkStats(emitted=3, written=2, dropped=1)
            assert [r["key"] for r in lines_in(directory)] == ["k0", "k2"]
        assert emitter.stats() == SinkStats(emitted=3, written=2, dropped=1)


class TestNeverBlocking:
    @staticmethod
    async def _hung(
        tmp_path: Path, emitter_factory: EmitterFactory
    ) -> tuple[StuckSink, FileSink, PredictionEmitter]:
        """An emitter (buffer of 5) whose thread hangs in a stuck sink, delivering event 0."""
        stuck, files = StuckSink(), FileSink(tmp_path / "predictions")
        emitter = await emitter_factory([stuck, files], buffer_size=5)
        emitter.emit(make_event(0))
        assert await asyncio.to_thread(stuck.entered.wait, 10)
        return stuck, files, emitter

    async def test_emit_does_not_wait_for_a_stuck_sink_and_counts_what_it_drops(
        self, tmp_path: Path, emitter_factory: EmitterFactory
    ) -> None:
        stuck, files, emitter = await self._hung(tmp_path, emitter_factory)

        assert in_thread(lambda: [emitter.emit(make_event(i)) for i in range(1, 21)])

        # 1 being delivered, 5 buffered, 15 dropped: counted for each sink they were for
        assert emitter.stats() == SinkStats(emitted=21, written=0, dropped=15)
        assert files.stats() == SinkStats(emitted=15, written=0, dropped=15)
        assert stuck.stats() == SinkStats(emitted=15, written=0, dropped=15)
        stuck.release()
        await emitter.close()
        assert files.stats() == SinkStats(emitted=21, written=6, dropped=15)
        assert [r["key"] for r in lines_in(tmp_path / "predictions")] == [f"k{i}" for i in range(6)]

    async def test_many_events_at_once_fill_the_buffer_and_what_does_not_fit_is_dropped(
        self, tmp_path: Path, emitter_factory: EmitterFactory
    ) -> None:
        stuck, _, emitter = await self._hung(tmp_path, emitter_factory)

        emitter.emit_many([make_event(i) for i in range(1, 4)])
        emitter.emit_many([make_event(i) for i in range(4, 8)])  # room for 2 of 4

        assert emitter.stats() == SinkStats(emitted=8, written=0, dropped=2)
        assert stuck.stats() == SinkStats(emitted=2, written=0, dropped=2)
        stuck.release()
        await emitter.close()
        assert [r["key"] for r in lines_in(tmp_path / "predictions")] == [f"k{i}" for i in range(6)]

    async def test_a_file_sink_with_a_stuck_writer_holds_up_neither_emit_nor_other_sinks(
        self, tmp_path: Path, emitter_factory: EmitterFactory
    ) -> None:
        clock = StallingClock(START_MS)  # the writer reads it before each batch
        stuck = FileSink(tmp_path / "stuck", buffer_size=5, clock=clock)
        healthy = FileSink(tmp_path / "healthy")
        emitter = await emitter_factory([stuck, healthy])
        clock.stall()
        emitter.emit(make_event(0))
        assert await asyncio.to_thread(clock.entered.wait, 10)  # the writer hangs

        assert in_thread(lambda: [emitter.emit(make_event(i)) for i in range(1, 30)])

        await until(lambda: healthy.stats().written == 30, "the healthy sink writes all")
        await until(lambda: stuck.stats().emitted == 30, "the stuck sink got every event")
        assert stuck.stats() == SinkStats(emitted=30, written=0, dropped=24)  # 1 held, 5 kept
        clock.release()
        await emitter.close()
        assert stuck.stats() == SinkStats(emitted=30, written=6, dropped=24)


class TestLifecycle:
    async def test_close_delivers_everything_emitted_before_it(
        self, tmp_path: Path, emitter_factory: EmitterFactory
    ) -> None:
        files = FileSink(tmp_path / "predictions", buffer_size=100_000)
        emitter = await emitter_factory([files], buffer_size=100_000)
        for i in range(3000):
            emitter.emit(make_event(i))
        await emitter.close()
        emitter.emit(make_event(3000))  # after close: dropped, and counted for the sink

        assert [r["key"] for r in lines_in(tmp_path / "predictions")] == [
            f"k{i}" for i in range(3000)
        ]
        assert emitter.stats() == SinkStats(emitted=3001, written=3000, dropped=1)
        assert files.stats() == SinkStats(emitted=3001, written=3000, dropped=1)

    async def test_events_wait_for_start_and_a_never_started_emitter_counts_them_dropped(
        self, tmp_path: Path, emitter_factory: EmitterFactory
    ) -> None:
        files = FileSink(tmp_path / "predictions")
        emitter = await emitter_factory([files], start=False, buffer_size=2)
        for i in range(3):
            emitter.emit(make_event(i))
        assert emitter.stats() == SinkStats(emitted=3, written=0, dropped=1)
        await emitter.close()
        assert emitter.stats() == SinkStats(emitted=3, written=0, dropped=3)
        assert files.stats() == SinkStats(emitted=3, written=0, dropped=3)

    async def test_flush_waits_for_delivery(
        self, tmp_path: Path, emitter_factory: EmitterFactory
    ) -> None:
        files = FileSink(tmp_path / "predictions")
        emitter = await emitter_factory([files])
        for i in range(50):
            emitter.emit(make_event(i))
        assert await emitter.flush()
        assert files.stats().emitted == 50
        assert emitter.stats() == SinkStats(emitted=50, written=50, dropped=0)


class TestShadowCpu:
    async def test_only_shadow_events_are_counted_for_the_shadow_budget(
        self, tmp_path: Path, emitter_factory: EmitterFactory
    ) -> None:
        emitter = await emitter_factory([FileSink(tmp_path / "predictions")])
        for i in range(200):
            emitter.emit(make_event(i))
        assert await emitter.flush()
        served_only = emitter.shadow_cpu_seconds

        for i in range(200):
            emitter.emit(make_event(i, served=False))
        assert await emitter.flush()

        assert served_only == 0.0
        assert emitter.shadow_cpu_seconds > 0.0


class TestSinksThatTakeEvents:
    async def test_they_get_each_event_at_once_on_the_callers_thread(
        self, emitter_factory: EmitterFactory
    ) -> None:
        memory = MemorySink()
        emitter = await emitter_factory([memory], start=False)
        event = make_event(0)
        emitter.emit(event)
        assert list(memory.events) == [event]
        assert emitter.stats() == SinkStats(emitted=1, written=1, dropped=0)

        more = [make_event(i) for i in range(1, 4)]
        emitter.emit_many(more)
        assert list(memory.events) == [event, *more]
        assert emitter.stats() == SinkStats(emitted=4, written=4, dropped=0)


class TestFeedback:
    async def test_feedback_right_after_emit_joins_even_while_the_emitter_lags(
        self, emitter_factory: EmitterFactory
    ) -> None:
        joiner = FeedbackJoiner(clock=FakeClock(START_MS))
        stuck = StuckSink()
        emitter = await emitter_factory([stuck, joiner])
        emitter.emit(make_event(0))
        assert await asyncio.to_thread(stuck.entered.wait, 10)  # the emitter's thread hangs
        emitter.emit(make_event(1))  # served: its response goes out now

        record = FeedbackRecord("k1", (401.0, 401.0))  # one value per row of the prediction
        outcome = joiner.join(make_event(1).fqrv.contract, [record])

        assert outcome.matched == 1
        assert len(stuck.records) == 0  # the emitter had not got to it

    async def test_the_emitters_thread_indexes_predictions_without_any_join(
        self, emitter_factory: EmitterFactory
    ) -> None:
        clock = FakeClock(START_MS)
        joiner = FeedbackJoiner(clock=clock, intake_size=10)
        emitter = await emitter_factory([joiner])
        for round_ in range(5):
            for i in range(10):
                emitter.emit(make_event(round_ * 10 + i))
            assert await emitter.flush()
        # five intakes' worth went through an intake of ten: none was refused
        assert joiner.stats() == SinkStats(emitted=50, written=50, dropped=0)
