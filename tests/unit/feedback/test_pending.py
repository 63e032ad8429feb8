from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import numpy as np
import pytest

from forestflow.domain.frame import Frame
from forestflow.feedback.pending import PendingPredictions, compact_prediction
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
