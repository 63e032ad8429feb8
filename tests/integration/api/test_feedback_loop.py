"""The feedback loop over HTTP (SPEC §6): ground truth in, metrics out, policies act on them.

Two real scikit-learn regressors serve the same contract: `guess` (predicts the training
mean) serves, `exact` (a linear model of the true function) only shadows until its
`PerformanceBasedValidity` holds. Feedback makes `exact`'s MAE better, the rule makes it
valid, and `KeepTopRanked(1)` on MAE expires `guess` — but only once the MAEs rest on
`minSamples` joined predictions (issue 11): one record decides nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyRegressor
from sklearn.linear_model import LinearRegression

from tests.integration.api.conftest import Harness, HarnessFactory
from tests.payloads import fqrv_json

BASE = "/shop/demand/0"
FEATURES = ["price", "stock"]


def truth(price: float, stock: float) -> float:
    """The function both models try to learn."""
    return 3.0 * price - 0.5 * stock + 10.0


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    rng = np.random.default_rng(3)
    x = pd.DataFrame({"price": rng.uniform(1, 20, 200), "stock": rng.uniform(0, 50, 200)})
    y = [truth(p, s) for p, s in zip(x["price"], x["stock"], strict=True)]
    paths = {}
    for name, estimator in (("exact", LinearRegression()), ("guess", DummyRegressor())):
        directory = tmp_path_factory.mktemp(name)
        joblib.dump(estimator.fit(x, y), directory / "model.joblib")
        paths[name] = directory
    return paths


def serve(release: str, path: Path, validity: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "path": path.as_uri(),
        "fqrv": {
            "contract": {"organization": "shop", "project": "demand", "contractNumber": 0},
            "releaseVersion": release,
        },
        "flavor": {"Sklearn": {"modelPath": "model.joblib"}},
        "servableSettings": {
            "policySettings": {"validityPolicy": validity},
            "loggingSettings": {"logLevel": "FULL", "keyFeatures": ["orderId"]},
        },
    }


def score(price: float, stock: float, order_id: str) -> dict[str, Any]:
    return {
        "schema": [{"type": "Float64", "fields": FEATURES}],
        "datum": [{"tensors": [{"Float64": {"data": [price, stock]}}]}],
        "configs": {"orderId": order_id},
    }


async def releases(harness: Harness) -> list[str]:
    listed = (await harness.client.get(f"{BASE}/list")).json()
    return sorted(item["FQRV"]["releaseVersion"] for item in listed)


async def metrics(harness: Harness) -> dict[str, dict[str, float]]:
    stats = (await harness.client.get(f"{BASE}/stats")).json()
    return {
        s["ServableMetrics"]["fqrv"]["releaseVersion"]: s["ServableMetrics"]["performanceMetrics"]
        for s in stats
    }


class TestFeedbackLoop:
    async def test_the_better_shadow_becomes_valid_and_the_worse_expires(
        self, harness_factory: HarnessFactory, models: dict[str, Path], tmp_path: Path
    ) -> None:
        harness = await harness_factory(data_dir=tmp_path / "data")
        client = harness.client
        settings = {
            "expirationPolicy": {
                "KeepTopRanked": {
                    "servablesToKeep": 1,
                    "metricToEvaluate": "mae",
                    "ordering": "ASC",
                }
            },
            "router": {"LatestPhaseInPctBasedRouter": {}},
        }
        assert (await client.post(f"/contract{BASE}", json=settings)).status_code == 201
        deployed = await client.post(
            "/servable", json=serve("guess", models["guess"], [{"ImmediatelyValid": {}}])
        )
        assert deployed.status_code == 201, deployed.text
        promotion = {
            "PerformanceBasedValidity": {"minThreshold": 1.0, "metric": "mae", "ordering": "ASC"}
        }
        deployed = await client.post("/servable", json=serve("exact", models["exact"], [promotion]))
        assert deployed.status_code == 201, deployed.text
        await harness.tick()

        rng = np.random.default_rng(11)
        rows = [(float(rng.uniform(1, 20)), float(rng.uniform(0, 50))) for _ in range(30)]
        for i, (price, stock) in enumerate(rows):
            answer = await client.post(f"{BASE}/score", json=score(price, stock, f"o-{i}"))
            assert answer.status_code == 200, answer.text
            assert answer.json()["Prediction"]["fqrv"] == fqrv_json("guess", "shop", "demand")
        await harness.settle()
        assert await releases(harness) == ["exact", "guess"]
        records = [{"key": f"o-{i}", "actual": truth(p, s)} for i, (p, s) in enumerate(rows)]

        # one record: exact's MAE is perfect, but rests on 1 of the 30 samples required
        answer = await client.post(f"{BASE}/feedback", json={"records": records[:1]})
        assert answer.status_code == 200, answer.text
        assert (await metrics(harness))["exact"]["maeSamples"] == 1
        await harness.tick(1)
        assert await releases(harness) == ["exact", "guess"]
        answer = await client.post(f"{BASE}/score", json=score(2.0, 4.0, "still-guess"))
        assert answer.json()["Prediction"]["fqrv"] == fqrv_json("guess", "shop", "demand")

        # 29 records: still too few
        answer = await client.post(f"{BASE}/feedback", json={"records": records[1:29]})
        assert answer.status_code == 200, answer.text
        assert (await metrics(harness))["exact"]["maeSamples"] == 29
        assert await releases(harness) == ["exact", "guess"]

        # the 30th decides
        answer = await client.post(
            f"{BASE}/feedback",
            json={"records": [*records[29:], {"key": "never-predicted", "actual": 1.0}]},
        )

        assert answer.status_code == 200, answer.text
        accepted = answer.json()["FeedbackAccepted"]
        assert (accepted["records"], accepted["matched"], accepted["unknown"]) == (2, 1, 1)
        learned = {s["fqrv"]["releaseVersion"]: s["metrics"] for s in accepted["servables"]}
        assert learned["exact"]["mae"] < 1e-6 < 1.0 < learned["guess"]["mae"]
        assert learned["exact"]["rmse"] < 1e-6 < learned["guess"]["rmse"]
        assert learned["exact"]["maeSamples"] == learned["exact"]["rmseSamples"] == 30

        # the feedback is durable and re-evaluated at once: exact is valid, guess expired
        assert await releases(harness) == ["exact"]
        kept = (await metrics(harness))["exact"]
        assert kept["mae"] == pytest.approx(learned["exact"]["mae"])
        assert kept["feedbackCount"] == 30
        answer = await client.post(f"{BASE}/score", json=score(2.0, 4.0, "after"))
        assert answer.json()["Prediction"]["fqrv"] == fqrv_json("exact", "shop", "demand")

        # what feedback taught is durable: after a restart the metrics are back
        await harness.app.shutdown()
        restarted = await harness_factory(data_dir=tmp_path / "data")
        assert await releases(restarted) == ["exact"]
        assert (await metrics(restarted))["exact"] == kept


def contract_settings(expiration: dict[str, Any], router: dict[str, Any]) -> dict[str, Any]:
    return {"expirationPolicy": expiration, "router": router}


async def feed(harness: Harness, rows: list[tuple[float, float]], first: int) -> None:
    """Score `rows` (keys o-<first>, o-<first+1>, …), then send the truth for each."""
    records = []
    for i, (price, stock) in enumerate(rows, start=first):
        answer = await harness.client.post(f"{BASE}/score", json=score(price, stock, f"o-{i}"))
        assert answer.status_code == 200, answer.text
        records.append({"key": f"o-{i}", "actual": truth(price, stock)})
    await harness.settle()
    answer = await harness.client.post(f"{BASE}/feedback", json={"records": records})
    assert answer.status_code == 200, answer.text


def some_rows(count: int, seed: int = 5) -> list[tuple[float, float]]:
    rng = np.random.default_rng(seed)
    return [(float(rng.uniform(1, 20)), float(rng.uniform(0, 50))) for _ in range(count)]


class TestMinimumEvidence:
    """Issue 11: a metric decides nothing until it rests on `minSamples` joined predictions."""

    async def test_no_release_is_ranked_out_before_min_samples(
        self, harness_factory: HarnessFactory, models: dict[str, Path]
    ) -> None:
        harness = await harness_factory()
        client = harness.client
        keep_best = {
            "KeepTopRanked": {
                "servablesToKeep": 1,
                "metricToEvaluate": "mae",
                "ordering": "ASC",
                "minSamples": 5,
            }
        }
        settings = contract_settings(keep_best, {"FairPhaseInPctBasedRouter": {}})
        assert (await client.post(f"/contract{BASE}", json=settings)).status_code == 201
        for name in ("guess", "exact"):
            body = serve(name, models[name], [{"ImmediatelyValid": {}}])
            assert (await client.post("/servable", json=body)).status_code == 201
        # both valid, neither measured: neither ranks the other out
        await harness.tick(1)
        assert await releases(harness) == ["exact", "guess"]

        rows = some_rows(5)
        await feed(harness, rows[:4], first=0)
        assert (await metrics(harness))["guess"]["maeSamples"] == 4
        await harness.tick(1)
        assert await releases(harness) == ["exact", "guess"]

        await feed(harness, rows[4:], first=4)
        assert await releases(harness) == ["exact"]

    async def test_min_samples_is_shown_read_back_and_persisted(
        self, harness_factory: HarnessFactory, models: dict[str, Path], tmp_path: Path
    ) -> None:
        harness = await harness_factory(data_dir=tmp_path / "state")
        client = harness.client
        settings = contract_settings(
            {"KeepTopRanked": {"servablesToKeep": 2, "metricToEvaluate": "mae", "min_samples": 7}},
            {"EpsilonGreedyRouter": {"metric": "mae", "ordering": "ASC"}},
        )
        assert (await client.post(f"/contract{BASE}", json=settings)).status_code == 201
        rule = {"PerformanceBasedValidity": {"minThreshold": 1.0, "metric": "mae", "minSamples": 3}}
        assert (
            await client.post("/servable", json=serve("guess", models["guess"], [rule]))
        ).status_code == 201

        async def shown(h: Harness) -> tuple[Any, Any, Any]:
            contract = (await h.client.get(f"{BASE}/contract-settings")).json()["ContractSettings"]
            servable = (await h.client.get(f"{BASE}/guess/settings")).json()
            policy = servable["ServableSettings"]["policySettings"]["validityPolicy"][0]
            return (
                contract["expirationPolicy"]["KeepTopRanked"]["minSamples"],
                contract["router"]["EpsilonGreedyRouter"]["minSamples"],
                policy["PerformanceBasedValidity"]["minSamples"],
            )

        assert await shown(harness) == (7, 30, 3)
        await harness.app.shutdown()
        restarted = await harness_factory(data_dir=tmp_path / "state")
        assert await shown(restarted) == (7, 30, 3)

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            (
                contract_settings(
                    {
                        "KeepTopRanked": {
                            "servablesToKeep": 1,
                            "metricToEvaluate": "mae",
                            "minSamples": 0,
                        }
                    },
                    {"FairPhaseInPctBasedRouter": {}},
                ),
                "expirationPolicy.KeepTopRanked.minSamples",
            ),
            (
                contract_settings(
                    {"KeepLatest": {"servablesToKeep": 1}},
                    {"BestPerformerRouter": {"metric": "mae", "minSamples": "many"}},
                ),
                "router.BestPerformerRouter.minSamples",
            ),
            (
                contract_settings(
                    {"KeepLatest": {"servablesToKeep": 1}},
                    {"type": "ThompsonSamplingRouter", "minSamples": 1.5},
                ),
                "router.minSamples",
            ),
        ],
    )
    async def test_an_invalid_contract_min_samples_names_the_field(
        self, harness_factory: HarnessFactory, body: dict[str, Any], field: str
    ) -> None:
        harness = await harness_factory()
        answer = await harness.client.post(f"/contract{BASE}", json=body)
        assert answer.status_code in (400, 422), answer.text
        (error,) = answer.json().values()
        assert error["field"] == field

    async def test_an_invalid_validity_min_samples_names_the_field(
        self, harness_factory: HarnessFactory, models: dict[str, Path]
    ) -> None:
        harness = await harness_factory()
        rule = {"PerformanceBasedValidity": {"minThreshold": 1.0, "minSamples": -1}}
        answer = await harness.client.post(
            "/servable", json=serve("guess", models["guess"], [rule])
        )
        assert answer.status_code in (400, 422), answer.text
        (error,) = answer.json().values()
        assert error["field"].endswith("validityPolicy[0].PerformanceBasedValidity.minSamples")

    async def test_a_bandit_router_explores_a_release_below_min_samples(
        self, harness_factory: HarnessFactory, models: dict[str, Path]
    ) -> None:
        harness = await harness_factory()
        client = harness.client
        router = {"EpsilonGreedyRouter": {"metric": "mae", "ordering": "ASC", "epsilon": 0.5}}
        settings = contract_settings({"KeepLatest": {"servablesToKeep": 2}}, router)
        assert (await client.post(f"/contract{BASE}", json=settings)).status_code == 201
        for name in ("guess", "exact"):
            body = serve(name, models[name], [{"ImmediatelyValid": {}}])
            assert (await client.post("/servable", json=body)).status_code == 201
        # an external evaluator's numbers, with the samples behind them
        known = {"metrics": {"mae": 1.0, "maeSamples": 500}}
        lucky = {"metrics": {"mae": 0.1, "maeSamples": 3}}
        assert (await client.put(f"{BASE}/guess/metrics", json=known)).status_code == 200
        assert (await client.put(f"{BASE}/exact/metrics", json=lucky)).status_code == 200

        async def exact_share() -> float:
            answered = []
            for i in range(200):
                answer = await client.post(f"{BASE}/score", json=score(2.0, 4.0, f"s-{i}"))
                answered.append(answer.json()["Prediction"]["fqrv"]["releaseVersion"])
            return answered.count("exact") / len(answered)

        # exact is unknown: never the best, but explored (ε/k = 25% of the traffic)
        assert 0.1 < await exact_share() < 0.4
        # on 30 samples its MAE is known and better: it gets 1 − ε + ε/k = 75%
        enough = {"metrics": {"maeSamples": 30}}
        assert (await client.put(f"{BASE}/exact/metrics", json=enough)).status_code == 200
        assert await exact_share() > 0.6

    async def test_a_redeployed_release_starts_with_no_metrics(
        self, harness_factory: HarnessFactory, models: dict[str, Path]
    ) -> None:
        harness = await harness_factory()
        client = harness.client
        body = serve("guess", models["guess"], [{"ImmediatelyValid": {}}])
        assert (await client.post("/servable", json=body)).status_code == 201
        await feed(harness, some_rows(5), first=0)
        before = (await metrics(harness))["guess"]
        assert (before["maeSamples"], before["feedbackCount"]) == (5, 5)

        assert (await client.delete(f"{BASE}/guess")).status_code == 200
        assert (await client.post("/servable", json=body)).status_code == 201
        assert (await metrics(harness))["guess"] == {}

        # the rolling window starts over too: one new record is one sample, not six
        await feed(harness, some_rows(1, seed=9), first=100)
        after = (await metrics(harness))["guess"]
        assert (after["maeSamples"], after["feedbackCount"]) == (1, 1)


class TestExternalMetrics:
    async def test_put_merges_and_survives_a_restart(
        self, harness_factory: HarnessFactory, models: dict[str, Path], tmp_path: Path
    ) -> None:
        data_dir = tmp_path / "state"
        harness = await harness_factory(data_dir=data_dir)
        client = harness.client
        deployed = await client.post(
            "/servable", json=serve("guess", models["guess"], [{"ImmediatelyValid": {}}])
        )
        assert deployed.status_code == 201, deployed.text

        first = await client.put(f"{BASE}/guess/metrics", json={"metrics": {"auc": 0.91}})
        second = await client.put(f"{BASE}/guess/metrics", json={"metrics": {"f1": 0.5}})

        assert first.status_code == second.status_code == 200, second.text
        assert second.json() == {
            "PerformanceMetricsUpdatedSuccessfully": {
                "fqrv": fqrv_json("guess", "shop", "demand"),
                "performanceMetrics": {"auc": 0.91, "f1": 0.5},
            }
        }
        await harness.app.shutdown()
        restarted = await harness_factory(data_dir=data_dir)
        assert (await metrics(restarted))["guess"] == {"auc": 0.91, "f1": 0.5}

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"metrics": {"auc": "high"}}, "metrics.auc"),
            ({"metrics": {"auc": True}}, "metrics.auc"),
            ({"metrics": {"auc": None}}, "metrics.auc"),
            ({"metrics": {"auc": [0.9]}}, "metrics.auc"),
            ({"metrics": {}}, "metrics"),
            ({"metrics": [1]}, "metrics"),
            ({"auc": 0.9}, "metrics"),
        ],
    )
    async def test_non_numeric_metrics_are_refused(
        self,
        harness_factory: HarnessFactory,
        models: dict[str, Path],
        body: dict[str, Any],
        field: str,
    ) -> None:
        harness = await harness_factory()
        client = harness.client
        await client.post(
            "/servable", json=serve("guess", models["guess"], [{"ImmediatelyValid": {}}])
        )

        answer = await client.put(f"{BASE}/guess/metrics", json=body)

        assert answer.status_code == 422, answer.text
        (error,) = answer.json().values()
        assert error["field"] == field
        assert (await metrics(harness))["guess"] == {}

    async def test_unknown_servable_is_404(
        self, harness_factory: HarnessFactory, models: dict[str, Path]
    ) -> None:
        harness = await harness_factory()
        await harness.client.post(
            "/servable", json=serve("guess", models["guess"], [{"ImmediatelyValid": {}}])
        )

        answer = await harness.client.put(f"{BASE}/nope/metrics", json={"metrics": {"auc": 1}})

        assert answer.status_code == 404
        assert "UnknownServable" in answer.json()


class TestFeedbackRefusals:
    async def test_malformed_records_name_the_record_index(
        self, harness_factory: HarnessFactory, models: dict[str, Path]
    ) -> None:
        harness = await harness_factory()
        await harness.client.post(
            "/servable", json=serve("guess", models["guess"], [{"ImmediatelyValid": {}}])
        )
        records = [{"key": "a", "actual": 1.0}, {"key": "b"}]

        answer = await harness.client.post(f"{BASE}/feedback", json={"records": records})

        assert answer.status_code == 422, answer.text
        (error,) = answer.json().values()
        assert error["field"].startswith("records[1]")

    async def test_feedback_for_an_unknown_contract_is_404(
        self, harness_factory: HarnessFactory
    ) -> None:
        harness = await harness_factory()
        body = {"records": [{"key": "a", "actual": 1.0}]}

        answer = await harness.client.post("/no/such/0/feedback", json=body)

        assert answer.status_code == 404
        assert "UnknownContract" in answer.json()
