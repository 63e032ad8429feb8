"""The original ForestFlow quickstart, replayed in-process over the BASIC REST API."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.integration.api.conftest import Harness
from tests.payloads import (
    FIXTURES,
    POWERPLANT_FEATURES,
    contract_json,
    contract_settings,
    fqrv_json,
    prediction_values,
    score_body,
    serve_body,
)

BASE = "/samples/energy_output/0"


class TestQuickstart:
    async def test_create_deploy_list_metadata_score_stats(self, harness: Harness) -> None:
        client = harness.client
        created = await client.post("/contract/samples/energy_output/0", json=contract_settings())
        assert created.status_code == 201
        assert created.json() == {"ContractCreatedSuccessfully": {"contract": contract_json()}}

        deployed = await client.post("/servable", json=serve_body("v1"))
        assert deployed.status_code == 201, deployed.text
        assert deployed.json() == {"ServableCreatedSuccessfully": {"fqrv": fqrv_json("v1")}}

        contracts = (await client.get("/contracts/list")).json()
        assert contracts == {"Contracts": {"contracts": [contract_json()]}}
        assert (await client.get(f"{BASE}/list")).json() == [{"FQRV": fqrv_json("v1")}]

        (metadata,) = (await client.get(f"{BASE}/metadata")).json()
        features = metadata["BasicMetaData"]["features"]
        assert [i["name"] for i in features] == POWERPLANT_FEATURES
        assert {i["type"] for i in features} == {"Float32"}
        (group,) = metadata["BasicMetaData"]["inputs"]
        assert (group["type"], group["shape"], group["fields"]) == (
            "Float32",
            [4],
            POWERPLANT_FEATURES,
        )
        assert group["description"].startswith("[0:TemperatureCelcius,1:ExhaustVacuumHg")

        expected = json.loads(
            (FIXTURES / "onnx/rf_powerplant_single_input/expected.json").read_text()
        )
        rows = expected["rows"][:2]
        scored = await client.post(f"{BASE}/score", json=score_body(rows, configs={"reqid": "r-1"}))
        assert scored.status_code == 200, scored.text
        prediction = scored.json()["Prediction"]
        assert prediction["servableFQRV"] == "samples.energy_output.0.v1"
        assert prediction["fqrv"] == fqrv_json("v1")
        assert len(prediction["datum"]) == 2
        want = [row[0] for row in expected["outputs"]["variable"][:2]]
        got = [row[0] for row in prediction_values(scored.json())]
        np.testing.assert_allclose(got, want, rtol=expected["tolerance_rel"])

        (stats,) = (await client.get(f"{BASE}/stats")).json()
        metrics = stats["ServableMetrics"]
        assert metrics["scoreCount"] == 1
        assert metrics["currentPhaseInPct"] == 100
        assert metrics["becameValidAtMS"] == harness.clock.now_ms()

    async def test_deploy_to_a_new_contract_creates_it_with_the_default_settings(
        self, harness: Harness
    ) -> None:
        response = await harness.client.post("/servable", json=serve_body("v1"))
        assert response.status_code == 201
        settings = (await harness.client.get(f"{BASE}/contract-settings")).json()
        assert settings == {"ContractSettings": {**contract_settings(), "missingValues": "accept"}}

    @pytest.mark.parametrize("alias", ["contract-settings", "c-settings"])
    async def test_contract_settings_aliases(self, harness: Harness, alias: str) -> None:
        await harness.client.post("/contract/samples/energy_output/0", json=contract_settings(3))
        body = (await harness.client.get(f"{BASE}/{alias}")).json()
        assert body["ContractSettings"]["expirationPolicy"] == {
            "KeepLatest": {"servablesToKeep": 3}
        }

    async def test_fqrv_in_the_path_overrides_the_body(self, harness: Harness) -> None:
        response = await harness.client.post(
            "/servable/samples/energy_output/0/from-path", json=serve_body("from-body")
        )
        assert response.json() == {"ServableCreatedSuccessfully": {"fqrv": fqrv_json("from-path")}}
        assert (await harness.client.get(f"{BASE}/releases")).json() == [
            {"FQRV": fqrv_json("from-path")}
        ]

    async def test_direct_scoring_bypasses_the_router_and_the_score_count(
        self, harness: Harness
    ) -> None:
        await harness.client.post("/servable", json=serve_body("v1"))
        await harness.client.post("/servable", json=serve_body("v2", validity=[{"NeverValid": {}}]))
        direct = await harness.client.post(f"{BASE}/v2/score", json=score_body())
        assert direct.status_code == 200
        assert direct.json()["Prediction"]["servableFQRV"] == "samples.energy_output.0.v2"
        stats = {
            s["ServableMetrics"]["fqrv"]["releaseVersion"]: s["ServableMetrics"]
            for s in (await harness.client.get(f"{BASE}/stats")).json()
        }
        assert stats["v2"]["scoreCount"] == 0

    async def test_settings_views(self, harness: Harness) -> None:
        await harness.client.post("/servable", json=serve_body("v1"))
        one = (await harness.client.get(f"{BASE}/v1/settings")).json()["ServableSettings"]
        assert one["fqrv"] == fqrv_json("v1")
        assert one["policySettings"]["validityPolicy"] == [{"ImmediatelyValid": {}}]
        assert one["loggingSettings"]["logLevel"] == "FULL"
        for alias in ("servable-settings", "s-settings"):
            (listed,) = (await harness.client.get(f"{BASE}/{alias}")).json()
            assert listed["ServableSettings"] == one
