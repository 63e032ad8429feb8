"""Deploys from Git and from the MLflow Model Registry over the REST API (SPEC §2.2).

The remotes are real: bare Git repositories built by the tests (cloned over file://) and an
`mlflow server` on 127.0.0.1. After a restart the servables come back from the local
artifact cache even once their remote is gone.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.git_commands import git
from tests.integration.api.conftest import Harness, HarnessFactory
from tests.mlflow_server import MlflowServer
from tests.payloads import (
    EXAMPLES,
    FIXTURES,
    fqrv_json,
    prediction_values,
    score_body,
    serve_body,
)

ENERGY_MODEL = EXAMPLES / "energy_output" / "model.onnx"
MLFLOW_ONNX_MODEL = FIXTURES / "mlflow" / "onnx" / "gbr_powerplant_onnx"
TAG = "v3.2026-11-28"
BASE = "/samples/energy_output/3"


# ------------------------------------------------------------------------------ Git remote


def make_bare_repository(root: Path) -> Path:
    """`<root>/samples/energy_output.git` holding the example ONNX model, tagged TAG and
    `not-a-version`."""
    work = root / "work"
    work.mkdir(parents=True)
    git(work, "init", "--quiet", "--initial-branch", "main")
    shutil.copy(ENERGY_MODEL, work / "model.onnx")
    git(work, "add", "model.onnx")
    git(work, "commit", "--quiet", "--message", "energy output model")
    git(work, "tag", TAG)
    git(work, "tag", "not-a-version")
    bare = root / "samples" / "energy_output.git"
    git(root, "clone", "--quiet", "--bare", str(work), str(bare))
    shutil.rmtree(work)
    return bare


@pytest.fixture(scope="module")
def bare_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bare_repository(tmp_path_factory.mktemp("git"))


def git_body(location: str, fqrv: dict[str, Any] | None = None) -> dict[str, Any]:
    """A BasicServeRequest for the example model at `location`, with `fqrv` or none."""
    body = serve_body("unused", path=location, flavor={"ONNX": {"modelPath": "model.onnx"}})
    del body["fqrv"]
    if fqrv is not None:
        body["fqrv"] = fqrv
    return body


def energy_output_expected() -> list[float]:
    """What onnxruntime itself predicts for the default score rows."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(ENERGY_MODEL), providers=["CPUExecutionProvider"])
    body = score_body()
    features = body["schema"][0]["fields"]
    rows = np.array([d["tensors"][0]["Float64"]["data"] for d in body["datum"]], np.float32)
    feeds = {name: rows[:, [i]] for i, name in enumerate(features)}
    return [float(v) for v in session.run(None, feeds)[0][:, 0]]


async def score(harness: Harness, path: str, body: dict[str, Any] | None = None) -> list[float]:
    response = await harness.client.post(f"{path}/score", json=body or score_body())
    assert response.status_code == 200, response.text
    return [row[0] for row in prediction_values(response.json())]


def refusal(response: httpx.Response) -> str:
    assert response.status_code == 422, response.text
    (error,) = response.json().values()
    return str(error["errorMessage"])


