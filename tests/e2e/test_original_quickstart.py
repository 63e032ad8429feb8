"""The original ForestFlow's quickstart, as its users ran it, against a real `forestflow serve`.

Its docs/quickstart.md: port and working directory from `APPLICATION_HTTP_PORT_CONFIG` and
`LOCAL_WORKING_DIR_CONFIG`; no contract created first (the defaults apply); an H2O MOJO
deployed with its BasicServeRequest — here from an S3-compatible store (moto's server on
127.0.0.1) named in the original's `s3::` form, the store's endpoint being the operator's
`storage.s3_endpoint_url`; then the list, metadata, score and stats calls, with its bodies.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import ServerProcess
from tests.integration.artifacts.conftest import REGION, Bucket, MotoServer
from tests.payloads import FIXTURES, POWERPLANT_FEATURES

pytestmark = pytest.mark.e2e

MOJO = FIXTURES / "h2o" / "gbm_powerplant_regression"
RELEASE = "gbm_powerplant_regression"
# tests/basicapi-score-1.json of the original
QUICKSTART_SCORE = {
    "schema": [{"type": "Float64", "fields": POWERPLANT_FEATURES}],
    "datum": [
        {"tensors": [{"Float64": {"data": [33.2, 60.5, 1010.7, 30]}}]},
        {"tensors": [{"Float64": {"data": [29.6, 62, 998.5, 40.62]}}]},
    ],
    "configs": {"reqid": "123-456-789"},
}


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log")
    yield server
    server.stop()


def quickstart_deploy(path: str) -> dict[str, Any]:
    """tests/basicapi-local-h2o.json of the original, with our MOJO and `path`."""
    return {
        "path": path,
        "fqrv": {
            "contract": {
                "organization": "samples",
                "project": "energy_output",
                "contract_number": 0,
            },
            "release_version": RELEASE,
        },
        "flavor": {"H2OMojo": {"mojoPath": f"{RELEASE}.zip", "version": "3.46.0.11"}},
        "servableSettings": {
            "policySettings": {
                "validityPolicy": [{"ImmediatelyValid": {}}],
                "phaseInPolicy": {"ImmediatePhaseIn": {}},
            },
            "loggingSettings": {"logLevel": "FULL", "keyFeatures": ["reqid"]},
        },
    }


def server_env(moto: MotoServer, home: Path) -> dict[str, str]:
    """The store's endpoint as the operator's setting, and boto3's chain finding the key."""
    return {
        "FORESTFLOW_STORAGE__S3_ENDPOINT_URL": moto.endpoint,
        "FORESTFLOW_STORAGE__ALLOW_PRIVATE_HOSTS": "false",  # the endpoint is trusted as set
        "AWS_ACCESS_KEY_ID": moto.reader.key_id,
        "AWS_SECRET_ACCESS_KEY": moto.reader.secret,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(home / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws-credentials"),
    }


def test_the_original_quickstart_from_s3(moto: MotoServer, tmp_path: Path) -> None:
    bucket = Bucket(moto)
    bucket.put(f"{RELEASE}.zip", (MOJO / f"{RELEASE}.zip").read_bytes())
    working_dir = tmp_path / "ff-temp"
    server = ServerProcess(working_dir, server_env(moto, tmp_path))
    try:
        server.start_from_environment("APPLICATION_HTTP_PORT_CONFIG", "LOCAL_WORKING_DIR_CONFIG")
        run_the_quickstart(server, bucket)
        # the original's working directory is the data directory: state and model copies
        assert (working_dir / "state.sqlite3").is_file()
        assert f"{RELEASE}.zip" in {p.name for p in (working_dir / "artifacts").rglob("*")}
    finally:
        server.close()


def run_the_quickstart(server: ServerProcess, bucket: Bucket) -> None:
    client = server.client
    assert client.get("/contracts/list").json() == {"Contracts": {"contracts": []}}

    path = f"s3::{bucket.server.endpoint}/{bucket.name} bucket={bucket.name} region={REGION}"
    deployed = client.post("/servable", json=quickstart_deploy(path))
    assert deployed.status_code == 201, deployed.text
    fqrv = {
        "contract": {"organization": "samples", "project": "energy_output", "contractNumber": 0},
        "releaseVersion": RELEASE,
    }
    assert deployed.json() == {"ServableCreatedSuccessfully": {"fqrv": fqrv}}

    contracts = client.get("/contracts/list").json()
    assert contracts == {"Contracts": {"contracts": [fqrv["contract"]]}}
    assert client.get("/samples/energy_output/0/list").json() == [{"FQRV": fqrv}]
    settings = client.get("/samples/energy_output/0/contract-settings").json()
    assert settings["ContractSettings"]["expirationPolicy"] == {
        "KeepLatest": {"servablesToKeep": 2}
    }

    metadata = client.get(f"/samples/energy_output/0/{RELEASE}/metadata").json()
    assert [f["name"] for f in metadata["BasicMetaData"]["features"]] == POWERPLANT_FEATURES

    scored = client.post("/samples/energy_output/0/score", json=QUICKSTART_SCORE)
    assert scored.status_code == 200, scored.text
    prediction = scored.json()["Prediction"]
    assert prediction["fqrv"] == fqrv
    assert prediction["schema"] == [{"type": "Float64", "fields": ["Regression"]}]
    values = [datum["tensors"][0]["Float64"]["data"][0] for datum in prediction["datum"]]
    assert len(values) == 2
    assert all(420 < value < 500 for value in values), values

    # the model fetched from the store is the one H2O made: its own predictions
    reference = json.loads((MOJO / "expected.json").read_text())
    rows = reference["rows"][:3]
    body = {
        "schema": [{"type": "Float64", "fields": reference["features"]}],
        "datum": [{"tensors": [{"Float64": {"data": row}}]} for row in rows],
    }
    again = client.post(f"/samples/energy_output/0/{RELEASE}/score", json=body).json()
    got = [datum["tensors"][0]["Float64"]["data"][0] for datum in again["Prediction"]["datum"]]
    assert got == pytest.approx(reference["predictions"][:3], rel=1e-6)

    (stats,) = client.get("/samples/energy_output/0/stats").json()
    assert stats["ServableMetrics"]["fqrv"] == fqrv
    assert stats["ServableMetrics"]["scoreCount"] == 1  # the release's own route does not count
    assert stats["ServableMetrics"]["currentPhaseInPct"] == 100
