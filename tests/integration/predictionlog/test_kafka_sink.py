"""KafkaSink against a real Kafka-protocol broker (librdkafka's mock cluster), read by aiokafka."""

from __future__ import annotations

import asyncio
import logging
import math
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner

from forestflow.predictionlog.events import PredictionEvent, event_record
from forestflow.predictionlog.kafka import KafkaSink
from forestflow.predictionlog.sinks import PredictionSink, SinkStats
from tests.builders import make_fqrv, make_frame
from tests.kafka_broker import MockKafkaCluster, consume_topic

SINK_LOGGER = "forestflow.predictionlog.kafka"
# the sink holds events back this long, so they are still pending when a test looks
HOLD_BACK = {"linger.ms": "3000"}
# reconnect quickly once the brokers are back (librdkafka backs off up to 10 s by default)
FAST_RECONNECT = {"reconnect.backoff.max.ms": "300"}


def make_event(key: str | None, *, index: int = 0, contract_number: int = 0) -> PredictionEvent:
    """An event with typical content: floats with a missing value, text, configs."""
    return PredictionEvent(
        fqrv=make_fqrv("v1", contract_number=contract_number),
        served_request=index % 2 == 0,
        timestamp_ms=1_780_000_000_000 + index,
        request=make_frame(
            configs={"customer": f"c{index}"}, x=[1.5, math.nan], city=["Oslo", None]
        ),
        prediction=make_frame(y=[0.25 * index, 0.75]),
        latency_ms=1.23456,
        key=key,
    )


async def holds_within(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Poll `condition` until it holds (True) or `timeout_s` passed (False)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0)  # yield only: the counters move on librdkafka's threads
    return True


async def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    """Poll `condition` until it holds; fail after `timeout_s`."""
    assert await holds_within(condition, timeout_s), f"not within {timeout_s} s: {what}"


@pytest.fixture
async def kafka_sink_factory(kafka_broker: MockKafkaCluster) -> AsyncIterator[Callable[..., Any]]:
    """Started KafkaSinks on the test broker, closed after the test."""
    sinks: list[KafkaSink] = []

    async def make(**options: Any) -> KafkaSink:
        sink = KafkaSink(kafka_broker.bootstrap, **options)
        sinks.append(sink)
        await sink.start()
        return sink

    yield make
    for sink in sinks:
        await sink.close(flush_timeout_s=1.0)


