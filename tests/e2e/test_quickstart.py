"""The original ForestFlow quickstart against a real `forestflow serve` process."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.e2e.conftest import ServerProcess
from tests.payloads import EXAMPLES, POWERPLANT_FEATURES, contract_json, fqrv_json, score_body

pytestmark = pytest.mark.e2e

ENERGY_OUTPUT = EXAMPLES / "energy_output"


def test_quickstart(server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory()
    client = server.client
    settings = {
        "expirationPolicy": {"KeepLatest": {"servablesToKeep": 2}},
        "router": {"LatestPhaseInPctBasedRouter": {}},
    }
    created = client.post("/contract/samples/energy_output/0", json=settings)
    assert created.status_code == 201, created.text

    deploy = {
        "path": ENERGY_OUTPUT.as_uri(),
        "fqrv": {
            "contract": {
                "organization": "samples",
                "project": "energy_output",
                "contract_number": 0,
            },
            "release_version": "v1",
        },
        "flavor": {"ONNX": {"modelPath": "model.onnx"}},
        "servableSettings": {
            "policySettings": {
                "validityPolicy": [{"ImmediatelyValid": {}}],
                "phaseInPolicy": {"ImmediatePhaseIn": {}},
            },
            "loggingSettings": {"logLevel": "FULL", "keyFeatures": ["reqid"]},
        },
    }
    deployed = client.post("/servable", json=deploy)
    assert deployed.status_code == 201, deployed.text
    assert deployed.json() == {"ServableCreatedSuccessfully": {"fqrv": fqrv_json("v1")}}

    assert client.get("/contracts/list").json() == {"Contracts": {"contracts": [contract_json()]}}
    assert client.get("/samples/energy_output/0/list").json() == [{"FQRV": fqrv_json("v1")}]

    (metadata,) = client.get("/samples/energy_output/0/metadata").json()
    assert [i["name"] for i in metadata["BasicMetaData"]["features"]] == POWERPLANT_FEATURES

    body = score_body(configs={"reqid": "req-1"})
    scored = client.post("/samples/energy_output/0/score", json=body)
    assert scored.status_code == 200, scored.text
    prediction = scored.json()["Prediction"]
    assert prediction["servableFQRV"] == "samples.energy_output.0.v1"
    assert [s["fields"] for s in prediction["schema"]] == [["prediction"]]
    values = [d["tensors"][0]["Float32"]["data"][0] for d in prediction["datum"]]
    assert len(values) == 2
    assert all(420 < v < 500 for v in values)

    (stats,) = client.get("/samples/energy_output/0/stats").json()
    assert stats["ServableMetrics"]["scoreCount"] == 1
    assert stats["ServableMetrics"]["currentPhaseInPct"] == 100
