"""Predictions waiting for their feedback: compact, found by key, bounded in bytes.

A kept prediction holds only what a join needs: its servable, its key, when it arrived,
and a copy of the prediction columns that scoring reads (`scoring_columns`) — never the
request, nor the model's whole output batch that a served prediction is a view of.
Its size is estimated from what it holds (the entry, the key, the copied columns and
their values) plus `INDEX_BYTES` for its share of the indexes; `tests/unit/feedback/
test_pending.py` checks the estimate against what Python really allocates.

One scored request makes one entry per distinct key among its rows (`split_by_key`),
each holding the rows of that key: a one-row request, or one whose rows share their key,
makes one entry as it always did; a request of n rows with n keys makes n entries, each
estimated and bounded like any other (about 0.9 kB for a one-row regression).

Entries are kept in arrival order (for expiry and eviction) and chained per
(contract, key), oldest first, so the oldest entry overall is always the first of its
chain and every operation is O(1) per entry it touches. Not thread-safe: the joiner locks.
"""

from __future__ import annotations

import collections
import itertools
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from forestflow.domain.fqrv import FQRV, Contract
from forestflow.domain.frame import Column, Frame
from forestflow.feedback.scoring import LABEL, scoring_columns

INDEX_BYTES = 304
"""Bytes one entry adds to the indexes beyond its own objects: its slot in the arrival
order (an ordered-dict node and its int key) and, for the first of a key, its slot in the
key index and the (contract, key) tuple. Measured on CPython 3.11 with tracemalloc (about
270 with every key distinct), plus a margin for where the dict tables happen to stand."""

_NO_CONFIGS: Mapping[str, str] = MappingProxyType({})
"""The configs of every compact prediction: one shared empty mapping, not one per entry."""


@dataclass(slots=True, eq=False)
class PendingPrediction:
    """One prediction waiting for feedback."""

    seq: int
    arrived_ms: int
    fqrv: FQRV
    key: str
    prediction: Frame | None
    """The columns scoring reads, copied; None when the prediction cannot be scored."""
    size: int = 0
    """Estimated bytes held by this entry (see the module docstring)."""
    newer: PendingPrediction | None = None
    """The next prediction under the same (contract, key)."""
    last: PendingPrediction | None = None
    """On the oldest prediction of a (contract, key): the newest one."""


def compact_prediction(prediction: Frame) -> Frame | None:
    """A copy of the columns of `prediction` that scoring reads; None if it never scores."""
    names = scoring_columns(prediction)
    if names is None:
        return None
    columns = {name: np.array(prediction[name], copy=True) for name in names}
    return Frame(columns, _NO_CONFIGS)


def split_by_key(
    prediction: Frame, key: str, row_keys: Sequence[str] | None
) -> list[tuple[str, Frame | None]]:
    """The entries one prediction makes, each a key and its `compact_prediction`.

    With `row_keys` (one per row): per distinct non-empty key, in order of first
    appearance, the rows of that key (copied). Without them, or when all rows share their
    key, the whole prediction under `key` (nothing when it is empty). Row keys that do
    not match the prediction's rows (a model answering with another number of rows) count
    as absent."""
    if row_keys is None or len(row_keys) != prediction.n_rows:
        return [(key, compact_prediction(prediction))] if key else []
    rows: dict[str, list[int]] = {}
    for row, row_key in enumerate(row_keys):
        if row_key:
            rows.setdefault(row_key, []).append(row)
    compact = compact_prediction(prediction)
    if len(rows) == 1 and len(row_keys) == len(next(iter(rows.values()))):
        return [(next(iter(rows)), compact)]
    if compact is None:
        return [(row_key, None) for row_key in rows]
    return [(row_key, _take_rows(compact, indexes)) for row_key, indexes in rows.items()]


def _take_rows(compact: Frame, rows: list[int]) -> Frame:
    index = np.asarray(rows, dtype=np.intp)
    return Frame({name: column[index] for name, column in compact.columns.items()}, _NO_CONFIGS)


def reads_numbers(compact: Frame) -> bool:
    """Whether scoring `compact` (a `compact_prediction`) needs numbers as actual values: a
    regression, whose one kept column is numeric (a classification keeps its labels)."""
    names = compact.names
    return LABEL not in compact and len(names) == 1 and compact[names[0]].dtype.kind in "iuf"


