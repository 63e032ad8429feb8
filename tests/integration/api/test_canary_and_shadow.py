"""Canary phase-in, shadow mode and expiration, stepped with a fake clock (SPEC §1.6)."""

from __future__ import annotations

import gc
from collections import Counter

from forestflow.serving import heap
from tests.integration.api.conftest import Harness, HarnessFactory
from tests.payloads import contract_settings, score_body, serve_body

BASE = "/samples/energy_output/0"


async def _answers(harness: Harness, n: int) -> Counter[str]:
    counts: Counter[str] = Counter()
    for _ in range(n):
        response = await harness.client.post(f"{BASE}/score", json=score_body())
        assert response.status_code == 200, response.text
        counts[response.json()["Prediction"]["servableFQRV"].rsplit(".", 1)[1]] += 1
    await harness.settle()
    return counts


async def _stats(harness: Harness) -> dict[str, dict[str, int]]:
    body = (await harness.client.get(f"{BASE}/stats")).json()
    return {s["ServableMetrics"]["fqrv"]["releaseVersion"]: s["ServableMetrics"] for s in body}


class TestCanary:
    async def test_bar_phases_in_then_foo_shadows_then_baz_expires_foo(
        self, harness: Harness
    ) -> None:
        client = harness.client
        await client.post("/contract/samples/energy_output/0", json=contract_settings(keep=2))
        assert (await client.post("/servable", json=serve_body("FOO"))).status_code == 201
        assert await _answers(harness, 20) == {"FOO": 20}

        await harness.tick(seconds=1)
        linear = {"LinearTimeBasedPhaseIn": {"phaseInOverSecs": 10}}
        assert (
            await client.post("/servable", json=serve_body("BAR", phase_in=linear))
        ).status_code == 201
        assert (await _stats(harness))["BAR"]["currentPhaseInPct"] == 0
        assert await _answers(harness, 20) == {"FOO": 20}
        assert (await _stats(harness))["BAR"]["shadeCount"] == 20

        await harness.tick(seconds=5)  # BAR at 50%: 50 / (100 + 50) = 1/3 of the traffic
        stats = await _stats(harness)
        assert (stats["FOO"]["currentPhaseInPct"], stats["BAR"]["currentPhaseInPct"]) == (100, 50)
        shares = await _answers(harness, 600)
        assert 0.28 < shares["BAR"] / 600 < 0.39

        await harness.tick(seconds=5)  # BAR at 100%: it alone serves, FOO shadows every request
        foo_shade_before = (await _stats(harness))["FOO"]["shadeCount"]
        assert await _answers(harness, 30) == {"BAR": 30}
        assert (await _stats(harness))["FOO"]["shadeCount"] == foo_shade_before + 30

        await harness.tick(seconds=1)
        baz = serve_body("BAZ")
        assert (await client.post("/servable", json=baz)).status_code == 201
        releases = [f["FQRV"]["releaseVersion"] for f in (await client.get(f"{BASE}/list")).json()]
        assert releases == ["BAR", "BAZ"]
        assert not harness.app.control.deployer.cache.directory(_fqrv("FOO")).exists()
        assert await _answers(harness, 10) == {"BAZ": 10}


class TestNeverValid:
    async def test_shadows_but_never_serves_until_promoted(self, harness: Harness) -> None:
        client = harness.client
        await client.post("/servable", json=serve_body("live"))
        await harness.tick(seconds=1)
        await client.post("/servable", json=serve_body("shadow", validity=[{"NeverValid": {}}]))
        assert await _answers(harness, 15) == {"live": 15}
        await harness.tick(seconds=3600)
        assert await _answers(harness, 5) == {"live": 5}
        stats = await _stats(harness)
        assert stats["shadow"]["shadeCount"] == 20
        assert stats["shadow"]["becameValidAtMS"] is None
        assert stats["shadow"]["scoreCount"] == 0

        promote = {
            "validityPolicy": [{"ImmediatelyValid": {}}],
            "phaseInPolicy": {"ImmediatePhaseIn": {}},
        }
        response = await client.put(f"{BASE}/shadow/policy-settings", json=promote)
        assert response.status_code == 200, response.text
        assert await _answers(harness, 5) == {"shadow": 5}
        assert (await _stats(harness))["live"]["shadeCount"] == 5

    async def test_log_level_none_does_not_shadow(self, harness: Harness) -> None:
        await harness.client.post("/servable", json=serve_body("live"))
        await harness.client.post(
            "/servable", json=serve_body("quiet", validity=[{"NeverValid": {}}], log_level="NONE")
        )
        await _answers(harness, 5)
        assert (await _stats(harness))["quiet"]["shadeCount"] == 0
        response = await harness.client.put(f"{BASE}/quiet/logging", json={"logLevel": "full"})
        assert response.status_code == 200
        await _answers(harness, 5)
        assert (await _stats(harness))["quiet"]["shadeCount"] == 5

    async def test_shadow_predictions_reach_the_sink_marked_not_served(
        self, harness: Harness
    ) -> None:
        await harness.client.post("/servable", json=serve_body("live"))
        await harness.client.post(
            "/servable", json=serve_body("shadow", validity=[{"NeverValid": {}}])
        )
        await _answers(harness, 3)
        events = list(harness.app.sinks["memory"].events)  # type: ignore[attr-defined]
        served = [e for e in events if e.served_request]
        shadow = [e for e in events if not e.served_request]
        assert {str(e.fqrv) for e in served} == {"samples.energy_output.0.live"}
        assert {str(e.fqrv) for e in shadow} == {"samples.energy_output.0.shadow"}
        assert len(shadow) == 3


def _fqrv(release: str) -> object:
    from forestflow.domain.fqrv import FQRV, Contract

    return FQRV(Contract("samples", "energy_output", 0), release)


class TestShadowDrops:
    async def test_dropped_shadow_work_is_counted_and_served_work_is_not_affected(
        self, harness_factory: HarnessFactory
    ) -> None:
        harness = await harness_factory(scheduling={"shadow_queue_size": 0})
        await harness.client.post("/servable", json=serve_body("live"))
        await harness.tick(seconds=1)
        never = serve_body("shadow", validity=[{"NeverValid": {}}])
        await harness.client.post("/servable", json=never)
        assert await _answers(harness, 12) == {"live": 12}
        stats = await _stats(harness)
        assert stats["shadow"]["shadeCount"] == 0
        assert stats["shadow"]["shadowDroppedCount"] == 12
        assert stats["live"]["scoreCount"] == 12


async def test_a_started_server_collects_its_young_objects_less_often(
    harness_factory: HarnessFactory,
) -> None:
    """Queued shadow requests would otherwise set off a young collection every few dozen
    requests (serving/heap.py)."""
    saved = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        await harness_factory()
        assert gc.get_threshold() == (heap.YOUNG_THRESHOLD, 10, 10)
    finally:
        gc.set_threshold(*saved)