class TestGitDeploys:
    async def test_the_fqrv_comes_from_the_tag_when_the_body_has_none(
        self, harness: Harness, bare_repository: Path
    ) -> None:
        response = await harness.client.post(
            "/servable", json=git_body(f"{bare_repository.as_uri()}#{TAG}")
        )
        assert response.status_code == 201, response.text
        fqrv = fqrv_json("2026-11-28", n=3)
        assert response.json() == {"ServableCreatedSuccessfully": {"fqrv": fqrv}}
        assert (await harness.client.get(f"{BASE}/list")).json() == [{"FQRV": fqrv}]
        np.testing.assert_allclose(await score(harness, BASE), energy_output_expected(), rtol=1e-6)

    async def test_an_explicit_fqrv_wins_over_the_tag(
        self, harness: Harness, bare_repository: Path
    ) -> None:
        explicit = {
            "contract": {"organization": "acme", "project": "power", "contract_number": 7},
            "release_version": "r1",
        }
        location = f"{bare_repository.as_uri()}#{TAG}"
        response = await harness.client.post("/servable", json=git_body(location, explicit))
        assert response.status_code == 201, response.text
        assert response.json()["ServableCreatedSuccessfully"]["fqrv"] == fqrv_json(
            "r1", org="acme", project="power", n=7
        )
        # the FQRV of the URL path wins over both
        response = await harness.client.post(
            "/servable/acme/power/8/r2", json=git_body(location, explicit)
        )
        assert response.status_code == 201, response.text
        contracts = (await harness.client.get("/contracts/list")).json()["Contracts"]["contracts"]
        assert [(c["project"], c["contractNumber"]) for c in contracts] == [
            ("power", 7),
            ("power", 8),
        ]
        np.testing.assert_allclose(
            await score(harness, "/acme/power/8"), energy_output_expected(), rtol=1e-6
        )

    async def test_a_tag_not_in_version_form_needs_an_explicit_fqrv(
        self, harness: Harness, bare_repository: Path
    ) -> None:
        location = f"{bare_repository.as_uri()}#not-a-version"
        message = refusal(await harness.client.post("/servable", json=git_body(location)))
        assert message.startswith("fqrv: no fqrv: give it in the body")
        assert (await harness.client.get("/contracts/list")).json() == {
            "Contracts": {"contracts": []}
        }

        explicit = serve_body("untagged")["fqrv"]  # samples.energy_output.0.untagged
        response = await harness.client.post("/servable", json=git_body(location, explicit))
        assert response.status_code == 201, response.text

    async def test_an_unknown_tag_is_refused(self, harness: Harness, bare_repository: Path) -> None:
        location = f"{bare_repository.as_uri()}#v3.missing"
        message = refusal(await harness.client.post("/servable", json=git_body(location)))
        assert message == (
            f"path: tag 'v3.missing' not found in Git repository {bare_repository.as_uri()}"
        )

    async def test_after_the_repository_is_gone_a_restart_reloads_from_the_cache(
        self, harness_factory: HarnessFactory, tmp_path: Path
    ) -> None:
        bare = make_bare_repository(tmp_path / "remote")
        data_dir = tmp_path / "restart-data"
        first = await harness_factory(data_dir=data_dir)
        deployed = await first.client.post("/servable", json=git_body(f"{bare.as_uri()}#{TAG}"))
        assert deployed.status_code == 201, deployed.text
        before = await score(first, BASE)
        await first.app.shutdown()

        shutil.rmtree(bare)
        second = await harness_factory(data_dir=data_dir)
        assert (await second.client.get(f"{BASE}/list")).json() == [
            {"FQRV": fqrv_json("2026-11-28", n=3)}
        ]
        assert await score(second, BASE) == before
        again = git_body(f"{bare.as_uri()}#{TAG}", fqrv=serve_body("again")["fqrv"])
        assert "not found or unreachable" in refusal(
            await second.client.post("/servable", json=again)
        )


# --------------------------------------------------------------------------- MLflow server


@pytest.fixture(scope="module")
def powerplant(mlflow_server: MlflowServer) -> MlflowServer:
    """`powerplant-api` version 1 (alias `live`): the MLflow ONNX fixture."""
    assert mlflow_server.register("powerplant-api", MLFLOW_ONNX_MODEL, alias="live") == "1"
    return mlflow_server


def powerplant_expected() -> tuple[dict[str, Any], list[float]]:
    """A score body of the fixture's rows, and the predictions mlflow recorded for them."""
    expected = json.loads((MLFLOW_ONNX_MODEL / "expected.json").read_text())
    body = score_body(expected["rows"], expected["features"])
    return body, [row[0] for row in expected["predictions"]["data"]]


def registry_body(path: str, release: str, flavor: dict[str, Any] | None = None) -> dict[str, Any]:
    body = serve_body(release, path=path, org="registry", project="powerplant")
    if flavor is None:
        del body["flavor"]  # an MLFlowServeRequest: the flavor comes from the MLmodel
    else:
        body["flavor"] = flavor
    return body


ONNX_WITH_NAMES = {
    "ONNX": {
        "modelPath": "model.onnx",
        "featureNames": json.loads((MLFLOW_ONNX_MODEL / "expected.json").read_text())["features"],
    }
}


