"""Prediction events to Kafka (SPEC §5): one message per event, keyed by the record key.

Each event becomes one message on the contract's topic (`contract_topics`, keyed
``"org.project.n"``, else the default `topic`): key = the record key in UTF-8 (no key when the
servable has no `keyFeatures`), value = `event_record` as JSON (the bytes of
`encode_record`, which the emitter makes once for every sink: a line of the files without
its newline), headers ``schemaVersion`` and ``fqrv``, timestamp = the event's. Keys are
partitioned with murmur2 like the Java client and aiokafka, so every client agrees where a
key lives.

Delivery is librdkafka's: `write_encoded` (and `emit`, which encodes first) only enqueues,
and a background thread serves the delivery reports. While the brokers are slow or down,
events wait in librdkafka's queue, bounded by `buffer_size` events; an event that does not
fit is dropped at once, and one still undelivered after `message_timeout_s` is dropped then.
Every drop is counted; the transitions (events start being lost, events flow again) are
logged once each, not per event.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

from forestflow.predictionlog.events import (
    SCHEMA_VERSION,
    EncodedEvent,
    PredictionEvent,
    encode_event,
)
from forestflow.predictionlog.sinks import PredictionSink, SinkStats

if TYPE_CHECKING:
    from confluent_kafka import KafkaError, Message, Producer

log = logging.getLogger(__name__)

DEFAULT_TOPIC = "forestflow-predictions"
SCHEMA_HEADER = "schemaVersion"
FQRV_HEADER = "fqrv"
DEFAULT_FLUSH_TIMEOUT_S = 5.0
POLL_INTERVAL_S = 0.1
"""How long the delivery thread waits for a report before checking whether to stop."""

DEFAULT_CLIENT_CONFIG: Mapping[str, str] = {
    "client.id": "forestflow",
    # the Java client's and aiokafka's partitioner, so all clients agree where a key lives
    "partitioner": "murmur2_random",
}
# set from the sink's own parameters (and its callbacks), so `client_config` may not set them
OWNED_SETTINGS: Mapping[str, str] = {
    "bootstrap.servers": "bootstrap_servers",
    "metadata.broker.list": "bootstrap_servers",
    "queue.buffering.max.messages": "buffer_size",
    "message.timeout.ms": "message_timeout_s",
    "delivery.timeout.ms": "message_timeout_s",
    "on_delivery": "(the sink's delivery callback)",
    "error_cb": "(the sink's error callback)",
    "logger": "(the sink's logger)",
}


class KafkaSink(PredictionSink):
    """Produces each event to Kafka: key = record key, value = `event_record` as JSON."""

    takes_encoded = True

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        topic: str = DEFAULT_TOPIC,
        contract_topics: Mapping[str, str] | None = None,
        buffer_size: int = 100_000,
        message_timeout_s: float = 30.0,
        client_config: Mapping[str, str] | None = None,
    ) -> None:
        kafka = _confluent_kafka()
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.contract_topics = dict(contract_topics or {})
        self.buffer_size = buffer_size
        self.message_timeout_s = message_timeout_s
        self._lock = threading.Lock()
        self._emitted = 0
        self._written = 0
        self._dropped = 0
        self._trouble: str | None = None
        self._last_error: int | None = None
        self._closed = False
        self._final = False
        self._stopping = threading.Event()
        self._poller: threading.Thread | None = None
        self._schema_header = str(SCHEMA_VERSION).encode()
        self._all_brokers_down = kafka.KafkaError._ALL_BROKERS_DOWN
        self._connection_errors = {kafka.KafkaError._TRANSPORT, kafka.KafkaError._RESOLVE}
        config = self._config(client_config or {})
        try:
            self._producer: Producer | None = kafka.Producer(config)
        except kafka.KafkaException as error:
            raise ValueError(f"invalid Kafka producer settings: {_reason(error)}") from None

    def _config(self, client_config: Mapping[str, str]) -> dict[str, Any]:
        clashes = sorted(set(client_config) & set(OWNED_SETTINGS))
        if clashes:
            raise ValueError(
                f"client_config may not set {', '.join(clashes)}: use "
                + ", ".join(sorted({OWNED_SETTINGS[name] for name in clashes}))
            )
        if self.buffer_size < 1 or self.message_timeout_s <= 0:
            raise ValueError("buffer_size must be >= 1 and message_timeout_s > 0")
        return {
            **DEFAULT_CLIENT_CONFIG,
            **client_config,
            "bootstrap.servers": self.bootstrap_servers,
            "queue.buffering.max.messages": self.buffer_size,
            # librdkafka reads 0 as "never time out": round tiny timeouts up to 1 ms
            "message.timeout.ms": max(1, round(self.message_timeout_s * 1000)),
            "on_delivery": self._delivered,
            "error_cb": self._error,
            "logger": _LibrdkafkaLog(),
        }

    def topic_of(self, event: PredictionEvent | EncodedEvent) -> str:
        """The topic `event` goes to: its contract's, else the default one."""
        return self.contract_topics.get(str(event.fqrv.contract), self.topic)

    def emit(self, event: PredictionEvent) -> None:
        """Encode `event` and enqueue it (see `write_encoded`); unencodable: dropped."""
        try:
            record = encode_event(event)
        except Exception as error:  # emit never raises (SPEC §5): count the drop, go on
            self.count_dropped(1)
            self._set_trouble(f"a prediction event could not be encoded ({error}); dropped")
            return
        self.write_encoded((record,))

    def write_encoded(self, records: Sequence[EncodedEvent]) -> None:
        """Enqueue encoded events for delivery; count those the buffer has no room for."""
        producer = None if self._closed else self._producer
        with self._lock:
            self._emitted += len(records)
            if producer is None:  # closed: counted in one step, as `close` may be tallying
                self._dropped += len(records)
                return
        for record in records:
            self._produce(producer, record)

    def _produce(self, producer: Producer, record: EncodedEvent) -> None:
        try:
            producer.produce(
                self.topic_of(record),
                value=record.value,
                key=None if record.key is None else record.key.encode(),
                headers=[
                    (SCHEMA_HEADER, self._schema_header),
                    (FQRV_HEADER, str(record.fqrv).encode()),
                ],
                timestamp=record.timestamp_ms,
            )
        except BufferError:
            self._count_drop(
                f"the buffer of {self.buffer_size} events is full: new prediction events are "
                "dropped and counted"
            )
        except Exception as error:  # never raises into the emitter: count the drop, go on
            self._count_drop(f"a prediction event could not be produced ({error}); dropped")

    def count_dropped(self, count: int) -> None:
        """Count events dropped on their way to this sink (emitted and dropped)."""
        with self._lock:
            self._emitted += count
            self._dropped += count

    def stats(self) -> SinkStats:
        """Emitted, acknowledged by the brokers, dropped (safe from any thread)."""
        with self._lock:
            return SinkStats(emitted=self._emitted, written=self._written, dropped=self._dropped)

    async def start(self) -> None:
        """Start the thread that serves delivery reports."""
        if self._poller is not None or self._closed:
            return
        self._poller = threading.Thread(
            target=self._serve_reports,
            args=(self._producer,),
            name="forestflow-kafka-sink",
            daemon=True,
        )
        self._poller.start()

    async def close(self, flush_timeout_s: float = DEFAULT_FLUSH_TIMEOUT_S) -> None:
        """Deliver what is buffered within `flush_timeout_s`, count the rest as dropped, stop.

        The flush runs in a worker thread, so the event loop keeps serving meanwhile.
        Idempotent; events emitted after `close` are dropped.
        """
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._finish, flush_timeout_s)

    def _finish(self, flush_timeout_s: float) -> None:
        self._stopping.set()
        if self._poller is not None:
            self._poller.join()
        producer, self._producer = self._producer, None
        if producer is None:
            return
        if producer.flush(flush_timeout_s):
            # serve the reports of what is purged; anything still unreported is counted below
            producer.purge(in_queue=True, in_flight=True, blocking=False)
            producer.poll(0)
        with self._lock:
            self._final = True
            lost = self._emitted - self._written - self._dropped
            self._dropped += lost
        if lost:
            log.warning(
                "Kafka sink closed with %d prediction events undelivered after %.1f s; "
                "they are counted as dropped",
                lost,
                flush_timeout_s,
            )

    def _serve_reports(self, producer: Producer) -> None:
        while not self._stopping.is_set():
            try:
                producer.poll(POLL_INTERVAL_S)
            except Exception:  # the thread must outlive a failing callback
                log.exception("Kafka sink: serving delivery reports failed")

    def _delivered(self, error: KafkaError | None, message: Message[Any, Any]) -> None:
        with self._lock:
            if self._final:
                return
            if error is None:
                self._written += 1
        if error is None:
            self._set_trouble(None)
        else:
            self._count_drop(
                f"prediction events are not delivered to {message.topic()} ({error.str()}): "
                "they are dropped and counted"
            )

    def _error(self, error: KafkaError) -> None:
        """librdkafka's client-level errors; it keeps retrying after each."""
        code = error.code()
        if code == self._all_brokers_down:
            self._set_trouble(
                f"no Kafka broker of {self.bootstrap_servers} is reachable: prediction events "
                f"wait in the buffer (at most {self.buffer_size}) and are dropped and counted "
                f"once {self.message_timeout_s:g} s old"
            )
        elif error.fatal():
            self._set_trouble(
                f"the Kafka producer failed for good ({error.str()}): prediction events are "
                "dropped and counted until a restart"
            )
        elif code in self._connection_errors or code == self._last_error:
            log.debug("Kafka sink: %s", error.str())
        else:
            log.warning("Kafka sink: %s", error.str())
        self._last_error = code

    def _count_drop(self, trouble: str) -> None:
        with self._lock:
            self._dropped += 1
        self._set_trouble(trouble)

    def _set_trouble(self, trouble: str | None) -> None:
        """Log when events start being lost and when they flow again: once each, not per event."""
        with self._lock:
            previous = self._trouble
            if trouble is None or previous is None:
                self._trouble = trouble
        if previous is None and trouble is not None:
            log.warning("Kafka sink: %s", trouble)
        elif previous is not None and trouble is None:
            log.info("Kafka sink: prediction events are delivered again")


class _LibrdkafkaLog:
    """librdkafka's own log lines, at DEBUG level.

    It logs every failed reconnection while a broker is down; the sink already reports what
    an operator needs (unreachable, dropping, delivering again) once per transition.
    """

    def __init__(self) -> None:
        self._log = logging.getLogger(f"{__name__}.librdkafka")

    def log(self, level: int, message: str, *args: object) -> None:
        """Called by confluent-kafka as `logging.Logger.log` would be."""
        self._log.debug(message, *args)


def _confluent_kafka() -> ModuleType:
    try:
        import confluent_kafka  # noqa: PLC0415 - optional dependency, imported on first use
    except ImportError:
        raise ImportError(
            "the Kafka prediction sink needs the 'confluent-kafka' package, which is not "
            "installed; install it with: pip install 'forestflow[kafka]'",
            name="confluent_kafka",
        ) from None
    return confluent_kafka


def _reason(error: Exception) -> str:
    first = error.args[0] if error.args else error
    return str(first.str() if hasattr(first, "str") else first)
