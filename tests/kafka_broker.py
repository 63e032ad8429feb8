"""A real Kafka-protocol broker for tests: librdkafka's mock cluster in a child process.

The mock cluster is Confluent's Kafka broker emulator, shipped inside the librdkafka that the
confluent-kafka wheel bundles (no JVM, no Docker). This module is both

* the parent-side `MockKafkaCluster`, which starts the child and commands it,
* `consume_topic`, an independent reader of what landed on a topic (aiokafka, no group), and
* the child itself (`python tests/kafka_broker.py [brokers]`), which creates the cluster
  through ctypes, prints ``ready <bootstrap>`` on stdout, then executes one command per line
  read from stdin, answering each with one ``ok`` or ``error <reason>`` line:

  ``topic <name> <partitions>`` create a topic; ``down <broker id>`` / ``up <broker id>``
  disconnect a broker and refuse new connections / accept them again; ``quit``.

The child exits on ``quit`` or when stdin closes, so a crashed test run leaves no broker
behind. Its listeners are on 127.0.0.1; broker ids are 1..brokers. Topics that nobody
created are auto-created with 4 partitions on first use, as a real broker would.

Clients must follow the rules in the mock's notes: short group timeouts
(`session_timeout_ms=2000, heartbeat_interval_ms=500` on aiokafka), the same assignor list on
every member of one group, unique topic and group names per test.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import ctypes.util
import importlib.util
import json
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

START_TIMEOUT_S = 30.0
COMMAND_TIMEOUT_S = 10.0
RD_KAFKA_PRODUCER = 0


class MockKafkaCluster:
    """librdkafka's mock Kafka cluster running in a child process, commanded over its stdio."""

    def __init__(self, brokers: int = 3) -> None:
        self.brokers = brokers
        self.bootstrap = ""
        """``127.0.0.1:port,...`` of every broker, once started."""
        self._proc: subprocess.Popen[str] | None = None
        self._replies: queue.Queue[str | None] = queue.Queue()
        self._stderr: collections.deque[str] = collections.deque(maxlen=200)
        self._lock = threading.Lock()

    def start(self) -> MockKafkaCluster:
        """Start the child and return once it printed its bootstrap address."""
        self._proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), str(self.brokers)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        threading.Thread(target=self._pump_stdout, args=(self._proc,), daemon=True).start()
        threading.Thread(target=self._pump_stderr, args=(self._proc,), daemon=True).start()
        ready = self._reply(START_TIMEOUT_S, "start")
        if not ready.startswith("ready "):
            raise RuntimeError(f"mock Kafka cluster did not start: {ready}{self._diagnostics()}")
        self.bootstrap = ready.removeprefix("ready ")
        return self

    def create_topic(self, name: str, partitions: int = 4) -> None:
        """Create topic `name` with `partitions` partitions (replication factor 1)."""
        self._command(f"topic {name} {partitions}")

    def set_down(self, broker_id: int | None = None) -> None:
        """Make one broker (default: every broker) drop its connections and refuse new ones."""
        for broker in self._ids(broker_id):
            self._command(f"down {broker}")

    def set_up(self, broker_id: int | None = None) -> None:
        """Let one broker (default: every broker) accept connections again."""
        for broker in self._ids(broker_id):
            self._command(f"up {broker}")

    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        """Every broker is down inside the block, and up again after it (even on failure)."""
        self.set_down()
        try:
            yield
        finally:
            self.set_up()

    def stop(self) -> None:
        """Stop the child (idempotent)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(BrokenPipeError):
                assert proc.stdin is not None
                proc.stdin.write("quit\n")
                proc.stdin.close()
            try:
                proc.wait(timeout=COMMAND_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=COMMAND_TIMEOUT_S)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> MockKafkaCluster:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _ids(self, broker_id: int | None) -> range:
        if broker_id is not None:
            return range(broker_id, broker_id + 1)
        return range(1, self.brokers + 1)

    def _command(self, line: str) -> None:
        with self._lock:
            if self._proc is None or self._proc.stdin is None:
                raise RuntimeError("the mock Kafka cluster is not running")
            self._proc.stdin.write(line + "\n")
            self._proc.stdin.flush()
            reply = self._reply(COMMAND_TIMEOUT_S, line)
        if reply != "ok":
            raise RuntimeError(f"mock Kafka cluster: {line!r} failed: {reply}")

    def _reply(self, timeout: float, what: str) -> str:
        try:
            line = self._replies.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(
                f"mock Kafka cluster did not answer {what!r} within {timeout} s"
                f"{self._diagnostics()}"
            ) from None
        if line is None:
            raise RuntimeError(f"mock Kafka cluster exited during {what!r}{self._diagnostics()}")
        return line

    def _diagnostics(self) -> str:
        return "; its stderr:\n" + "".join(self._stderr) if self._stderr else ""

    def _pump_stdout(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        with contextlib.suppress(ValueError):  # the stream was closed by stop()
            for line in proc.stdout:
                self._replies.put(line.rstrip("\n"))
        self._replies.put(None)

    def _pump_stderr(self, proc: subprocess.Popen[str]) -> None:
        # drained so that librdkafka's logging can never block the child on a full pipe
        assert proc.stderr is not None
        with contextlib.suppress(ValueError):
            for line in proc.stderr:
                self._stderr.append(line)


@dataclass(frozen=True)
class ConsumedRecord:
    """One record as an independent consumer read it back, its value decoded from JSON."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: str | None
    value: Any
    headers: dict[str, bytes]


