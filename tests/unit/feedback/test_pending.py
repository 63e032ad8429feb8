from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import numpy as np
import pytest

from forestflow.domain.frame import Frame
from forestflow.feedback.pending import (
    PendingPredictions,
    compact_prediction,
    reads_numbers,
    split_by_key,
)
from forestflow.feedback.records import Actual
from forestflow.feedback.scoring import score_prediction
from tests.builders import make_contract, make_fqrv, make_frame

FQRV = make_fqrv("v1")
START_MS = 1_700_000_000_000
BATCH = np.linspace(400.0, 500.0, 64)


def regression_view(i: int) -> Frame:
    """A served prediction as the scheduler splits it: a view of the batch's output."""
    return Frame({"prediction": BATCH[i % 64 : i % 64 + 1]})


def classification(i: int) -> Frame:
    columns: dict[str, list[Any]] = {
        "label": [f"class-{i % 7}"],
        "class-0": [0.9],
        "class-1": [0.1],
    }
    return make_frame(None, **columns)


def multi_row(i: int) -> Frame:
    return make_frame(prediction=[float(i)] * 16, extra=[1.0] * 16, label=["a"] * 16)


def one_row_each(i: int) -> Frame:
    """A 16-row prediction whose rows have 16 keys: made into 16 one-row entries."""
    return make_frame(prediction=[float(i + row) for row in range(16)], extra=[1.0] * 16)


