"""Prediction logging end to end (SPEC §5): requests in over HTTP, events out in the files."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from forestflow.app import build_sinks
from forestflow.config import Settings
from forestflow.testing import FakeClock
from tests.integration.api.conftest import Harness, HarnessFactory
from tests.payloads import POWERPLANT_FEATURES, POWERPLANT_ROWS, fqrv_json, score_body, serve_body

BASE = "/samples/energy_output/0"


async def file_logging_harness(factory: HarnessFactory, data_dir: Path) -> Harness:
    sinks = build_sinks(Settings(data_dir=data_dir), FakeClock())
    return await factory(data_dir=data_dir, sinks=sinks)


def with_logging(body: dict[str, Any], **logging: Any) -> dict[str, Any]:
    body["servableSettings"]["loggingSettings"] = logging
    return body


async def score_many(harness: Harness, n: int) -> None:
    for i in range(n):
        configs = {"customer": f"c{i}"}
        answer = await harness.client.post(f"{BASE}/score", json=score_body(configs=configs))
        assert answer.status_code == 200, answer.text
    await harness.settle()


def read_events(data_dir: Path) -> pd.DataFrame:
    files = sorted((data_dir / "predictions").glob("*.jsonl"))
    assert files, "no prediction files written"
    frames = [pd.read_json(f, lines=True) for f in files if f.stat().st_size]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def release_of(fqrv: dict[str, Any]) -> str:
    return str(fqrv["releaseVersion"])


class TestFullLogging:
    async def test_every_served_and_shadow_prediction_is_in_the_files(
        self, harness_factory: HarnessFactory, tmp_path: Path
    ) -> None:
        data_dir = tmp_path / "data"
        harness = await file_logging_harness(harness_factory, data_dir)
        live = with_logging(
            serve_body("live"),
            logLevel="FULL",
            keyFeatures=["customer", "TemperatureCelcius"],
            keyFeaturesSeparator="|",
        )
        shadow = with_logging(
            serve_body("shadow", validity=[{"NeverValid": {}}]),
            logLevel="FULL",
            keyFeatures=["customer"],
        )
        for body in (live, shadow):
            assert (await harness.client.post("/servable", json=body)).status_code == 201

        await score_many(harness, 25)
        await harness.app.shutdown()  # closing drains the file sink

        events = read_events(data_dir)
        events["release"] = events["fqrv"].map(release_of)
        served = events[events["servedRequest"]]
        shadowed = events[~events["servedRequest"]]
        assert len(served) == 25
        assert set(served["release"]) == {"live"}
        assert len(shadowed) == 25
        assert set(shadowed["release"]) == {"shadow"}
        first_temperature = POWERPLANT_ROWS[0][0]
        assert sorted(served["key"]) == sorted(f"c{i}|{first_temperature}" for i in range(25))
        assert sorted(shadowed["key"]) == sorted(f"c{i}" for i in range(25))
        assert set(events["schemaVersion"]) == {1}
        one = served.iloc[0]
        assert list(one["request"]["features"]) == POWERPLANT_FEATURES
        assert one["request"]["features"]["TemperatureCelcius"] == [
            row[0] for row in POWERPLANT_ROWS
        ]
        (prediction,) = one["prediction"].values()
        assert len(prediction) == len(POWERPLANT_ROWS)
        assert all(math.isfinite(v) for v in prediction)
        assert (events["latencyMS"] >= 0).all()
        assert one["fqrv"] == fqrv_json("live")


class TestSampledAndSilentLogging:
    async def test_sample_logs_within_binomial_bounds_and_none_logs_nothing(
        self, harness_factory: HarnessFactory, tmp_path: Path
    ) -> None:
        data_dir = tmp_path / "data"
        harness = await file_logging_harness(harness_factory, data_dir)
        sampled = with_logging(serve_body("sampled"), logLevel="SAMPLE", sampleRate=0.3)
        silent = with_logging(serve_body("silent", validity=[{"NeverValid": {}}]), logLevel="NONE")
        for body in (sampled, silent):
            assert (await harness.client.post("/servable", json=body)).status_code == 201
        n, rate = 600, 0.3

        await score_many(harness, n)
        stats = (await harness.client.get(f"{BASE}/stats")).json()
        await harness.app.shutdown()

        shade = {
            s["ServableMetrics"]["fqrv"]["releaseVersion"]: s["ServableMetrics"]["shadeCount"]
            for s in stats
        }
        assert shade["silent"] == 0
        events = read_events(data_dir)
        releases = events["fqrv"].map(release_of) if len(events) else pd.Series([], dtype=str)
        assert "silent" not in set(releases)
        logged = int((releases == "sampled").sum())
        # 4 standard deviations either side: fails about once in 16,000 seeds, and a
        # sampler that ignored the rate (0 or 600 events) fails by a wide margin
        sd = math.sqrt(n * rate * (1 - rate))
        assert n * rate - 4 * sd <= logged <= n * rate + 4 * sd


class TestCounters:
    async def test_stats_and_metrics_count_events_and_scores(self, harness: Harness) -> None:
        assert (await harness.client.post("/servable", json=serve_body("live"))).status_code == 201

        await score_many(harness, 3)

        stats = (await harness.client.get("/prediction-log/stats")).json()["PredictionLogStats"]
        assert stats["sinks"]["memory"] == {"emitted": 3, "written": 3, "dropped": 0}
        assert stats["feedback"]["unkeyed"] == 3
        metrics = (await harness.client.get("/metrics")).text
        labels = 'contract="samples.energy_output.0",release="live"'
        assert f"forestflow_scored_requests_total{{{labels}}} 3.0" in metrics
        assert f"forestflow_phase_in_percent{{{labels}}} 100.0" in metrics
        assert 'forestflow_prediction_events_total{outcome="written",sink="memory"} 3.0' in metrics
