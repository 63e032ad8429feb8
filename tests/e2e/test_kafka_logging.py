"""Prediction events to Kafka from a real server, through a broker outage (SPEC §5)."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import ServerProcess
from tests.kafka_broker import ConsumedRecord, MockKafkaCluster, consume_topic
from tests.payloads import score_body, serve_body

pytestmark = pytest.mark.e2e

BASE = "/samples/energy_output/0"


def score(client: httpx.Client, key: str) -> float:
    """Score one request keyed `key`; return how long the answer took, in seconds."""
    started = time.perf_counter()
    response = client.post(f"{BASE}/score", json=score_body(configs={"customer": key}))
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.text
    return elapsed


def kafka_stats(client: httpx.Client) -> dict[str, int]:
    body = client.get("/prediction-log/stats").json()
    stats: dict[str, int] = body["PredictionLogStats"]["sinks"]["kafka"]
    return stats


def await_stats(
    client: httpx.Client, condition: Callable[[dict[str, int]], bool], timeout_s: float
) -> dict[str, int]:
    """Poll the sink's counters until `condition` holds (delivery is asynchronous)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stats = kafka_stats(client)
        if condition(stats):
            return stats
    raise AssertionError(f"condition not met in {timeout_s} s: {kafka_stats(client)}")


def read_topic(broker: MockKafkaCluster, topic: str, at_least: int) -> list[ConsumedRecord]:
    return asyncio.run(consume_topic(broker.bootstrap, topic, at_least=at_least, timeout_s=30))


class TestKafkaLogging:
    def test_events_flow_survive_an_outage_and_resume(
        self,
        server_factory: Callable[..., ServerProcess],
        kafka_broker: MockKafkaCluster,
        kafka_topic_factory: Callable[..., str],
    ) -> None:
        topic = kafka_topic_factory()
        env = {
            "FORESTFLOW_PREDICTION_LOG__KAFKA__BOOTSTRAP_SERVERS": kafka_broker.bootstrap,
            "FORESTFLOW_PREDICTION_LOG__KAFKA__TOPIC": topic,
            "FORESTFLOW_PREDICTION_LOG__KAFKA__MESSAGE_TIMEOUT_S": "1",
            # reconnect quickly once the brokers are back (librdkafka's default is 10 s)
            "FORESTFLOW_PREDICTION_LOG__KAFKA__CLIENT_CONFIG": json.dumps(
                {"reconnect.backoff.ms": "50", "reconnect.backoff.max.ms": "300"}
            ),
        }
        client = server_factory(env=env).client
        body: dict[str, Any] = serve_body("v1")
        body["servableSettings"]["loggingSettings"] = {
            "logLevel": "FULL",
            "keyFeatures": ["customer"],
        }
        assert client.post("/servable", json=body).status_code == 201

        up = [score(client, f"up-{i}") for i in range(30)]
        records = read_topic(kafka_broker, topic, at_least=30)
        assert sorted(r.key or "" for r in records) == sorted(f"up-{i}" for i in range(30))
        assert {r.value["schemaVersion"] for r in records} == {1}
        assert {r.value["fqrv"]["releaseVersion"] for r in records} == {"v1"}
        assert all(r.value["servedRequest"] for r in records)
        before = await_stats(client, lambda s: s["written"] >= 30, timeout_s=10)
        assert before["dropped"] == 0

        with kafka_broker.outage():
            down = [score(client, f"down-{i}") for i in range(30)]
            # every event of the outage is dropped once its delivery times out (1 s)
            during = await_stats(client, lambda s: s["dropped"] >= 30, timeout_s=30)
            assert during["written"] == before["written"]
            metrics = client.get("/metrics").text
            assert 'forestflow_prediction_events_total{outcome="dropped",sink="kafka"}' in metrics

        # scoring did not wait for the broker: the median answer stays in the same range
        # (a sink that blocked on the broker would take the 1 s delivery timeout or more)
        assert statistics.median(down) < 5 * statistics.median(up) + 0.05

        # the client reconnects within its backoff; events made before that may still be
        # dropped by the 1 s timeout, so keep scoring until new ones are written
        deadline = time.monotonic() + 30
        sent = 0
        while kafka_stats(client)["written"] == before["written"]:
            assert time.monotonic() < deadline, (
                f"no event written after the outage: {kafka_stats(client)}"
            )
            score(client, f"after-{sent}")
            sent += 1
        keys = {r.key for r in read_topic(kafka_broker, topic, at_least=31)}
        assert any(k and k.startswith("after-") for k in keys)
        assert not any(k and k.startswith("down-") for k in keys)