class TestDelivery:
    async def test_events_arrive_keyed_in_the_documented_schema(
        self, kafka_broker: MockKafkaCluster, kafka_topic_factory: Any, kafka_sink_factory: Any
    ) -> None:
        topic = kafka_topic_factory(partitions=3)
        sink = await kafka_sink_factory(topic=topic)
        events = [
            make_event(key, index=i) for i, key in enumerate(["a-1", "b-2", "a-1", None, "c-3"])
        ]
        for event in events:
            sink.emit(event)
        await wait_until(lambda: sink.stats().written == 5, "5 events acknowledged")

        records = await consume_topic(kafka_broker.bootstrap, topic, at_least=5)
        records.sort(key=lambda record: record.timestamp_ms)
        assert [r.key for r in records] == ["a-1", "b-2", "a-1", None, "c-3"]
        assert [r.value for r in records] == [event_record(event) for event in events]
        assert [r.timestamp_ms for r in records] == [event.timestamp_ms for event in events]
        assert {tuple(r.headers.items()) for r in records} == {
            (("schemaVersion", b"1"), ("fqrv", b"samples.energy_output.0.v1"))
        }
        # one key, one partition, in emission order
        same_key = [r for r in records if r.key == "a-1"]
        assert same_key[0].partition == same_key[1].partition
        assert same_key[0].offset < same_key[1].offset
        assert sink.stats() == SinkStats(emitted=5, written=5, dropped=0)

    async def test_keys_land_where_java_and_aiokafka_clients_put_them(
        self, kafka_broker: MockKafkaCluster, kafka_topic_factory: Any, kafka_sink_factory: Any
    ) -> None:
        topic = kafka_topic_factory(partitions=3)
        sink = await kafka_sink_factory(topic=topic)
        keys = [f"customer-{i}" for i in range(20)]
        for i, key in enumerate(keys):
            sink.emit(make_event(key, index=i))

        records = await consume_topic(kafka_broker.bootstrap, topic, at_least=20)
        murmur2 = DefaultPartitioner()
        expected = {key: murmur2(key.encode(), [0, 1, 2], [0, 1, 2]) for key in keys}
        assert {r.key: r.partition for r in records} == expected
        assert len(set(expected.values())) == 3  # the keys do spread over every partition

    async def test_contract_topics_route_per_contract_and_others_use_the_default(
        self, kafka_broker: MockKafkaCluster, kafka_topic_factory: Any, kafka_sink_factory: Any
    ) -> None:
        default, special = kafka_topic_factory(), kafka_topic_factory()
        sink = await kafka_sink_factory(
            topic=default, contract_topics={"samples.energy_output.7": special}
        )
        sink.emit(make_event("to-default", contract_number=0))
        sink.emit(make_event("to-special", index=1, contract_number=7))
        sink.emit(make_event("to-default-too", index=2, contract_number=8))

        on_default = await consume_topic(kafka_broker.bootstrap, default, at_least=2)
        on_special = await consume_topic(kafka_broker.bootstrap, special, at_least=1)
        assert sorted(r.key or "" for r in on_default) == ["to-default", "to-default-too"]
        assert [(r.key, r.value["fqrv"]["contract"]["contractNumber"]) for r in on_special] == [
            ("to-special", 7)
        ]
        assert on_special[0].headers["fqrv"] == b"samples.energy_output.7.v1"

    async def test_close_delivers_pending_events_then_drops_later_ones(
        self, kafka_broker: MockKafkaCluster, kafka_topic_factory: Any, kafka_sink_factory: Any
    ) -> None:
        topic = kafka_topic_factory()
        sink = await kafka_sink_factory(topic=topic, client_config=HOLD_BACK)
        for i in range(5):
            sink.emit(make_event(f"k{i}", index=i))
        assert sink.stats().written == 0  # held back by linger.ms

        await sink.close()
        assert sink.stats() == SinkStats(emitted=5, written=5, dropped=0)
        sink.emit(make_event("late"))
        await sink.close()  # idempotent
        assert sink.stats() == SinkStats(emitted=6, written=5, dropped=1)
        records = await consume_topic(kafka_broker.bootstrap, topic, at_least=5)
        assert sorted(r.key or "" for r in records) == [f"k{i}" for i in range(5)]


