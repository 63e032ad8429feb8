from __future__ import annotations

import math

import pytest

from forestflow.domain.fqrv import FQRV
from forestflow.domain.frame import Frame
from forestflow.predictionlog.events import PredictionEvent
from forestflow.predictionlog.recent import PREVIEW_TEXT, PREVIEW_VALUES, RecentPredictions
from tests.builders import make_fqrv, make_frame


def event(
    fqrv: FQRV | None = None,
    *,
    request: Frame | None = None,
    at_ms: int = 0,
) -> PredictionEvent:
    return PredictionEvent(
        fqrv=fqrv or make_fqrv("v1"),
        served_request=True,
        timestamp_ms=at_ms,
        request=request or make_frame(a=[1.5, 2.5], name=["x", "y"]),
        prediction=make_frame(prediction=[0.25, 0.75]),
        latency_ms=1.0,
        key="k",
    )


def feed(ring: RecentPredictions, *events: PredictionEvent) -> None:
    for item in events:
        ring.emit(item)
    ring.catch_up()


class TestSummaries:
    def test_an_event_is_summarised_by_its_first_row_once_caught_up(self) -> None:
        ring = RecentPredictions()
        ring.emit(event(at_ms=5))
        assert ring.recent() == []  # nothing is summarised on the serving path
        ring.catch_up()

        (summary,) = ring.recent()
        assert summary.fqrv == make_fqrv("v1")
        assert (summary.served_request, summary.timestamp_ms, summary.key) == (True, 5, "k")
        assert summary.rows == 2
        assert summary.features == (("a", "1.5"), ("name", "x"))
        assert summary.prediction == (("prediction", "0.25"),)
        assert not summary.more_features
        assert ring.stats().emitted == ring.stats().written == 1

    def test_wide_long_missing_and_binary_values_are_cut_short(self) -> None:
        columns = {f"f{i}": [float(i)] for i in range(PREVIEW_VALUES + 2)}
        columns["f0"] = [math.nan]
        columns["f1"] = ["z" * 100]
        columns["f2"] = [b"\x00\x01"]
        ring = RecentPredictions()
        feed(ring, event(request=make_frame(**columns)))

        (summary,) = ring.recent()
        values = dict(summary.features)
        assert len(values) == PREVIEW_VALUES
        assert summary.more_features
        assert values["f0"] == ""
        assert len(values["f1"]) == PREVIEW_TEXT
        assert values["f1"].endswith("…")
        assert values["f2"] == "<2 bytes>"

    def test_the_newest_come_first_filtered_by_contract_and_bounded(self) -> None:
        ring = RecentPredictions(capacity=3)
        other = make_fqrv("v1", project="other")
        feed(ring, *(event(at_ms=t) for t in range(4)), event(other, at_ms=9))

        assert [s.timestamp_ms for s in ring.recent()] == [9, 3, 2]
        assert [s.timestamp_ms for s in ring.recent(make_fqrv().contract)] == [3, 2]
        assert [s.timestamp_ms for s in ring.recent(limit=1)] == [9]

    def test_more_events_than_the_queue_holds_between_batches_drop_the_oldest(self) -> None:
        ring = RecentPredictions(capacity=2)
        feed(ring, *(event(at_ms=t) for t in range(5)))

        assert [s.timestamp_ms for s in ring.recent()] == [4, 3]
        stats = ring.stats()
        assert (stats.emitted, stats.written, stats.dropped) == (5, 2, 3)

    def test_the_capacity_must_be_positive(self) -> None:
        with pytest.raises(ValueError, match="positive"):
            RecentPredictions(capacity=0)
