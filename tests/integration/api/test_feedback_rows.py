"""Feedback that forgives (issue 11, scope 3): each row of a scored request joins under its
own key, and a record that does not fit its prediction is refused without consuming it.

One real scikit-learn regressor (`exact`, a linear model of the true function) serves, so
a record joined with the right row's prediction has an error of about 0 and one joined with
another row's prediction does not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression

from forestflow.predictionlog.events import event_record
from forestflow.predictionlog.sinks import MemorySink
from tests.integration.api.conftest import Harness, HarnessFactory

BASE = "/shop/rows/0"
ROWS = [(2.0, 4.0), (15.0, 30.0), (7.5, 0.0)]


def truth(price: float, stock: float) -> float:
    return 3.0 * price - 0.5 * stock + 10.0


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(5)
    x = pd.DataFrame({"price": rng.uniform(1, 20, 100), "stock": rng.uniform(0, 50, 100)})
    y = [truth(p, s) for p, s in zip(x["price"], x["stock"], strict=True)]
    directory = tmp_path_factory.mktemp("exact")
    joblib.dump(LinearRegression().fit(x, y), directory / "model.joblib")
    return directory


def serve(path: Path, key_features: list[str]) -> dict[str, Any]:
    return {
        "path": path.as_uri(),
        "fqrv": {
            "contract": {"organization": "shop", "project": "rows", "contractNumber": 0},
            "releaseVersion": "exact",
        },
        "flavor": {"Sklearn": {"modelPath": "model.joblib"}},
        "servableSettings": {
            "loggingSettings": {"logLevel": "FULL", "keyFeatures": key_features},
        },
    }


def rows_keyed_per_row(orders: list[str]) -> dict[str, Any]:
    """A score request whose rows carry their own `orderId` (a field the model ignores)."""
    return {
        "schema": [
            {"type": "String", "fields": ["orderId"]},
            {"type": "Float64", "fields": ["price", "stock"]},
        ],
        "datum": [
            {"tensors": [{"String": {"data": [order]}}, {"Float64": {"data": [p, s]}}]}
            for order, (p, s) in zip(orders, ROWS, strict=False)
        ],
        "configs": {"batch": "b-1"},
    }


def rows_keyed_by_configs(n_rows: int, order: str) -> dict[str, Any]:
    """A score request of `n_rows` rows that share the key `order` (from `configs`)."""
    return {
        "schema": [{"type": "Float64", "fields": ["price", "stock"]}],
        "datum": [{"tensors": [{"Float64": {"data": [p, s]}}]} for p, s in ROWS[:n_rows]],
        "configs": {"orderId": order},
    }


async def started(
    factory: HarnessFactory, model: Path, key_features: list[str]
) -> tuple[Harness, MemorySink]:
    sink = MemorySink()
    harness = await factory(sinks={"memory": sink})
    deployed = await harness.client.post("/servable", json=serve(model, key_features))
    assert deployed.status_code == 201, deployed.text
    await harness.tick()
    return harness, sink


async def score(harness: Harness, body: dict[str, Any]) -> None:
    answer = await harness.client.post(f"{BASE}/score", json=body)
    assert answer.status_code == 200, answer.text


async def feedback(harness: Harness, *records: dict[str, Any]) -> dict[str, Any]:
    answer = await harness.client.post(f"{BASE}/feedback", json={"records": list(records)})
    assert answer.status_code == 200, answer.text
    accepted: dict[str, Any] = answer.json()["FeedbackAccepted"]
    return accepted


def counts(accepted: dict[str, Any]) -> tuple[int, int, int, int, int]:
    return (
        accepted["records"],
        accepted["matched"],
        accepted["unknown"],
        accepted["mismatched"],
        len(accepted["refused"]),
    )


def learned(accepted: dict[str, Any]) -> dict[str, float]:
    (servable,) = accepted["servables"]
    metrics: dict[str, float] = servable["metrics"]
    return metrics


class TestEachRowJoinsUnderItsOwnKey:
    async def test_two_rows_of_one_request_get_two_joins_each_with_its_own_prediction(
        self, harness_factory: HarnessFactory, model: Path
    ) -> None:
        harness, _ = await started(harness_factory, model, ["batch", "orderId"])
        await score(harness, rows_keyed_per_row(["o-1", "o-2"]))

        # the truth of the second row first: joined with the first row's, it would be off by 28
        second = await feedback(harness, {"key": "b-1.o-2", "actual": truth(*ROWS[1])})
        first = await feedback(harness, {"key": "b-1.o-1", "actual": truth(*ROWS[0])})

        assert counts(second) == counts(first) == (1, 1, 0, 0, 0)
        assert learned(second)["mae"] < 1e-6
        assert learned(first)["mae"] < 1e-6
        stats = (await harness.client.get(f"{BASE}/stats")).json()
        assert stats[0]["ServableMetrics"]["performanceMetrics"]["feedbackCount"] == 2
        again = await feedback(harness, {"key": "b-1.o-1", "actual": truth(*ROWS[0])})
        assert counts(again) == (1, 0, 1, 0, 0)  # joined once

    async def test_the_logged_event_shows_each_rows_key(
        self, harness_factory: HarnessFactory, model: Path
    ) -> None:
        harness, sink = await started(harness_factory, model, ["batch", "orderId"])

        await score(harness, rows_keyed_per_row(["o-1", "o-2", "o-3"]))

        (event,) = sink.events
        record = event_record(event)
        assert record["key"] == "b-1.o-1"  # the first row's, as the key always was
        assert record["rowKeys"] == ["b-1.o-1", "b-1.o-2", "b-1.o-3"]

    async def test_rows_that_share_a_key_join_with_one_value_per_row(
        self, harness_factory: HarnessFactory, model: Path
    ) -> None:
        harness, sink = await started(harness_factory, model, ["orderId"])

        await score(harness, rows_keyed_by_configs(2, "o-7"))
        accepted = await feedback(
            harness, {"key": "o-7", "actual": [truth(*ROWS[0]), truth(*ROWS[1])]}
        )

        assert event_record(sink.events[0])["rowKeys"] == ["o-7", "o-7"]
        assert counts(accepted) == (1, 1, 0, 0, 0)
        assert learned(accepted)["mae"] < 1e-6


class TestRecordsThatDoNotFit:
    async def test_a_wrong_length_record_is_refused_and_the_corrected_record_joins(
        self, harness_factory: HarnessFactory, model: Path
    ) -> None:
        harness, _ = await started(harness_factory, model, ["orderId"])
        await score(harness, rows_keyed_by_configs(2, "o-1"))

        refused = await feedback(harness, {"key": "o-1", "actual": truth(*ROWS[0])})
        corrected = await feedback(
            harness, {"key": "o-1", "actual": [truth(*ROWS[0]), truth(*ROWS[1])]}
        )

        assert counts(refused) == (1, 0, 0, 0, 1)
        assert refused["refused"] == [
            {
                "index": 0,
                "key": "o-1",
                "field": "records[0].actual",
                "reason": "one value for a prediction of 2 rows: "
                "send a list of 2 values, one per row",
            }
        ]
        assert refused["servables"] == []
        assert counts(corrected) == (1, 1, 0, 0, 0)
        assert learned(corrected)["mae"] < 1e-6

    async def test_a_wrong_type_actual_is_refused_without_consuming(
        self, harness_factory: HarnessFactory, model: Path
    ) -> None:
        harness, _ = await started(harness_factory, model, ["orderId"])
        await score(harness, rows_keyed_by_configs(1, "o-2"))

        refused = await feedback(harness, {"key": "o-2", "actual": "thirty"})
        corrected = await feedback(harness, {"key": "o-2", "actual": truth(*ROWS[0])})

        (refusal,) = refused["refused"]
        assert refusal["field"] == "records[0].actual"
        assert refusal["reason"] == (
            "expected a number (the prediction is a regression), got str 'thirty'"
        )
        assert counts(corrected) == (1, 1, 0, 0, 0)

    async def test_the_reply_lists_every_refused_record_and_the_counters_add_up(
        self, harness_factory: HarnessFactory, model: Path
    ) -> None:
        harness, _ = await started(harness_factory, model, ["batch", "orderId"])
        await score(harness, rows_keyed_per_row(["o-1", "o-2", "o-3"]))

        accepted = await feedback(
            harness,
            {"key": "b-1.o-1", "actual": [1.0, 2.0]},
            {"key": "b-1.o-2", "actual": truth(*ROWS[1])},
            {"key": "never-logged", "actual": 1.0},
            {"key": "b-1.o-3", "actual": True},
            {"key": "b-1.o-1", "actual": ["7"]},
        )

        assert counts(accepted) == (5, 1, 1, 0, 3)
        assert [(r["index"], r["key"], r["field"]) for r in accepted["refused"]] == [
            (0, "b-1.o-1", "records[0].actual"),
            (3, "b-1.o-3", "records[3].actual"),
            (4, "b-1.o-1", "records[4].actual[0]"),
        ]
        assert all(r["reason"] for r in accepted["refused"])
        log_stats = (await harness.client.get("/prediction-log/stats")).json()
        joiner = log_stats["PredictionLogStats"]["feedback"]
        assert (joiner["matched"], joiner["unknown"], joiner["refused"]) == (1, 1, 3)
        assert joiner["pending"] == 2  # o-1 and o-3 still wait for their truth
        metrics = (await harness.client.get("/metrics")).text
        assert (
            'forestflow_feedback_records_total{contract="shop.rows.0",outcome="refused"} 3.0'
            in metrics
        )

        # both still join once their records are right
        fixed = await feedback(
            harness,
            {"key": "b-1.o-1", "actual": truth(*ROWS[0])},
            {"key": "b-1.o-3", "actual": truth(*ROWS[2])},
        )
        assert counts(fixed) == (2, 2, 0, 0, 0)
        assert learned(fixed)["mae"] < 1e-6
