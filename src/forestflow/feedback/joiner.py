"""The feedback joiner: recent keyed predictions in, ground truth joined with them (SPEC §6).

`FeedbackJoiner` is a `PredictionSink`: the app hands it every prediction event, served
and shadow. It keeps the events that have a key, per contract, until feedback consumes
them, for at most `window_ms` after they arrive (by the injected clock) and at most
`max_predictions` events in all (the oldest is evicted first). `join` takes a contract's
feedback records, consumes every kept prediction of that contract with each record's
key — whatever servable made it — scores them (`scoring`) and updates each servable's
rolling metrics (`rolling`). What `join` returns is what the control plane persists.

Guarantees, checked by tests/unit/feedback/test_joiner.py:
- `emit` is O(1) amortised, never blocks on I/O and never raises.
- A prediction is joined at most once: the same feedback sent twice counts once (the
  second time its key is unknown), and so does a key repeated within one request.
- A prediction older than `window_ms` (age > window) or evicted is never joined.
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
from forestflow.domain.metrics import FEEDBACK_COUNT, REWARD_FAILURES, REWARD_SUCCESSES
from forestflow.feedback.records import Actual, FeedbackRecord
from forestflow.feedback.rolling import RollingMetrics
from forestflow.feedback.scoring import score_prediction
from forestflow.predictionlog.events import PredictionEvent
from forestflow.predictionlog.sinks import PredictionSink, SinkStats

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MetricsUpdate:
    """What one feedback request changed for one servable."""

    values: dict[str, float]
    """Current rolling metrics to set (`mae`, `rmse`, `accuracy`, `logLoss`, as known)."""
    increments: dict[str, int]
    """Amounts to add to the all-time counters `feedbackCount`, `rewardSuccesses`,
    `rewardFailures`."""


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


@dataclass(frozen=True, slots=True)
class JoinerStats:
    """Counters of the joiner since start-up (records and predictions)."""

    pending: int
    """Predictions kept now, waiting for their feedback."""
    joined: int
    """Predictions joined with feedback."""
    expired: int
    """Predictions forgotten unjoined after `window_ms`."""
    evicted: int
    """Predictions evicted unjoined to stay within `max_predictions`."""
    unkeyed: int
    """Prediction events not kept because they had no key (no `keyFeatures`) or an empty one."""
    matched: int
    """Feedback records that joined at least one prediction."""
    unknown: int
    """Feedback records whose key joined nothing."""
    mismatched: int
    """Matched feedback records with a prediction that could not be scored."""


@dataclass(slots=True)
class _Kept:
    seq: int
    arrived_ms: int
    event: PredictionEvent


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
    (those with a key), `dropped` kept events evicted by the memory bound before any
    feedback reached them (plus any event that failed to be kept). Events without a key
    are not for this sink and expiring unjoined is normal retention: `joiner_stats()`
    counts both, not `dropped`.

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
        max_predictions: int = 100_000,
        rolling_window: int = 1_000,
        regression_tolerance_rel: float = 0.1,
    ) -> None:
        if window_ms <= 0 or max_predictions < 1 or rolling_window < 1:
            raise ValueError("window_ms, max_predictions and rolling_window must be positive")
        if not (math.isfinite(regression_tolerance_rel) and regression_tolerance_rel >= 0):
            raise ValueError("regression_tolerance_rel must be a finite number >= 0")
        self._clock = clock
        self._window_ms = window_ms
        self._max_predictions = max_predictions
        self._rolling_window = rolling_window
        self._tolerance = regression_tolerance_rel
        self._lock = threading.Lock()
        # Arrival order over all contracts (for expiry and eviction), and the same entries
        # by (contract, key), each bucket in arrival order: so the oldest entry overall is
        # always the first of its bucket and both structures update in O(1).
        self._pending: collections.OrderedDict[int, _Kept] = collections.OrderedDict()
        self._by_key: dict[tuple[Contract, str], collections.deque[_Kept]] = {}
        self._rolling: dict[FQRV, RollingMetrics] = {}
        self._seq = 0
        self._counts: collections.Counter[str] = collections.Counter()

    def emit(self, event: PredictionEvent) -> None:
        """Keep `event` for joining if it has a key; evict the oldest kept one when full."""
        try:
            now = self._clock.now_ms()
            with self._lock:
                self._counts["emitted"] += 1
                self._expire(now)
                if event.key:
                    self._keep(event, now)
                else:
                    self._counts["unkeyed"] += 1
        except Exception:  # a sink never raises into the serving path (PredictionSink)
            log.exception("feedback joiner could not keep a prediction event")
            with self._lock:
                self._counts["failed"] += 1

    def _keep(self, event: PredictionEvent, now: int) -> None:
        if len(self._pending) >= self._max_predictions:
            self._drop_oldest()
            self._counts["evicted"] += 1
        entry = _Kept(self._seq, now, event)
        self._seq += 1
        self._pending[entry.seq] = entry
        key = (event.fqrv.contract, event.key or "")
        self._by_key.setdefault(key, collections.deque()).append(entry)
        self._counts["written"] += 1

    def _expire(self, now: int) -> None:
        while self._pending:
            oldest = next(iter(self._pending.values()))
            if now - oldest.arrived_ms <= self._window_ms:
                return
            self._drop_oldest()
            self._counts["expired"] += 1

    def _drop_oldest(self) -> None:
        _, entry = self._pending.popitem(last=False)
        key = (entry.event.fqrv.contract, entry.event.key or "")
        bucket = self._by_key[key]
        bucket.popleft()  # `entry`: the oldest overall is the oldest of its bucket
        if not bucket:
            del self._by_key[key]

    def join(self, contract: Contract, records: Sequence[FeedbackRecord]) -> FeedbackOutcome:
        """Join records with `contract`'s kept predictions by key (consuming them)."""
        now = self._clock.now_ms()
        with self._lock:
            self._expire(now)
            tallies: dict[FQRV, _Tally] = {}
            counts = collections.Counter[str]()
            for record in records:
                kept = self._by_key.pop((contract, record.key), None)
                if kept is None:
                    counts["unknown"] += 1
                    continue
                counts["matched"] += 1
                for entry in kept:
                    del self._pending[entry.seq]
                counts["joined"] += len(kept)
                if not self._score(kept, record.actual, tallies):
                    counts["mismatched"] += 1
            self._counts.update(counts)
            updates = {
                fqrv: MetricsUpdate(self._rolling[fqrv].values(), tally.increments())
                for fqrv, tally in tallies.items()
            }
        return FeedbackOutcome(
            matched=counts["matched"],
            unknown=counts["unknown"],
            mismatched=counts["mismatched"],
            updates=updates,
        )

    def _score(self, kept: Sequence[_Kept], actual: Actual, tallies: dict[FQRV, _Tally]) -> bool:
        """Add the samples of each joined prediction; False if one could not be scored."""
        scorable = True
        for entry in kept:
            samples = score_prediction(
                entry.event.prediction, actual, tolerance_rel=self._tolerance
            )
            if samples is None:
                scorable = False
                continue
            fqrv = entry.event.fqrv
            rolling = self._rolling.get(fqrv)
            if rolling is None:
                rolling = self._rolling[fqrv] = RollingMetrics(self._rolling_window)
            tally = tallies.setdefault(fqrv, _Tally())
            for sample in samples:
                rolling.add(sample)
                if sample.success:
                    tally.successes += 1
                else:
                    tally.failures += 1
        return scorable

    def forget(self, fqrv: FQRV) -> None:
        """Drop the rolling metrics of `fqrv` (call when the servable is deleted)."""
        with self._lock:
            self._rolling.pop(fqrv, None)

    def stats(self) -> SinkStats:
        """Events received, kept for joining, and lost (evicted unjoined or failed)."""
        with self._lock:
            c = self._counts
            return SinkStats(
                emitted=c["emitted"], written=c["written"], dropped=c["evicted"] + c["failed"]
            )

    def joiner_stats(self) -> JoinerStats:
        """Cumulative record and prediction counters, and the predictions kept now."""
        with self._lock:
            c = self._counts
            return JoinerStats(
                pending=len(self._pending),
                joined=c["joined"],
                expired=c["expired"],
                evicted=c["evicted"],
                unkeyed=c["unkeyed"],
                matched=c["matched"],
                unknown=c["unknown"],
                mismatched=c["mismatched"],
            )