class TestSlowOrDownBroker:
    async def test_outage_drops_and_counts_without_blocking_then_events_flow_again(
        self,
        kafka_broker: MockKafkaCluster,
        kafka_topic_factory: Any,
        kafka_sink_factory: Any,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        caplog.set_level(logging.INFO, logger=SINK_LOGGER)
        topic = kafka_topic_factory()
        sink = await kafka_sink_factory(
            topic=topic, message_timeout_s=1.0, client_config=FAST_RECONNECT
        )
        sink.emit(make_event("before"))
        await wait_until(lambda: sink.stats().written == 1, "the first event acknowledged")

        with kafka_broker.outage():
            started = time.perf_counter()
            for i in range(1000):
                sink.emit(make_event(f"lost-{i}", index=i))
            elapsed = time.perf_counter() - started
            # ~30 µs an emit here: serialise and enqueue, never waiting on the network. The
            # bound leaves >10x headroom for slow CI machines, while an emit that waited for
            # the brokers would take message_timeout_s (1 s) for the first event alone.
            assert elapsed < 0.5
            await wait_until(lambda: sink.stats().dropped == 1000, "1000 events timed out")
            assert sink.stats() == SinkStats(emitted=1001, written=1, dropped=1000)

        # new events flow again once the brokers are back (within librdkafka's reconnect
        # backoff); keep emitting as scoring traffic would until one is acknowledged
        for probe in range(50):
            sink.emit(make_event(f"after-{probe}", index=probe))
            if await holds_within(lambda: sink.stats().written > 1, timeout_s=0.3):
                break
        else:
            raise AssertionError("no event delivered within 15 s of the brokers coming back")

        written = sink.stats().written
        records = await consume_topic(kafka_broker.bootstrap, topic, at_least=written)
        keys = [r.key or "" for r in records]
        assert keys.count("before") == 1
        assert [key for key in keys if key != "before" and not key.startswith("after-")] == []
        assert len(records) >= written > 1  # probes still in flight may land after the count
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]  # once, not per event
        assert "no Kafka broker" in warnings[0].getMessage()
        assert any("delivered again" in r.getMessage() for r in caplog.records)

    async def test_a_full_buffer_drops_and_counts_at_once(
        self, kafka_broker: MockKafkaCluster, kafka_topic_factory: Any, kafka_sink_factory: Any
    ) -> None:
        topic = kafka_topic_factory()
        sink = await kafka_sink_factory(topic=topic, buffer_size=3, client_config=HOLD_BACK)
        for i in range(10):
            sink.emit(make_event(f"k{i}", index=i))
        assert sink.stats() == SinkStats(emitted=10, written=0, dropped=7)

        await sink.close()
        assert sink.stats() == SinkStats(emitted=10, written=3, dropped=7)
        records = await consume_topic(kafka_broker.bootstrap, topic, at_least=3)
        assert sorted(r.key or "" for r in records) == ["k0", "k1", "k2"]

    async def test_close_waits_a_bounded_time_and_counts_undelivered_events_as_dropped(
        self, kafka_broker: MockKafkaCluster, kafka_topic_factory: Any, kafka_sink_factory: Any
    ) -> None:
        sink = await kafka_sink_factory(topic=kafka_topic_factory())
        with kafka_broker.outage():
            for i in range(10):
                sink.emit(make_event(f"k{i}", index=i))
            started = time.perf_counter()
            await sink.close(flush_timeout_s=0.5)
            elapsed = time.perf_counter() - started
        assert 0.5 <= elapsed < 3.0  # the flush timeout, plus stopping the delivery thread
        assert sink.stats() == SinkStats(emitted=10, written=0, dropped=10)


class TestConfiguration:
    def test_is_the_registered_kafka_sink(self) -> None:
        assert PredictionSink.registry.get("kafka") is KafkaSink
        assert KafkaSink.wire_name == "kafka"

    def test_a_missing_client_library_names_the_extra_to_install(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # None in sys.modules makes `import confluent_kafka` fail as if it were not installed
        monkeypatch.setitem(sys.modules, "confluent_kafka", None)
        with pytest.raises(ImportError, match=r"pip install 'forestflow\[kafka\]'"):
            KafkaSink("127.0.0.1:9092")

    @pytest.mark.parametrize(
        ("client_config", "message"),
        [
            ({"bootstrap.servers": "elsewhere:9092"}, "use bootstrap_servers"),
            ({"message.timeout.ms": "5"}, "use message_timeout_s"),
            ({"no.such.setting": "1"}, "invalid Kafka producer settings: .*no.such.setting"),
        ],
    )
    def test_client_config_is_checked(self, client_config: dict[str, str], message: str) -> None:
        with pytest.raises(ValueError, match=message):
            KafkaSink("127.0.0.1:9092", client_config=client_config)

    def test_buffer_size_must_be_positive(self) -> None:
        with pytest.raises(ValueError, match="buffer_size must be >= 1"):
            KafkaSink("127.0.0.1:9092", buffer_size=0)