class TestRegistryDeploys:
    async def test_mlflow_serve_request_from_a_model_version(
        self, harness_factory: HarnessFactory, powerplant: MlflowServer
    ) -> None:
        harness = await harness_factory(storage={"mlflow_tracking_uri": powerplant.uri})
        body = registry_body("models:/powerplant-api/1", "mlmodel")
        response = await harness.client.post("/servable", json=body)
        assert response.status_code == 201, response.text
        rows, want = powerplant_expected()
        got = await score(harness, "/registry/powerplant/0", rows)
        np.testing.assert_allclose(got, want, rtol=1e-6)

    async def test_basic_serve_request_from_an_alias(
        self, harness_factory: HarnessFactory, powerplant: MlflowServer
    ) -> None:
        harness = await harness_factory(storage={"mlflow_tracking_uri": powerplant.uri})
        body = registry_body("models:/powerplant-api@live", "onnx", ONNX_WITH_NAMES)
        response = await harness.client.post("/servable", json=body)
        assert response.status_code == 201, response.text
        assert response.json()["ServableCreatedSuccessfully"]["fqrv"] == fqrv_json(
            "onnx", org="registry", project="powerplant"
        )
        rows, want = powerplant_expected()
        got = await score(harness, "/registry/powerplant/0", rows)
        np.testing.assert_allclose(got, want, rtol=1e-6)

    async def test_an_unknown_version_is_refused(
        self, harness_factory: HarnessFactory, powerplant: MlflowServer
    ) -> None:
        harness = await harness_factory(storage={"mlflow_tracking_uri": powerplant.uri})
        body = registry_body("models:/powerplant-api/42", "v42", ONNX_WITH_NAMES)
        message = refusal(await harness.client.post("/servable", json=body))
        assert message.startswith("path: models:/powerplant-api/42 not found in the MLflow")

    async def test_a_registry_location_needs_an_explicit_fqrv(
        self, harness_factory: HarnessFactory, powerplant: MlflowServer
    ) -> None:
        harness = await harness_factory(storage={"mlflow_tracking_uri": powerplant.uri})
        body = registry_body("models:/powerplant-api/1", "unused", ONNX_WITH_NAMES)
        del body["fqrv"]
        assert "no fqrv" in refusal(await harness.client.post("/servable", json=body))

    async def test_after_the_version_is_deleted_a_restart_reloads_from_the_cache(
        self, harness_factory: HarnessFactory, mlflow_server: MlflowServer, tmp_path: Path
    ) -> None:
        version = mlflow_server.register("powerplant-restart", MLFLOW_ONNX_MODEL)
        storage = {"mlflow_tracking_uri": mlflow_server.uri}
        data_dir = tmp_path / "restart-data"
        first = await harness_factory(data_dir=data_dir, storage=storage)
        location = f"models:/powerplant-restart/{version}"
        deployed = await first.client.post(
            "/servable", json=registry_body(location, "r1", ONNX_WITH_NAMES)
        )
        assert deployed.status_code == 201, deployed.text
        rows, want = powerplant_expected()
        before = await score(first, "/registry/powerplant/0", rows)
        await first.app.shutdown()

        mlflow_server.client.delete_registered_model("powerplant-restart")
        second = await harness_factory(data_dir=data_dir, storage=storage)
        assert await score(second, "/registry/powerplant/0", rows) == before
        np.testing.assert_allclose(before, want, rtol=1e-6)
        again = registry_body(location, "r2", ONNX_WITH_NAMES)
        assert "not found in the MLflow registry" in refusal(
            await second.client.post("/servable", json=again)
        )


class TestAliasPinning:
    async def test_a_lost_copy_is_fetched_again_as_deployed_not_as_the_alias_now_says(
        self,
        harness_factory: HarnessFactory,
        mlflow_server: MlflowServer,
        tmp_path: Path,
    ) -> None:
        mlflow_server.register("powerplant-pinned", MLFLOW_ONNX_MODEL, alias="champion")
        storage = {"mlflow_tracking_uri": mlflow_server.uri}
        data_dir = tmp_path / "pinned-data"
        first = await harness_factory(data_dir=data_dir, storage=storage)
        body = registry_body("models:/powerplant-pinned@champion", "live", ONNX_WITH_NAMES)
        deployed = await first.client.post("/servable", json=body)
        assert deployed.status_code == 201, deployed.text
        rows, want = powerplant_expected()
        await first.app.shutdown()

        # the alias moves on to a broken version, and the local copy is lost
        broken = tmp_path / "broken"
        broken.mkdir()
        (broken / "model.onnx").write_bytes(b"not an onnx graph")
        mlflow_server.register("powerplant-pinned", broken, alias="champion")
        shutil.rmtree(data_dir / "artifacts" / "servables" / "registry")

        second = await harness_factory(data_dir=data_dir, storage=storage)
        got = await score(second, "/registry/powerplant/0", rows)
        np.testing.assert_allclose(got, want, rtol=1e-6)
