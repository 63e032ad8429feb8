"""Fixtures every test directory shares: real servers started once per session.

* `mlflow_server` (session): a `tests.mlflow_server.MlflowServer`, a real `mlflow server`
  with a SQLite backend on 127.0.0.1; register models under names of your own.

The Kafka broker:

Fixtures:

* `kafka_broker` (session): a started `tests.kafka_broker.MockKafkaCluster` (librdkafka's
  mock cluster in a child process; 3 brokers on 127.0.0.1). Its `.bootstrap` is the
  ``host:port,...`` list to give clients; `.set_down()` / `.set_up()` / `.outage()` make
  every broker unreachable and reachable again. A test that takes the brokers down must
  bring them back (use `with kafka_broker.outage():`), since later tests share them.
* `kafka_topic_factory`: ``kafka_topic_factory(partitions=4) -> str`` creates a topic with a
  unique name on that broker (the broker lives for the whole session, so names must not
  repeat across tests).

To read what landed on a topic with an independent client, use
`tests.kafka_broker.consume_topic(kafka_broker.bootstrap, topic, at_least=n)`: it returns
`ConsumedRecord`s (key as text, value decoded from JSON, headers) read by aiokafka.

The broker starts only when a test asks for it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.kafka_broker import MockKafkaCluster
from tests.mlflow_server import MlflowServer, running_mlflow_server

# Servers the tests start run side by side: none takes the default gRPC port (8091) unless
# a test gives it one.
os.environ.setdefault("FORESTFLOW_SERVER__GRPC_PORT", "0")


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """One `mlflow server` for the session (starting one takes several seconds)."""
    with running_mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as server:
        yield server


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[MockKafkaCluster]:
    """librdkafka's mock Kafka cluster, started once for the session."""
    with MockKafkaCluster(brokers=3) as cluster:
        yield cluster


@pytest.fixture
def kafka_topic_factory(kafka_broker: MockKafkaCluster) -> Callable[..., str]:
    """Creates topics with unique names on `kafka_broker`: ``factory(partitions=4)``."""

    def make(partitions: int = 4) -> str:
        name = f"predictions-{uuid.uuid4().hex[:12]}"
        kafka_broker.create_topic(name, partitions)
        return name

    return make
