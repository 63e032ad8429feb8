"""The joiner's tallies for `/metrics`: records per contract, joins per servable."""

from __future__ import annotations

import numpy as np

from forestflow.domain.fqrv import FQRV
from forestflow.domain.frame import Frame
from forestflow.feedback.joiner import FeedbackJoiner, FeedbackTallies
from forestflow.feedback.records import FeedbackRecord
from forestflow.predictionlog.events import PredictionEvent
from forestflow.testing import FakeClock
from tests.builders import make_contract, make_fqrv

CONTRACT = make_contract()
OTHER = make_contract(project="other")
SERVED = make_fqrv("served")
SHADOW = make_fqrv("shadow")


def regression(fqrv: FQRV, key: str, value: float) -> PredictionEvent:
    return PredictionEvent(
        fqrv=fqrv,
        served_request=fqrv == SERVED,
        timestamp_ms=0,
        request=Frame({"x": np.array([1.0])}),
        prediction=Frame({"prediction": np.array([value])}),
        latency_ms=1.0,
        key=key,
    )


class TestTallies:
    def test_records_per_contract_by_outcome_and_joins_per_servable(self) -> None:
        joiner = FeedbackJoiner(clock=FakeClock())
        for key in ("a", "b", "c"):
            joiner.emit(regression(SERVED, key, 10.0))
            joiner.emit(regression(SHADOW, key, 12.0))
        assert joiner.tallies() == FeedbackTallies({}, {})

        joiner.join(
            CONTRACT,
            [
                FeedbackRecord("a", 10.0),
                FeedbackRecord("b", 11.0),
                FeedbackRecord("c", "ten"),  # does not fit a regression: refused
                FeedbackRecord("nowhere", 1.0),
            ],
        )
        joiner.join(OTHER, [FeedbackRecord("a", 1.0)])  # the keys are the first contract's

        tallies = joiner.tallies()
        assert tallies.records == {
            CONTRACT: {"matched": 2, "unknown": 1, "mismatched": 0, "refused": 1},
            OTHER: {"matched": 0, "unknown": 1, "mismatched": 0, "refused": 0},
        }
        assert tallies.joined == {SERVED: 2, SHADOW: 2}
        assert joiner.joiner_stats().pending == 2  # key c still waits, for both

    def test_a_forgotten_servable_has_no_joins(self) -> None:
        joiner = FeedbackJoiner(clock=FakeClock())
        joiner.emit(regression(SERVED, "a", 10.0))
        joiner.emit(regression(SHADOW, "a", 12.0))
        joiner.join(CONTRACT, [FeedbackRecord("a", 10.0)])
        joiner.forget(SHADOW)
        assert joiner.tallies().joined == {SERVED: 1}
