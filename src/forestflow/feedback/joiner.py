"""The feedback joiner: recent keyed predictions in, ground truth joined with them (SPEC §6).

`FeedbackJoiner` is a `PredictionSink`: the app's `PredictionEmitter` hands it every
prediction event, served and shadow. `emit` runs on the serving path, so it only takes what
a join needs from a keyed event (servable, key, what its rows' keys are made of,
prediction, arrival time by the injected clock) into a bounded intake, in O(1);
`catch_up`, on the emitter's thread, builds the rows' keys and makes one compact entry
(`pending`) per distinct key among them, holding a copy of that key's rows of the
prediction columns scoring reads, and indexes it. The entries are kept per (contract,
key) until feedback consumes them, for at most `window_ms` after they arrive and within
`max_prediction_bytes` in all, estimated per entry (the oldest is evicted first;
`max_predictions` optionally bounds their number too).

`join` takes a contract's feedback records, consumes every kept prediction of that contract
with each record's key — whatever servable made it — scores them (`scoring`) and updates
each servable's rolling metrics (`rolling`). A record whose actual fits none of them (a
wrong number of values, a string for a regression) is refused instead: it consumes
nothing, so the corrected record still joins. What `join` returns is what the control
plane persists, and the refusals. A feedback request sent right after the scoring
response must find its prediction even if the emitter's thread has not indexed it yet, so
`join` first indexes whatever the intake still holds (usually nothing: the thread keeps up).

Guarantees, checked by tests/unit/feedback/test_joiner.py:
- `emit` is O(1), takes only a lock held for O(1), never raises, and keeps no request.
- `join` sees every prediction emitted before it is called.
- A prediction is joined at most once: the same feedback sent twice counts once (the
  second time its key is unknown), and so does a key repeated within one request.
- Each row of a request joins under its own key, with its own row of the prediction.
- A refused record consumes nothing: every record is matched, unknown or refused.
- A prediction older than `window_ms` (age > window) or evicted is never joined.
- The kept predictions' estimated size never exceeds `max_prediction_bytes`.
- Each `MetricsUpdate` holds the servable's rolling metrics over its last
  `rolling_window` samples, and increments whose rewards add up to `feedbackCount`.

State lives in memory: after a restart, predictions made before it can no longer be
joined and the rolling windows start empty (the persisted metrics stay until feedback
updates them).
"""

from __future__ import annotations

import collections
import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from forestflow.clock import Clock
from forestflow.domain.fqrv import FQRV, Contract
from forestflow.domain.frame import Frame
from forestflow.domain.metrics import FEEDBACK_COUNT, REWARD_FAILURES, REWARD_SUCCESSES
from forestflow.feedback.pending import (
    PendingPrediction,
    PendingPredictions,
    reads_numbers,
    split_by_key,
)
from forestflow.feedback.records import Actual, FeedbackRecord, misfit
from forestflow.feedback.rolling import RollingMetrics
from forestflow.feedback.scoring import score_prediction
from forestflow.predictionlog.events import PredictionEvent, RowKeys
from forestflow.predictionlog.sinks import PredictionSink, SinkStats

log = logging.getLogger(__name__)

DEFAULT_MAX_PREDICTION_BYTES = 64 * 1024 * 1024
DEFAULT_INTAKE_SIZE = 100_000
"""Predictions `emit` takes before they are indexed, at most: well above the emitter's
buffer, so feedback does not lose what the logs still keep."""
CATCH_UP_CHUNK = 256
"""Entries the emitter's thread makes per hold of the lock `join` needs, about (a request
is indexed whole, however many rows it has)."""
LOOP_EXPIRY_LIMIT = 1_000
"""Predictions a call on the event loop (`join`, `joiner_stats`) expires at most; the
emitter's thread expires the rest (and `join` skips an expired one it meets)."""

_Taken = tuple[FQRV, str, RowKeys | None, Frame, int]
"""What `emit` takes of a keyed event: servable, key, what its rows' keys are made of
(None when every row has the key), prediction, arrival time (ms)."""