def measured_and_estimated_per_row(n: int) -> tuple[int, int]:
    """As `measured_and_estimated`, for requests whose rows each have their own key."""
    pending = PendingPredictions(max_bytes=1 << 40)
    predictions = [one_row_each(i) for i in range(n)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i, prediction in enumerate(predictions):
            keys = [f"order-{i:06d}-{row:02d}" for row in range(16)]
            for key, compact in split_by_key(prediction, keys[0], keys):
                pending.add(FQRV, key, compact, START_MS + i)
        del predictions
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return after - before, pending.bytes


def measured_and_estimated(make: Any, n: int) -> tuple[int, int]:
    """Bytes Python allocated to keep `n` predictions (every key distinct, the costliest
    case), and the sum of their estimates."""
    pending = PendingPredictions(max_bytes=1 << 40)
    predictions = [make(i) for i in range(n)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i, prediction in enumerate(predictions):
            # as in serving: the key and the arrival time are made per event
            pending.add(FQRV, f"order-{i:08d}", compact_prediction(prediction), START_MS + i)
        del predictions
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return after - before, pending.bytes


class TestSizeEstimate:
    @pytest.mark.parametrize("make", [regression_view, classification, multi_row])
    def test_the_estimate_covers_what_python_allocates(self, make: Any) -> None:
        # 2**15 * 2 / 3 + 1 entries: the index dicts just grew, their tables at their emptiest
        measured, estimated = measured_and_estimated(make, 21_846)

        assert measured <= estimated  # never under: the bound is a real bound
        assert estimated <= 1.5 * measured  # and honest: not a wild guess either

    def test_the_estimate_covers_entries_made_per_row(self) -> None:
        measured, estimated = measured_and_estimated_per_row(21_846 // 16 + 1)

        assert measured <= estimated
        assert estimated <= 1.5 * measured

    def test_an_entry_holds_a_copy_not_the_batch_it_came_from(self) -> None:
        batch = np.arange(10_000, dtype=np.float64)
        prediction = Frame({"prediction": batch[5:6]})

        compact = compact_prediction(prediction)

        assert compact is not None
        assert not np.shares_memory(compact["prediction"], batch)
        assert compact["prediction"].tolist() == [5.0]


class TestCompactPredictions:
    @pytest.mark.parametrize(
        ("columns", "actual", "kept"),
        [
            ({"prediction": [1.0], "debug": ["x"], "prediction_1": [2.0]}, 1.5, ["prediction"]),
            ({"score": [3.0], "note": ["n"]}, 2.0, ["score"]),
            ({"label": ["a"], "a": [0.75], "b": [0.25], "rank": [1], "id": ["i"]}, "b", None),
            ({"prediction": ["cat"], "cat": [0.6], "dog": [0.4], "n": [1]}, "dog", None),
            ({"prediction": [True], "True": [0.6], "False": [0.4]}, "true", None),
        ],
    )
    def test_scoring_the_kept_columns_gives_the_same_samples(
        self, columns: dict[str, Any], actual: Actual, kept: list[str] | None
    ) -> None:
        full = make_frame(**columns)

        compact = compact_prediction(full)

        assert compact is not None
        if kept is not None:
            assert compact.names == kept
        assert not {"id", "note", "rank"} & set(compact.names)
        expected = score_prediction(full, actual, tolerance_rel=0.1)
        assert expected is not None
        assert score_prediction(compact, actual, tolerance_rel=0.1) == expected

    def test_a_prediction_scoring_never_reads_keeps_nothing(self) -> None:
        assert compact_prediction(make_frame(prediction_0=[1.0], prediction_1=[2.0])) is None


class TestBounds:
    def test_the_oldest_are_evicted_to_stay_within_the_byte_bound(self) -> None:
        one = PendingPredictions(max_bytes=1 << 30)
        one.add(FQRV, "k0", compact_prediction(regression_view(0)), 0)
        pending = PendingPredictions(max_bytes=3 * one.bytes + 10)
        evicted = [
            pending.add(FQRV, f"k{i}", compact_prediction(regression_view(i)), i) for i in range(5)
        ]

        assert evicted == [0, 0, 0, 1, 1]
        assert len(pending) == 3
        assert pending.bytes <= pending.max_bytes
        assert pending.take(make_contract(), "k1") == []
        assert [e.key for e in pending.take(make_contract(), "k2")] == ["k2"]
        assert pending.oldest_arrival() == 3

    def test_a_prediction_bigger_than_the_bound_is_evicted_at_once(self) -> None:
        pending = PendingPredictions(max_bytes=100)

        assert pending.add(FQRV, "k", compact_prediction(regression_view(0)), 0) == 1
        assert (len(pending), pending.bytes) == (0, 0)

    def test_the_count_bound_applies_when_set(self) -> None:
        pending = PendingPredictions(max_bytes=1 << 30, max_count=2)
        for i in range(4):
            pending.add(FQRV, "same", compact_prediction(regression_view(i)), i)

        assert [e.arrived_ms for e in pending.take(make_contract(), "same")] == [2, 3]
        assert (len(pending), pending.bytes) == (0, 0)


class TestDroppingAServable:
    def test_only_its_predictions_go_chains_and_bytes_stay_right(self) -> None:
        other = make_fqrv("v2")
        pending = PendingPredictions(max_bytes=1 << 30)
        for i, (fqrv, key) in enumerate(
            [(FQRV, "a"), (other, "a"), (FQRV, "a"), (FQRV, "b"), (other, "c"), (other, "a")]
        ):
            pending.add(fqrv, key, compact_prediction(regression_view(i)), i)
        one = pending.bytes // 6

        assert pending.drop(FQRV) == 3

        assert (len(pending), pending.bytes) == (3, 3 * one)
        assert pending.oldest_arrival() == 1  # arrival order kept for eviction
        assert [e.arrived_ms for e in pending.peek(make_contract(), "a")] == [1, 5]
        assert pending.take(make_contract(), "b") == []
        assert pending.pop_oldest().arrived_ms == 1
        pending.add(FQRV, "a", compact_prediction(regression_view(6)), 6)  # the chain grows
        assert [e.arrived_ms for e in pending.take(make_contract(), "a")] == [5, 6]
        assert [e.arrived_ms for e in pending.take(make_contract(), "c")] == [4]
        assert (len(pending), pending.bytes) == (0, 0)


class TestSplitByKey:
    def test_each_key_gets_its_rows_in_order_of_first_appearance(self) -> None:
        prediction = make_frame(label=["a", "b", "c", "d"], a=[0.1, 0.2, 0.3, 0.4], n=[1, 2, 3, 4])

        entries = split_by_key(prediction, "k2", ["k2", "k1", "k2", "k3"])

        assert [key for key, _ in entries] == ["k2", "k1", "k3"]
        frames = [frame for _, frame in entries]
        assert all(frame is not None for frame in frames)
        assert [f["label"].tolist() for f in frames if f is not None] == [["a", "c"], ["b"], ["d"]]
        assert [f["a"].tolist() for f in frames if f is not None] == [[0.1, 0.3], [0.2], [0.4]]
        assert all(f.names == ["label", "a"] for f in frames if f is not None)

    def test_rows_copied_not_views_of_the_prediction(self) -> None:
        batch = np.arange(4, dtype=np.float64)

        entries = split_by_key(Frame({"prediction": batch}), "a", ["a", "b", "c", "d"])

        assert all(
            f is not None and not np.shares_memory(f["prediction"], batch) for _, f in entries
        )

    @pytest.mark.parametrize(
        ("key", "row_keys"),
        [("k", None), ("k", ["k", "k"]), ("k", ["k", "k", "k"])],
    )
    def test_one_key_keeps_the_prediction_whole(self, key: str, row_keys: list[str] | None) -> None:
        prediction = make_frame(prediction=[1.0, 2.0])

        ((entry_key, compact),) = split_by_key(prediction, key, row_keys)

        assert entry_key == "k"
        assert compact is not None
        assert compact["prediction"].tolist() == [1.0, 2.0]

    def test_rows_with_an_empty_key_are_left_out(self) -> None:
        prediction = make_frame(prediction=[1.0, 2.0, 3.0])

        entries = split_by_key(prediction, "", ["", "b", ""])

        assert [(k, f["prediction"].tolist()) for k, f in entries if f is not None] == [
            ("b", [2.0])
        ]
        assert split_by_key(prediction, "", ["", "", ""]) == []
        assert split_by_key(prediction, "", None) == []

    def test_an_unscorable_prediction_makes_empty_entries(self) -> None:
        prediction = make_frame(prediction_0=[1.0, 2.0], prediction_1=[1.0, 2.0])

        assert split_by_key(prediction, "a", ["a", "b"]) == [("a", None), ("b", None)]


class TestLookup:
    def test_peek_leaves_the_predictions_in_place(self) -> None:
        pending = PendingPredictions(max_bytes=1 << 30)
        for i in range(3):
            pending.add(FQRV, "k" if i != 1 else "j", compact_prediction(regression_view(i)), i)

        peeked = pending.peek(make_contract(), "k")

        assert [e.arrived_ms for e in peeked] == [0, 2]
        assert len(pending) == 3
        assert pending.take(make_contract(), "k") == peeked
        assert pending.peek(make_contract(), "k") == []

    @pytest.mark.parametrize(
        ("columns", "numbers"),
        [
            ({"prediction": [1.0]}, True),
            ({"Regression": [1]}, True),
            ({"label": [1], "0": [0.4], "1": [0.6]}, False),
            ({"label": [2.0]}, False),
            ({"prediction": ["cat"], "cat": [0.6]}, False),
            ({"prediction": [True]}, False),
        ],
    )
    def test_a_regression_reads_numbers(self, columns: dict[str, Any], numbers: bool) -> None:
        compact = compact_prediction(make_frame(**columns))

        assert compact is not None
        assert reads_numbers(compact) is numbers
