"""The canary scenario of SPEC §1.6 against a real server, in real time."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ServerProcess
from tests.payloads import contract_settings, score_body, serve_body

pytestmark = pytest.mark.e2e

BASE = "/samples/energy_output/0"
FAST_EVALUATION = {"FORESTFLOW_CONTROL__EVALUATION_INTERVAL_S": "0.1"}


def _answer(client: httpx.Client) -> str:
    response = client.post(f"{BASE}/score", json=score_body())
    assert response.status_code == 200, response.text
    return str(response.json()["Prediction"]["servableFQRV"]).rsplit(".", 1)[1]


def _stats(client: httpx.Client) -> dict[str, dict[str, int]]:
    body = client.get(f"{BASE}/stats").json()
    return {s["ServableMetrics"]["fqrv"]["releaseVersion"]: s["ServableMetrics"] for s in body}


def _releases(client: httpx.Client) -> list[str]:
    return [f["FQRV"]["releaseVersion"] for f in client.get(f"{BASE}/list").json()]


def _await_shade_count(client: httpx.Client, release: str, at_least: int) -> int:
    """Shadow work finishes after the response: poll the stats until it is counted."""
    for _ in range(2000):
        count = _stats(client)[release]["shadeCount"]
        if count >= at_least:
            return count
    raise AssertionError(f"{release} shadeCount stayed below {at_least}")


class TestCanary:
    def test_bar_phases_in_foo_shadows_baz_expires_foo(
        self, server_factory: Callable[..., ServerProcess], tmp_path: Path
    ) -> None:
        server = server_factory(tmp_path / "data", env=FAST_EVALUATION)
        client = server.client
        assert client.post(f"/contract{BASE}", json=contract_settings(keep=2)).status_code == 201
        assert client.post("/servable", json=serve_body("FOO")).status_code == 201
        assert {_answer(client) for _ in range(10)} == {"FOO"}

        linear = {"LinearTimeBasedPhaseIn": {"phaseInOverSecs": 3}}
        assert client.post("/servable", json=serve_body("BAR", phase_in=linear)).status_code == 201

        # Sample the BAR share per phase-in band until BAR reaches 100%.
        answers: dict[str, list[str]] = {"early": [], "late": []}
        while (pct := _stats(client)["BAR"]["currentPhaseInPct"]) < 100:
            band = "early" if pct < 35 else "late" if pct >= 65 else None
            for _ in range(5):
                answer = _answer(client)
                if band:
                    answers[band].append(answer)
        early = answers["early"].count("BAR") / max(1, len(answers["early"]))
        late = answers["late"].count("BAR") / max(1, len(answers["late"]))
        assert len(answers["early"]) >= 20
        assert len(answers["late"]) >= 20
        assert early < late, (early, late)

        # FOO shadows every request BAR served; wait until the last of them is counted
        served_by_bar = _stats(client)["BAR"]["scoreCount"]
        shade_before = _await_shade_count(client, "FOO", served_by_bar)
        assert shade_before == served_by_bar
        assert {_answer(client) for _ in range(20)} == {"BAR"}
        assert _await_shade_count(client, "FOO", shade_before + 20) == shade_before + 20

        assert client.post("/servable", json=serve_body("BAZ")).status_code == 201
        assert _releases(client) == ["BAR", "BAZ"]
        assert not (server.data_dir / "artifacts/servables/samples/energy_output/0/FOO").exists()
        assert {_answer(client) for _ in range(10)} == {"BAZ"}


class TestNeverValid:
    def test_shadows_but_never_serves_until_promoted(
        self, server_factory: Callable[..., ServerProcess], tmp_path: Path
    ) -> None:
        server = server_factory(tmp_path / "data", env=FAST_EVALUATION)
        client = server.client
        assert client.post("/servable", json=serve_body("live")).status_code == 201
        never = serve_body("candidate", validity=[{"NeverValid": {}}])
        assert client.post("/servable", json=never).status_code == 201
        assert {_answer(client) for _ in range(25)} == {"live"}
        assert _await_shade_count(client, "candidate", 25) == 25
        assert _stats(client)["candidate"]["becameValidAtMS"] is None

        promote = {
            "validityPolicy": [{"ImmediatelyValid": {}}],
            "phaseInPolicy": {"ImmediatePhaseIn": {}},
        }
        assert client.put(f"{BASE}/candidate/policy", json=promote).status_code == 200
        assert {_answer(client) for _ in range(10)} == {"candidate"}