@dataclass(frozen=True, slots=True)
class MetricsUpdate:
    """What one feedback request changed for one servable."""

    values: dict[str, float]
    """Current rolling metrics to set (`mae`, `rmse`, `accuracy`, `logLoss`, as known)."""
    increments: dict[str, int]
    """Amounts to add to the all-time counters `feedbackCount`, `rewardSuccesses`,
    `rewardFailures`."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """A record that does not fit the predictions kept under its key: nothing consumed."""

    index: int
    """Where the record is in the request (`records[index]`)."""
    key: str
    field: str
    """The part of the record at fault: `records[3].actual`, `records[3].actual[1]`."""
    reason: str


@dataclass(frozen=True, slots=True)
class FeedbackOutcome:
    """What one feedback request did: record counts and the servables' metric updates."""

    matched: int
    """Records whose key joined at least one kept prediction."""
    unknown: int
    """Records whose key joined nothing (never logged, expired, evicted or already joined)."""
    mismatched: int
    """Matched records with at least one joined prediction that could not be scored."""
    updates: dict[FQRV, MetricsUpdate]
    """Per servable that got at least one sample."""
    refused: tuple[Refusal, ...] = ()
    """Records whose actual fits none of the predictions kept under their key (wrong
    number of values, wrong type), in request order; those predictions still wait."""


@dataclass(frozen=True, slots=True)
class JoinerStats:
    """Counters of the joiner since start-up (records and predictions)."""

    pending: int
    """Predictions kept now, waiting for their feedback (one per key of a request's rows)."""
    joined: int
    """Predictions joined with feedback."""
    expired: int
    """Predictions forgotten unjoined after `window_ms`."""
    evicted: int
    """Predictions evicted unjoined to stay within `max_prediction_bytes` (or
    `max_predictions`)."""
    unkeyed: int
    """Prediction events not kept because they had no key (no `keyFeatures`) or, on every
    row, an empty one."""
    matched: int
    """Feedback records that joined at least one prediction."""
    unknown: int
    """Feedback records whose key joined nothing."""
    mismatched: int
    """Matched feedback records with a prediction that could not be scored."""
    refused: int
    """Feedback records refused, consuming nothing: their actual fit none of the
    predictions under their key."""


RECORD_OUTCOMES = ("matched", "unknown", "mismatched", "refused")
"""What becomes of a feedback record (`FeedbackTallies.records`)."""


@dataclass(frozen=True, slots=True)
class FeedbackTallies:
    """Cumulative joins per contract and servable since start-up, for `/metrics`."""

    records: dict[Contract, dict[str, int]]
    """Feedback records per contract, by outcome (`RECORD_OUTCOMES`)."""
    joined: dict[FQRV, int]
    """Predictions joined per servable (forgotten with the servable)."""


@dataclass(slots=True)
class _Tally:
    successes: int = 0
    failures: int = 0

    def increments(self) -> dict[str, int]:
        return {
            FEEDBACK_COUNT: self.successes + self.failures,
            REWARD_SUCCESSES: self.successes,
            REWARD_FAILURES: self.failures,
        }


