"""Crash recovery: kill -9 right after acknowledgements, restart on the same data dir."""

from __future__ import annotations

import pickle
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import ServerProcess
from tests.payloads import FIXTURES, contract_settings, score_body, serve_body

pytestmark = pytest.mark.e2e

CHURN = FIXTURES / "onnx" / "churn_pipeline_named_inputs"


def _state(client: httpx.Client) -> dict[str, Any]:
    """Everything acknowledged, as the API shows it (counters aside)."""
    state: dict[str, Any] = {"contracts": client.get("/contracts/list").json()}
    for contract in state["contracts"]["Contracts"]["contracts"]:
        base = "/{organization}/{project}/{contractNumber}".format(**contract)
        state[base] = {
            "list": client.get(f"{base}/list").json(),
            "contract-settings": client.get(f"{base}/contract-settings").json(),
            "servable-settings": client.get(f"{base}/servable-settings").json(),
            "metadata": client.get(f"{base}/metadata").json(),
            "validity": [
                {k: s["ServableMetrics"][k] for k in ("fqrv", "createdAtMS", "becameValidAtMS")}
                for s in client.get(f"{base}/stats").json()
            ],
            "history": client.get(f"{base}/history").json(),
        }
    return state


def _churn_score() -> dict[str, Any]:
    return {
        "schema": [
            {"type": "Int64", "fields": ["tenure_months"]},
            {"type": "Float32", "fields": ["monthly_charges"]},
            {"type": "String", "fields": ["contract", "payment_method"]},
        ],
        "datum": [
            {
                "tensors": [
                    {"Int64": {"data": [48]}},
                    {"Float32": {"data": [56.55]}},
                    {"String": {"data": ["one-year", "credit-card"]}},
                ]
            },
        ],
    }


def _deploy_everything(client: httpx.Client) -> None:
    def ok(response: httpx.Response) -> None:
        assert response.status_code in (200, 201), response.text

    ok(client.post("/contract/samples/energy_output/0", json=contract_settings(keep=3)))
    ok(
        client.post(
            "/contract/acme/churn/4", json=contract_settings(router="FairPhaseInPctBasedRouter")
        )
    )
    ok(client.post("/servable", json=serve_body("v1")))
    ok(
        client.post(
            "/servable", json=serve_body("v2", validity=[{"NeverValid": {}}], log_level="NONE")
        )
    )
    linear = {"LinearTimeBasedPhaseIn": {"phaseInOverSecs": 3600}}
    ok(client.post("/servable", json=serve_body("v3", phase_in=linear)))
    churn = serve_body(
        "2026-11-28",
        path=CHURN,
        org="acme",
        project="churn",
        n=4,
        flavor={"ONNX": {"modelPath": "model.onnx"}},
    )
    ok(client.post("/servable", json=churn))
    ok(
        client.put(
            "/samples/energy_output/0/v2/logging-settings",
            json={"logLevel": "SAMPLE", "keyFeatures": ["reqid"], "sampleRate": 0.5},
        )
    )
    ok(client.put("/acme/churn/4", json=contract_settings(keep=5)))
    # a contract whose history holds an expiry and a delete (issue 11, scope 5)
    ok(client.post("/contract/samples/history/1", json=contract_settings(keep=1)))
    for release in ("h1", "h2", "h3"):
        ok(client.post("/servable", json=serve_body(release, project="history", n=1)))
    ok(client.delete("/samples/history/1/h3"))


class TestKillAndRestart:
    def test_everything_acknowledged_is_back_and_scores_identically(
        self, server_factory: Callable[..., ServerProcess], tmp_path: Path
    ) -> None:
        data_dir = tmp_path / "data"
        first = server_factory(data_dir)
        _deploy_everything(first.client)
        before = _state(first.client)
        left = before["/samples/history/1"]["history"]["ContractHistory"]["servables"]
        assert [(s["servableFQRV"], s["state"]) for s in left] == [
            ("samples.history.1.h3", "deleted"),
            ("samples.history.1.h2", "expired"),
            ("samples.history.1.h1", "expired"),
        ]
        assert left[1]["removal"]["description"] == "expired by KeepLatest(servablesToKeep=1)"
        scores_before = {
            path: first.client.post(path, json=body).json()
            for path, body in self._direct_scores().items()
        }
        first.kill()

        second = server_factory(data_dir)
        assert _state(second.client) == before
        for path, body in self._direct_scores().items():
            assert second.client.post(path, json=body).json() == scores_before[path]
        routed = second.client.post("/samples/energy_output/0/score", json=score_body())
        assert routed.status_code == 200

    @staticmethod
    def _direct_scores() -> dict[str, dict[str, Any]]:
        return {
            "/samples/energy_output/0/v1/score": score_body(),
            "/samples/energy_output/0/v2/score": score_body(),
            "/acme/churn/4/2026-11-28/score": _churn_score(),
        }

    def test_graceful_restart_keeps_the_counters(
        self, server_factory: Callable[..., ServerProcess], tmp_path: Path
    ) -> None:
        data_dir = tmp_path / "data"
        first = server_factory(data_dir)
        assert first.client.post("/servable", json=serve_body("v1")).status_code == 201
        for _ in range(7):
            assert (
                first.client.post("/samples/energy_output/0/score", json=score_body()).status_code
                == 200
            )
        # uvicorn re-raises SIGTERM after its graceful shutdown, so supervisors see the signal
        assert first.terminate() in (0, -signal.SIGTERM)
        assert any("ForestFlow stopped" in line for line in first.log)
        second = server_factory(data_dir)
        (stats,) = second.client.get("/samples/energy_output/0/stats").json()
        assert stats["ServableMetrics"]["scoreCount"] == 7


class _Hang:
    """Unpickling this blocks, so a deploy of it stays in flight until the process dies."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (time.sleep, (600,))


class TestUnacknowledgedDeploy:
    def test_a_deploy_killed_in_flight_leaves_nothing_behind(
        self, server_factory: Callable[..., ServerProcess], tmp_path: Path
    ) -> None:
        artifact = tmp_path / "slow-model"
        artifact.mkdir()
        (artifact / "model.pkl").write_bytes(pickle.dumps(_Hang()))
        data_dir = tmp_path / "data"
        server = server_factory(data_dir)
        assert server.client.post("/servable", json=serve_body("v1")).status_code == 201

        slow = serve_body("slow", path=artifact, flavor={"Sklearn": {"modelPath": "model.pkl"}})
        answers: list[Any] = []

        def deploy() -> None:
            try:
                answers.append(server.client.post("/servable", json=slow))
            except httpx.HTTPError as error:  # the server dies under the request
                answers.append(error)

        sender = threading.Thread(target=deploy)
        sender.start()
        server.wait_for_line("copied artifact")
        server.kill()
        sender.join(timeout=30)
        assert len(answers) == 1
        assert isinstance(answers[0], httpx.HTTPError)

        restarted = server_factory(data_dir)
        releases = [
            f["FQRV"]["releaseVersion"]
            for f in restarted.client.get("/samples/energy_output/0/list").json()
        ]
        assert releases == ["v1"]
        history = restarted.client.get("/samples/energy_output/0/history").json()
        (only,) = history["ContractHistory"]["servables"]
        assert (only["servableFQRV"], only["state"]) == ("samples.energy_output.0.v1", "loaded")
        assert not (data_dir / "artifacts/servables/samples/energy_output/0/slow").exists()
        redeploy = restarted.client.post("/servable", json=serve_body("slow"))
        assert redeploy.status_code == 201, redeploy.text
