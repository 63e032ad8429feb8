"""Failing shadow servables are counted and logged at most once a minute (SPEC §1.6)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
import skops.io
from prometheus_client.parser import text_string_to_metric_families
from sklearn.neighbors import KNeighborsRegressor

from tests.integration.api.conftest import Harness
from tests.payloads import POWERPLANT_FEATURES, prediction_values, score_body, serve_body

BASE = "/samples/energy_output/0"
CONTRACT = "samples.energy_output.0"
REQUESTS = 300
INFERENCE_LOGGER = "forestflow.serving.inference"
RUNNER_LOGGER = "forestflow.serving.runner"


@pytest.fixture(scope="module")
def crashing_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real estimator that fails on every predict: 5 neighbours wanted, 3 samples fitted."""
    rng = np.random.default_rng(5)
    estimator = KNeighborsRegressor(n_neighbors=5).fit(rng.uniform(0, 100, (3, 4)), [1, 2, 3])
    directory = tmp_path_factory.mktemp("crashing")
    skops.io.dump(estimator, directory / "model.skops")
    return directory


def crashing(release: str, path: Path, **overrides: object) -> dict[str, object]:
    flavor = {"Sklearn": {"modelPath": "model.skops", "featureNames": POWERPLANT_FEATURES}}
    return serve_body(release, path=path, flavor=flavor, **overrides)  # type: ignore[arg-type]


def mismatched(release: str) -> dict[str, object]:
    """The power-plant model deployed under input names no request carries."""
    flavor = {"ONNX": {"modelPath": "model.onnx", "featureNames": ["T", "V", "AP", "RH"]}}
    return serve_body(release, flavor=flavor, validity=[{"NeverValid": {}}])


async def score_many(harness: Harness, n: int) -> list[tuple[str, list[list[object]]]]:
    answers = []
    for _ in range(n):
        response = await harness.client.post(f"{BASE}/score", json=score_body())
        assert response.status_code == 200, response.text
        body = response.json()
        answers.append((body["Prediction"]["servableFQRV"], prediction_values(body)))
    await harness.settle()
    return answers


async def stats(harness: Harness) -> dict[str, dict[str, int]]:
    body = (await harness.client.get(f"{BASE}/stats")).json()
    return {s["ServableMetrics"]["fqrv"]["releaseVersion"]: s["ServableMetrics"] for s in body}


async def failed_metric(harness: Harness) -> dict[str, float]:
    text = (await harness.client.get("/metrics")).text
    (family,) = [
        f
        for f in text_string_to_metric_families(text)
        if f.name == "forestflow_shadow_failed_requests"
    ]
    return {s.labels["release"]: s.value for s in family.samples if s.name.endswith("_total")}


def shadow_lines(caplog: pytest.LogCaptureFixture, release: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == INFERENCE_LOGGER and f"{CONTRACT}.{release} " in r.getMessage()
    ]


class TestShadowFailures:
    async def test_are_counted_per_servable_and_logged_once_a_minute(
        self, harness: Harness, crashing_model: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG, logger="forestflow")
        client = harness.client
        assert (await client.post("/servable", json=serve_body("live"))).status_code == 201
        (expected,) = {tuple(map(tuple, v)) for _, v in await score_many(harness, 1)}
        await harness.tick(seconds=1)
        never = [{"NeverValid": {}}]
        for body in (mismatched("mismatch"), crashing("crash", crashing_model, validity=never)):
            response = await client.post("/servable", json=body)
            assert response.status_code == 201, response.text

        answers = await score_many(harness, REQUESTS)

        assert {fqrv for fqrv, _ in answers} == {f"{CONTRACT}.live"}
        assert {tuple(map(tuple, values)) for _, values in answers} == {expected}
        counted = await stats(harness)
        assert counted["live"]["scoreCount"] == REQUESTS + 1
        assert counted["live"]["shadowFailedCount"] == 0
        for release in ("mismatch", "crash"):
            assert counted[release]["shadowFailedCount"] == REQUESTS
            assert counted[release]["shadeCount"] == 0
        assert await failed_metric(harness) == {"live": 0, "mismatch": REQUESTS, "crash": REQUESTS}

        (crash,) = shadow_lines(caplog, "crash")
        (mismatch,) = shadow_lines(caplog, "mismatch")
        assert crash.levelno == mismatch.levelno == logging.WARNING
        assert "ValueError: Expected n_neighbors <= n_samples_fit" in crash.getMessage()
        assert "its inputs are 'T', 'V', 'AP', 'RH'" in mismatch.getMessage()
        assert not [r for r in caplog.records if r.exc_info or r.name == RUNNER_LOGGER]

        harness.clock.advance(seconds=61)
        await score_many(harness, 1)

        for release in ("mismatch", "crash"):
            _first, summary = shadow_lines(caplog, release)
            repeats = re.search(
                r"failed (\d+) more times in the last minute: ", summary.getMessage()
            )
            # 299 repeats plus the new failure, unless another servable's line summarised
            # this one's due count first
            assert repeats is not None
            assert int(repeats[1]) in (REQUESTS - 1, REQUESTS)
        assert not [r for r in caplog.records if r.exc_info]
        assert (await stats(harness))["crash"]["shadowFailedCount"] == REQUESTS + 1


class TestServedFailures:
    async def test_a_served_crash_still_answers_500_and_logs_its_traceback(
        self, harness: Harness, crashing_model: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.ERROR, logger=RUNNER_LOGGER)
        response = await harness.client.post("/servable", json=crashing("crash", crashing_model))
        assert response.status_code == 201, response.text

        answer = await harness.client.post(f"{BASE}/score", json=score_body())

        assert answer.status_code == 500
        (record,) = [r for r in caplog.records if r.name == RUNNER_LOGGER]
        assert record.exc_info is not None
        assert (await stats(harness))["crash"]["shadowFailedCount"] == 0
