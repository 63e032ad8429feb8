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
    latency_ms: float = 1.0,
    served: bool = True,
    request: Frame | None = None,
    at_ms: int = 0,
) -> PredictionEvent:
    return PredictionEvent(
        fqrv=fqrv or make_fqrv("v1"),
        served_request=served,
        timestamp_ms=at_ms,
        request=request or make_frame(a=[1.5, 2.5], name=["x", "y"]),
        prediction=make_frame(prediction=[0.25, 0.75]),
        latency_ms=latency_ms,
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

    def test_sizes_must_be_positive(self) -> None:
        with pytest.raises(ValueError, match="positive"):
            RecentPredictions(capacity=0)


class TestLatencies:
    def test_percentiles_per_servable_and_kind(self) -> None:
        ring = RecentPredictions()
        v1, v2 = make_fqrv("v1"), make_fqrv("v2")
        feed(ring, *(event(v1, latency_ms=float(ms)) for ms in range(1, 101)))
        feed(ring, event(v1, latency_ms=500.0, served=False), event(v2, latency_ms=7.0))

        served = ring.latency(v1)
        assert served is not None
        assert (served.count, served.p50, served.p95, served.p99) == (100, 50.0, 95.0, 99.0)
        shadow = ring.latency(v1, served=False)
        assert shadow is not None
        assert shadow.p99 == 500.0
        only = ring.latency(v2)
        assert only is not None
        assert (only.p50, only.p99) == (7.0, 7.0)
        assert ring.latency(v2, served=False) is None

    def test_only_the_last_latencies_count_and_a_gone_servable_is_forgotten(self) -> None:
        ring = RecentPredictions(latencies=2)
        feed(ring, *(event(latency_ms=ms) for ms in (100.0, 1.0, 2.0)))

        summary = ring.latency(make_fqrv("v1"))
        assert summary is not None
        assert (summary.count, summary.p99) == (2, 2.0)
        ring.forget([make_fqrv("v1")])
        assert ring.latency(make_fqrv("v1")) is None
