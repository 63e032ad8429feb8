"""The runner seam: the whole server (routing, shadows, stats, logging) over a runner that
loads no model, as the cluster engine will plug in."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from forestflow.control.runner import ShadowDone
from forestflow.domain.fqrv import FQRV, Contract
from forestflow.domain.frame import Frame
from forestflow.predictionlog.events import PredictionEvent
from forestflow.predictionlog.sinks import MemorySink
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


class HeldShadows(FakeRunner):
    """Holds shadow requests until `complete`, which gives them their outcomes in one go,
    as the in-process runner does when one model call scored them all."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[tuple[ShadowDone, Frame]] = []

    def submit_shadow(self, fqrv: FQRV, frame: Frame, done: ShadowDone) -> bool:
        self.held.append((done, self.respond(fqrv, frame)))
        return True

    def complete(self) -> None:
        held, self.held = self.held, []
        for done, outcome in held:
            done(outcome)


class Batches(MemorySink):
    """Keeps events, and how many came in each call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, int]] = []

    def emit(self, event: PredictionEvent) -> None:
        self.calls.append(("emit", 1))
        super().emit(event)

    def emit_many(self, events: Sequence[PredictionEvent]) -> None:
        self.calls.append(("emit_many", len(events)))
        for event in events:
            super().emit(event)


async def test_shadow_outcomes_completed_together_are_counted_and_logged_together(
    harness_factory: HarnessFactory,
) -> None:
    runner, sink = HeldShadows(), Batches()
    harness = await harness_factory(runner=runner, sinks={"memory": sink})
    client = harness.client
    await client.post("/contract" + BASE, json=contract_settings(keep=2))
    for release in ("v1", "v2"):  # v2 serves, v1 shadows
        assert (await client.post("/servable", json=serve_body(release))).status_code == 201
    for _ in range(3):
        assert (await client.post(BASE + "/score", json=score_body())).status_code == 200
    assert sink.calls == [("emit", 1)] * 3
    assert harness.app.inference.shadow_cpu_seconds == 0.0

    runner.complete()
    stats = (await client.get(BASE + "/stats")).json()

    metrics = [m["ServableMetrics"] for m in stats]
    by_release = {m["fqrv"]["releaseVersion"]: m for m in metrics}
    assert by_release["v1"]["shadeCount"] == 3
    assert sink.calls[3:] == [("emit_many", 3)]
    assert [event.served_request for event in sink.events] == [True] * 3 + [False] * 3
    assert harness.app.inference.shadow_cpu_seconds > 0.0  # charged to the shadow budget