class FeedbackJoiner(PredictionSink):
    """Keeps recent keyed predictions and joins ground truth with them.

    Sink counters: `emitted` counts events received, `written` events kept for joining
    (those with a key), `dropped` kept predictions evicted by the memory bound before any
    feedback reached them (one per key of a request's rows, so a request with many keys
    can count more than once), plus events that could not be taken (no time from the
    clock, intake full, a prediction that could not be copied). Events without a key are
    not for this sink and expiring unjoined is normal retention: `joiner_stats()` counts
    both, not `dropped`.

    Rewards: a classification sample succeeds when the label is the actual class; a
    regression sample when |prediction − actual| ≤ `regression_tolerance_rel` · |actual|
    (so an actual 0 needs an exact prediction).
    """

    wire_name: ClassVar[str] = "feedback"

    def __init__(
        self,
        *,
        clock: Clock,
        window_ms: int = 3_600_000,
        max_prediction_bytes: int = DEFAULT_MAX_PREDICTION_BYTES,
        max_predictions: int | None = None,
        rolling_window: int = 1_000,
        regression_tolerance_rel: float = 0.1,
        intake_size: int = DEFAULT_INTAKE_SIZE,
    ) -> None:
        if min(window_ms, max_prediction_bytes, rolling_window, intake_size) < 1:
            raise ValueError(
                "window_ms, max_prediction_bytes, rolling_window and intake_size must be positive"
            )
        if max_predictions is not None and max_predictions < 1:
            raise ValueError("max_predictions must be positive (or None: no count bound)")
        if not (math.isfinite(regression_tolerance_rel) and regression_tolerance_rel >= 0):
            raise ValueError("regression_tolerance_rel must be a finite number >= 0")
        self._clock = clock
        self._window_ms = window_ms
        self._rolling_window = rolling_window
        self._tolerance = regression_tolerance_rel
        self._intake_size = intake_size
        # `emit` takes only this lock, for O(1): the intake and its counters
        self._intake_lock = threading.Lock()
        self._intake: collections.deque[_Taken] = collections.deque()
        self._received = self._unkeyed = self._refused = 0
        self._warned_refusal = False
        # the index, the rolling metrics and the other counters; taken before the intake lock
        self._lock = threading.Lock()
        self._pending = PendingPredictions(
            max_bytes=max_prediction_bytes, max_count=max_predictions
        )
        self._rolling: dict[FQRV, RollingMetrics] = {}
        self._counts: collections.Counter[str] = collections.Counter()
        self._contract_records: dict[Contract, collections.Counter[str]] = {}
        self._joined: collections.Counter[FQRV] = collections.Counter()

    def emit(self, event: PredictionEvent) -> None:
        """Take a keyed event for joining, in O(1): its servable, key, prediction and arrival
        time, never the request. `catch_up` (or the next `join`) indexes it."""
        self.emit_many((event,))

    def emit_many(self, events: Sequence[PredictionEvent]) -> None:
        """`emit` each of `events`, reading the clock and taking the lock once."""
        try:
            now: int | None = self._clock.now_ms()
        except Exception:  # a sink never raises into the serving path (PredictionSink)
            log.exception("feedback joiner: no time from the clock; a prediction is not kept")
            now = None
        warn = False
        with self._intake_lock:
            self._received += len(events)
            for event in events:
                row_keys = event.row_keys
                if row_keys is not None and row_keys.uniform:
                    row_keys = None  # every row has `event.key`: no need to build them
                if event.key is None or (not event.key and row_keys is None):
                    self._unkeyed += 1
                elif now is None or len(self._intake) >= self._intake_size:
                    self._refused += 1
                    warn = warn or not self._warned_refusal
                    self._warned_refusal = True
                else:
                    self._intake.append((event.fqrv, event.key, row_keys, event.prediction, now))
        if warn and now is not None:
            log.warning(
                "feedback joiner: %d predictions wait to be indexed (is the prediction "
                "emitter running?); further ones are dropped and counted",
                self._intake_size,
            )

    def catch_up(self) -> None:
        """Index the predictions `emit` took and forget those older than the window (the
        emitter's thread calls this between the slices of events it encodes)."""
        while True:
            with self._lock:
                if not self._index(CATCH_UP_CHUNK):
                    break
        now = self._clock.now_ms()
        with self._lock:
            self._expire(now)

    def _index(self, limit: int | None) -> bool:
        """Index taken predictions, oldest first, until about `limit` entries were made
        (None: all); True if more may wait. Holding `_lock` throughout, so a `join` never
        misses one in flight."""
        made = 0
        while limit is None or made < limit:
            with self._intake_lock:
                if not self._intake:
                    return False
                taken = self._intake.popleft()
            made += self._keep(*taken)
        return True

    def _keep(
        self, fqrv: FQRV, key: str, row_keys: RowKeys | None, prediction: Frame, arrived_ms: int
    ) -> int:
        """Make and index the entries of one prediction: one per key of its rows. Returns
        how many entries were made (at least 1, for the chunking)."""
        self._expire(arrived_ms)
        try:
            entries = split_by_key(prediction, key, None if row_keys is None else row_keys.keys())
        except Exception:  # an odd frame must not stop the others
            log.exception("feedback joiner could not keep a prediction of %s", fqrv)
            self._counts["failed"] += 1
            return 1
        if not entries:  # every row's key is empty
            self._counts["unkeyed"] += 1
            return 1
        for entry_key, compact in entries:
            self._counts["evicted"] += self._pending.add(fqrv, entry_key, compact, arrived_ms)
        self._counts["written"] += 1
        return len(entries)

    def _expire(self, now: int, limit: int | None = None) -> None:
        """Forget predictions that arrived more than the window before `now` (at most
        `limit` of them: the event loop's share; the emitter's thread takes the rest)."""
        expired = 0
        while limit is None or expired < limit:
            oldest = self._pending.oldest_arrival()
            if oldest is None or now - oldest <= self._window_ms:
                break
            self._pending.pop_oldest()
            expired += 1
        self._counts["expired"] += expired

    def join(self, contract: Contract, records: Sequence[FeedbackRecord]) -> FeedbackOutcome:
        """Join records with `contract`'s kept predictions by key (consuming them); refuse,
        consuming nothing, a record that fits none of its key's predictions.

        Every prediction emitted before the call is seen: what the emitter's thread has
        not indexed yet is indexed here first."""
        now = self._clock.now_ms()
        with self._lock:
            self._index(None)
            self._expire(now, LOOP_EXPIRY_LIMIT)
            tallies: dict[FQRV, _Tally] = {}
            counts = collections.Counter[str]()
            refused: list[Refusal] = []
            for index, record in enumerate(records):
                kept = [
                    entry
                    for entry in self._pending.peek(contract, record.key)
                    if now - entry.arrived_ms <= self._window_ms
                ]
                refusal = _refusal(kept, record.actual)
                if refusal is not None:
                    at, reason = refusal
                    refused.append(
                        Refusal(index, record.key, f"records[{index}].actual{at}", reason)
                    )
                    continue
                counts["expired"] += len(self._pending.take(contract, record.key)) - len(kept)
                if not kept:
                    counts["unknown"] += 1
                    continue
                counts["matched"] += 1
                counts["joined"] += len(kept)
                self._joined.update(entry.fqrv for entry in kept)
                if not self._score(kept, record.actual, tallies):
                    counts["mismatched"] += 1
            counts["refused"] = len(refused)
            self._counts.update(counts)
            tally = self._contract_records.setdefault(contract, collections.Counter())
            tally.update({outcome: counts[outcome] for outcome in RECORD_OUTCOMES})
            updates = {
                fqrv: MetricsUpdate(self._rolling[fqrv].values(), tally.increments())
                for fqrv, tally in tallies.items()
            }
        return FeedbackOutcome(
            matched=counts["matched"],
            unknown=counts["unknown"],
            mismatched=counts["mismatched"],
            updates=updates,
            refused=tuple(refused),
        )

    def _score(
        self, kept: Sequence[PendingPrediction], actual: Actual, tallies: dict[FQRV, _Tally]
    ) -> bool:
        """Add the samples of each joined prediction; False if one could not be scored."""
        scorable = True
        for entry in kept:
            samples = (
                None
                if entry.prediction is None
                else score_prediction(entry.prediction, actual, tolerance_rel=self._tolerance)
            )
            if samples is None:
                scorable = False
                continue
            rolling = self._rolling.get(entry.fqrv)
            if rolling is None:
                rolling = self._rolling[entry.fqrv] = RollingMetrics(self._rolling_window)
            tally = tallies.setdefault(entry.fqrv, _Tally())
            for sample in samples:
                rolling.add(sample)
                if sample.success:
                    tally.successes += 1
                else:
                    tally.failures += 1
        return scorable

    def forget(self, fqrv: FQRV) -> None:
        """Drop the rolling metrics of `fqrv` and the predictions it made that wait for
        feedback (call when the servable is deleted): a redeploy of the same FQRV starts
        from nothing."""
        with self._lock:
            self._index(None)
            self._pending.drop(fqrv)
            self._rolling.pop(fqrv, None)
            self._joined.pop(fqrv, None)

    def stats(self) -> SinkStats:
        """Events received, kept for joining, and lost (evicted unjoined or not taken)."""
        with self._lock:
            self._index(None)
            c = self._counts
            with self._intake_lock:
                received, refused = self._received, self._refused
            return SinkStats(
                emitted=received, written=c["written"], dropped=c["evicted"] + c["failed"] + refused
            )

    def pending_bytes(self) -> int:
        """The estimated memory the kept predictions take (at most `max_prediction_bytes`)."""
        with self._lock:
            self._index(None)
            return self._pending.bytes

    def joiner_stats(self) -> JoinerStats:
        """Cumulative record and prediction counters, and the predictions kept now."""
        now = self._clock.now_ms()
        with self._lock:
            self._index(None)
            self._expire(now, LOOP_EXPIRY_LIMIT)
            c = self._counts
            with self._intake_lock:
                unkeyed = self._unkeyed
            return JoinerStats(
                pending=len(self._pending),
                joined=c["joined"],
                expired=c["expired"],
                evicted=c["evicted"],
                unkeyed=unkeyed + c["unkeyed"],
                matched=c["matched"],
                unknown=c["unknown"],
                mismatched=c["mismatched"],
                refused=c["refused"],
            )

    def tallies(self) -> FeedbackTallies:
        """Records per contract by outcome and predictions joined per servable, so far."""
        with self._lock:
            records = {c: dict(counts) for c, counts in self._contract_records.items()}
            return FeedbackTallies(records, dict(self._joined))


def _refusal(kept: Sequence[PendingPrediction], actual: Actual) -> tuple[str, str] | None:
    """Why `actual` fits none of the kept predictions of its key, as `misfit` says it for
    the oldest; None when it fits one, or when none can be scored anyway (joining them
    counts as mismatched: a corrected record would not fit them better)."""
    scorable = [entry.prediction for entry in kept if entry.prediction is not None]
    reasons = [misfit(actual, p.n_rows, numbers=reads_numbers(p)) for p in scorable]
    if not reasons or any(reason is None for reason in reasons):
        return None
    return reasons[0]