def estimated_bytes(entry: PendingPrediction) -> int:
    """What keeping `entry` costs in memory (see the module docstring)."""
    size = INDEX_BYTES + sys.getsizeof(entry) + sys.getsizeof(entry.key)
    frame = entry.prediction
    if frame is not None:
        size += sys.getsizeof(frame) + sys.getsizeof(frame.columns)
        for name, column in frame.columns.items():
            size += sys.getsizeof(name) + _column_bytes(column)
    return size


def _column_bytes(column: Column) -> int:
    size = sys.getsizeof(column)  # the array object and the data it owns
    if column.dtype.kind == "O":  # and the objects it points at, each once
        distinct = {id(value): value for value in column.tolist()}
        size += sum(sys.getsizeof(value) for value in distinct.values())
    return size


class PendingPredictions:
    """Kept predictions in arrival order, by (contract, key), within `max_bytes`."""

    def __init__(self, *, max_bytes: int, max_count: int | None = None) -> None:
        self.max_bytes = max_bytes
        self.max_count = max_count
        self.bytes = 0
        """Estimated bytes held now."""
        self._seq = 0
        self._by_arrival: collections.OrderedDict[int, PendingPrediction] = (
            collections.OrderedDict()
        )
        self._by_key: dict[tuple[Contract, str], PendingPrediction] = {}

    def __len__(self) -> int:
        return len(self._by_arrival)

    def add(self, fqrv: FQRV, key: str, prediction: Frame | None, arrived_ms: int) -> int:
        """Keep a prediction; evict the oldest ones while over a bound. Returns how many
        were evicted (the new one too, if it alone is over `max_bytes`)."""
        entry = PendingPrediction(self._seq, arrived_ms, fqrv, key, prediction)
        entry.size = estimated_bytes(entry)
        self._seq += 1
        self._by_arrival[entry.seq] = entry
        self.bytes += entry.size
        head = self._by_key.get((fqrv.contract, key))
        if head is None or head.last is None:
            self._by_key[(fqrv.contract, key)] = entry
            entry.last = entry
        else:
            head.last.newer = entry
            head.last = entry
        evicted = 0
        while self._by_arrival and self._over_bounds():
            self.pop_oldest()
            evicted += 1
        return evicted

    def _over_bounds(self) -> bool:
        if self.bytes > self.max_bytes:
            return True
        return self.max_count is not None and len(self._by_arrival) > self.max_count

    def oldest_arrival(self) -> int | None:
        """When the oldest kept prediction arrived (None when none is kept)."""
        if not self._by_arrival:
            return None
        return next(iter(self._by_arrival.values())).arrived_ms

    def pop_oldest(self) -> PendingPrediction:
        """Forget the oldest prediction and return it."""
        _, entry = self._by_arrival.popitem(last=False)
        self.bytes -= entry.size
        bucket = (entry.fqrv.contract, entry.key)
        newer = entry.newer  # `entry` is the first of its chain: it is the oldest overall
        if newer is None:
            del self._by_key[bucket]
        else:
            newer.last = entry.last
            self._by_key[bucket] = newer
        entry.newer = entry.last = None
        return entry

    def peek(self, contract: Contract, key: str) -> list[PendingPrediction]:
        """Every prediction of `contract` kept under `key`, oldest first, left in place."""
        entry = self._by_key.get((contract, key))
        found: list[PendingPrediction] = []
        while entry is not None:
            found.append(entry)
            entry = entry.newer
        return found

    def drop(self, fqrv: FQRV) -> int:
        """Forget every prediction of `fqrv` (a servable deleted); returns how many."""
        doomed = [entry for entry in self._by_arrival.values() if entry.fqrv == fqrv]
        for bucket in {(entry.fqrv.contract, entry.key) for entry in doomed}:
            chain = self.peek(*bucket)
            kept = [entry for entry in chain if entry.fqrv != fqrv]
            for entry in chain:
                entry.newer = entry.last = None
            if not kept:
                del self._by_key[bucket]
                continue
            for older, newer in itertools.pairwise(kept):
                older.newer = newer
            kept[0].last = kept[-1]
            self._by_key[bucket] = kept[0]
        for entry in doomed:
            del self._by_arrival[entry.seq]
            self.bytes -= entry.size
        return len(doomed)

    def take(self, contract: Contract, key: str) -> list[PendingPrediction]:
        """Forget and return every prediction of `contract` kept under `key`, oldest first."""
        entry = self._by_key.pop((contract, key), None)
        taken: list[PendingPrediction] = []
        while entry is not None:
            del self._by_arrival[entry.seq]
            self.bytes -= entry.size
            taken.append(entry)
            newer = entry.newer
            entry.newer = entry.last = None
            entry = newer
        return taken
