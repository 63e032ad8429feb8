"""The runner seam: the whole server (routing, shadows, stats, logging) over a runner that
loads no model, as the cluster engine will plug in."""

from __future__ import annotations

import numpy as np

from forestflow.domain.fqrv import FQRV, Contract
from forestflow.domain.frame import Frame
from forestflow.testing import FakeRunner
from tests.integration.api.conftest import HarnessFactory
from tests.payloads import contract_settings, score_body, serve_body

CONTRACT = Contract("samples", "energy_output", 0)
BASE = "/samples/energy_output/0"


def answer_by_release(fqrv: FQRV, frame: Frame) -> Frame:
    """One column whose value tells which servable answered; v1 fails in shadow mode."""
    if fqrv.release_version == "broken":
        raise ValueError("this servable always fails")
    return Frame({"release": np.array([fqrv.release_version] * frame.n_rows, dtype=object)})


class TestFakeRunner:
    async def test_routes_scores_and_shadows_through_the_runner(
        self, harness_factory: HarnessFactory
    ) -> None:
        runner = FakeRunner(respond=answer_by_release)
        harness = await harness_factory(runner=runner)
        client = harness.client
        await client.post("/contract" + BASE, json=contract_settings(keep=3))
        for release in ("broken", "v1", "v2"):
            deployed = await client.post("/servable", json=serve_body(release))
            assert deployed.status_code == 201, deployed.text

        scored = await client.post(BASE + "/score", json=score_body())
        await harness.settle()
        stats = {
            m["ServableMetrics"]["fqrv"]["releaseVersion"]: m["ServableMetrics"]
            for m in (await client.get(BASE + "/stats")).json()
        }

        assert scored.status_code == 200, scored.text
        prediction = scored.json()["Prediction"]
        assert prediction["servableFQRV"] == "samples.energy_output.0.v2"
        assert prediction["datum"][0]["tensors"][0]["String"]["data"] == ["v2"]
        assert stats["v2"]["scoreCount"] == 1
        assert stats["v1"]["shadeCount"] == 1
        assert stats["broken"]["shadowFailedCount"] == 1
        v1, v2 = FQRV(CONTRACT, "v1"), FQRV(CONTRACT, "v2")
        assert ("predict", v2) in runner.calls
        assert ("shadow", v1) in runner.calls

    async def test_a_deleted_servable_is_stopped_on_the_runner(
        self, harness_factory: HarnessFactory
    ) -> None:
        runner = FakeRunner()
        harness = await harness_factory(runner=runner)
        await harness.client.post("/servable", json=serve_body("v1"))
        fqrv = FQRV(CONTRACT, "v1")
        assert fqrv in runner.running

        deleted = await harness.client.delete(BASE + "/v1")

        assert deleted.status_code == 200
        assert fqrv not in runner.running
        assert runner.calls == [("start", fqrv), ("stop", fqrv)]