async def consume_topic(
    bootstrap: str, topic: str, *, at_least: int = 1, timeout_s: float = 15.0
) -> list[ConsumedRecord]:
    """Every record on `topic`, read with aiokafka (no consumer group) from the beginning.

    Waits until at least `at_least` records arrived, then reads on to the current end of
    every partition, so records beyond those expected show up too. Ordered by partition,
    then offset. Raises AssertionError if `at_least` records do not arrive in `timeout_s`.
    """
    # imported here: the child process of this module must stay standard-library only
    from aiokafka import AIOKafkaConsumer

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
        async with asyncio.timeout(timeout_s):
            while len(records) < at_least:
                records += _flatten(await consumer.getmany(timeout_ms=200))
            ends = await consumer.end_offsets(list(consumer.assignment()))
            while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
                records += _flatten(await consumer.getmany(timeout_ms=200))
    except TimeoutError:
        raise AssertionError(
            f"{len(records)} records on {topic!r} after {timeout_s} s; expected >= {at_least}"
        ) from None
    finally:
        await consumer.stop()
    return sorted((_decoded(record) for record in records), key=_position)


def _flatten(batch: dict[Any, list[Any]]) -> list[Any]:
    return [record for part in batch.values() for record in part]


def _decoded(record: Any) -> ConsumedRecord:
    return ConsumedRecord(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        timestamp_ms=record.timestamp,
        key=None if record.key is None else record.key.decode(),
        value=json.loads(record.value),
        headers=dict(record.headers),
    )


def _position(record: ConsumedRecord) -> tuple[int, int]:
    return record.partition, record.offset


# --- the child process -------------------------------------------------------------------


def _librdkafka() -> ctypes.CDLL:
    """The librdkafka bundled in the confluent-kafka wheel, found without importing it."""
    spec = importlib.util.find_spec("confluent_kafka")
    if spec is None or spec.origin is None:
        raise RuntimeError("confluent-kafka is not installed (it is in the test extras)")
    package = Path(spec.origin).parent
    candidates = [
        *sorted(package.parent.glob("confluent_kafka.libs/librdkafka*")),  # Linux wheels
        *sorted(package.glob(".dylibs/librdkafka*")),  # macOS wheels
        *sorted(package.parent.glob("confluent_kafka.libs/rdkafka*.dll")),  # Windows wheels
    ]
    # a confluent-kafka built from source links the system librdkafka instead
    system = ctypes.util.find_library("rdkafka")
    if not candidates and system is None:
        raise RuntimeError(f"no librdkafka bundled next to {package} nor installed")
    lib = ctypes.CDLL(str(candidates[0]) if candidates else str(system))
    lib.rd_kafka_conf_new.restype = ctypes.c_void_p
    lib.rd_kafka_conf_set.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
    lib.rd_kafka_conf_set.argtypes += [ctypes.c_char_p, ctypes.c_size_t]
    lib.rd_kafka_new.restype = ctypes.c_void_p
    lib.rd_kafka_new.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    lib.rd_kafka_mock_cluster_new.restype = ctypes.c_void_p
    lib.rd_kafka_mock_cluster_new.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.rd_kafka_mock_cluster_bootstraps.restype = ctypes.c_char_p
    lib.rd_kafka_mock_cluster_bootstraps.argtypes = [ctypes.c_void_p]
    lib.rd_kafka_mock_group_initial_rebalance_delay_ms.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.rd_kafka_mock_topic_create.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_int,
    ]
    for name in ("rd_kafka_mock_broker_set_down", "rd_kafka_mock_broker_set_up"):
        getattr(lib, name).argtypes = [ctypes.c_void_p, ctypes.c_int32]
    lib.rd_kafka_err2str.restype = ctypes.c_char_p
    lib.rd_kafka_err2str.argtypes = [ctypes.c_int]
    return lib


def _answer(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _serve(brokers: int) -> None:
    lib = _librdkafka()
    errors = ctypes.create_string_buffer(512)
    conf = lib.rd_kafka_conf_new()
    # the hosting client has no bootstrap servers of its own; only its warnings matter
    lib.rd_kafka_conf_set(conf, b"log_level", b"4", errors, len(errors))
    handle = lib.rd_kafka_new(RD_KAFKA_PRODUCER, conf, errors, len(errors))
    if not handle:
        _answer(f"error {errors.value.decode()}")
        return
    cluster = lib.rd_kafka_mock_cluster_new(handle, brokers)
    if not cluster:
        _answer("error rd_kafka_mock_cluster_new failed")
        return
    # consumer groups start at once instead of after the default 3 s
    lib.rd_kafka_mock_group_initial_rebalance_delay_ms(cluster, 0)
    _answer(f"ready {lib.rd_kafka_mock_cluster_bootstraps(cluster).decode()}")
    for line in sys.stdin:
        command, *args = line.split() or [""]
        if command == "quit":
            break
        if command == "topic" and len(args) == 2 and args[1].isdigit():
            code = lib.rd_kafka_mock_topic_create(cluster, args[0].encode(), int(args[1]), 1)
        elif command in ("down", "up") and len(args) == 1 and args[0].isdigit():
            code = getattr(lib, f"rd_kafka_mock_broker_set_{command}")(cluster, int(args[0]))
        else:
            _answer(f"error cannot parse {line.strip()!r}")
            continue
        _answer("ok" if code == 0 else f"error {lib.rd_kafka_err2str(code).decode()}")
    lib.rd_kafka_mock_cluster_destroy.argtypes = [ctypes.c_void_p]
    lib.rd_kafka_destroy.argtypes = [ctypes.c_void_p]
    lib.rd_kafka_mock_cluster_destroy(cluster)
    lib.rd_kafka_destroy(handle)


if __name__ == "__main__":
    _serve(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
