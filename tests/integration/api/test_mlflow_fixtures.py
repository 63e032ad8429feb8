"""The MLflow fixtures deployed as MLFlowServeRequests (no flavor: the server reads MLmodel)
and scored over the BASIC REST API, in process: every prediction equals what
`mlflow.pyfunc` gave when the fixtures were made, and classifiers answer their label and
class probabilities where the chosen flavor gives them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from tests.integration.api.conftest import Harness, HarnessFactory
from tests.payloads import FIXTURES

MLFLOW = FIXTURES / "mlflow"
DIRECTORIES = sorted(path.parent for path in MLFLOW.glob("*/*/MLmodel"))
# The skops fixture's forest type: the server trusts it only from its own setting (the
# MLmodel's skops_trusted_types is ignored).
TREE = "sklearn.tree._tree.Tree"


@pytest.fixture
async def trusting(harness_factory: HarnessFactory) -> Harness:
    """A harness that also trusts the skops fixture's tree type."""
    return await harness_factory(security={"skops_trusted_types": [TREE]})


def expected(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "expected.json").read_text())


def contract_path(directory: Path) -> str:
    return f"/samples/{directory.name}/0"


def mlflow_body(directory: Path, release: str, *, wrapped: bool = False) -> dict[str, Any]:
    """An MLFlowServeRequest: a path and an FQRV, no flavor; optionally in its type wrapper."""
    body = {
        "path": directory.as_uri(),
        "fqrv": {
            "contract": {
                "organization": "samples",
                "project": directory.name,
                "contract_number": 0,
            },
            "release_version": release,
        },
    }
    return {"MLFlowServeRequest": body} if wrapped else body


def score_request(reference: dict[str, Any]) -> dict[str, Any]:
    """Every row of expected.json, one schema group per tensor type; null for missing."""
    types = {spec["name"]: spec["type"] for spec in reference["feature_types"]}
    groups: dict[str, list[str]] = {}
    for name in reference["features"]:
        groups.setdefault(types[name], []).append(name)
    datum = []
    for row in reference["rows"]:
        values = dict(zip(reference["features"], row, strict=True))
        tensors = [{kind: {"data": [values[f] for f in fields]}} for kind, fields in groups.items()]
        datum.append({"tensors": tensors})
    schema = [{"type": kind, "fields": fields} for kind, fields in groups.items()]
    return {"schema": schema, "datum": datum}


def named_predictions(body: dict[str, Any]) -> dict[str, list[Any]]:
    """The Prediction response as one list of values per output field."""
    prediction = body["Prediction"]
    columns: dict[str, list[Any]] = {}
    for datum in prediction["datum"]:
        for group, tensor in zip(prediction["schema"], datum["tensors"], strict=True):
            (content,) = tensor.values()
            for field, value in zip(group["fields"], content["data"], strict=True):
                columns.setdefault(field, []).append(value)
    return columns


# The response columns holding `predictions` when pyfunc returned an array: the flavor chosen
# for the fixture names them (a booster classifier answers per-class columns besides `label`).
ARRAY_OUTPUTS = {
    "sklearn": ["prediction"],
    "xgboost": ["1"],  # binary:logistic — pyfunc returned P(class 1)
    "lightgbm": ["0", "1", "2"],  # multiclass — pyfunc returned the (n, 3) probabilities
}


def assert_matches(columns: dict[str, list[Any]], reference: dict[str, Any]) -> None:
    """The response equals `predictions`, and a classifier's label its most probable class."""
    rtol = reference["tolerance_rel"]
    predictions = reference["predictions"]
    if isinstance(predictions, dict):  # a DataFrame: the flavor keeps its column names
        assert list(columns) == predictions["columns"]
        np.testing.assert_allclose(
            np.column_stack([columns[name] for name in columns]), predictions["data"], rtol=rtol
        )
        return
    if isinstance(predictions[0], str):  # class labels; the sklearn flavor adds probabilities
        native = reference["native"]
        assert list(columns) == ["label", *native["classes"]]
        assert columns["label"] == predictions
        probabilities = np.column_stack([columns[c] for c in native["classes"]])
        np.testing.assert_allclose(probabilities, native["predict_proba"], rtol=rtol)
        return
    names = ARRAY_OUTPUTS[reference["mlflow_flavor"]]
    want = np.asarray(predictions, dtype=float).reshape(len(predictions), -1)
    got = np.column_stack([columns[name] for name in names])
    np.testing.assert_allclose(got, want, rtol=rtol)
    if "label" in columns:
        classes = np.column_stack([1 - want[:, 0], want[:, 0]]) if want.shape[1] == 1 else want
        assert columns["label"] == np.argmax(classes, axis=1).tolist()
        assert set(columns) == {"label", *(str(c) for c in range(classes.shape[1]))}


async def deploy(harness: Harness, directory: Path, release: str, *, wrapped: bool) -> None:
    body = mlflow_body(directory, release, wrapped=wrapped)
    response = await harness.client.post("/servable", json=body)
    assert response.status_code == 201, response.text
    assert response.json()["ServableCreatedSuccessfully"]["fqrv"]["releaseVersion"] == release


@pytest.mark.parametrize("directory", DIRECTORIES, ids=lambda d: f"{d.parent.name}/{d.name}")
class TestMLflowFixturesOverRest:
    async def test_bare_and_wrapped_requests_score_as_mlflow_did(
        self, trusting: Harness, directory: Path
    ) -> None:
        harness = trusting
        await deploy(harness, directory, "bare", wrapped=False)
        await deploy(harness, directory, "wrapped", wrapped=True)
        reference = expected(directory)
        for release in ("bare", "wrapped"):
            path = f"{contract_path(directory)}/{release}/score"
            response = await harness.client.post(path, json=score_request(reference))
            assert response.status_code == 200, response.text
            prediction = response.json()["Prediction"]
            assert prediction["servableFQRV"] == f"samples.{directory.name}.0.{release}"
            assert len(prediction["datum"]) == len(reference["rows"])
            assert_matches(named_predictions(response.json()), reference)

    async def test_metadata_lists_the_signature_inputs(
        self, trusting: Harness, directory: Path
    ) -> None:
        await deploy(trusting, directory, "v1", wrapped=False)
        response = await trusting.client.get(f"{contract_path(directory)}/v1/metadata")
        assert response.status_code == 200, response.text
        features = response.json()["BasicMetaData"]["features"]
        reference = expected(directory)
        assert sorted((f["name"], f["type"]) for f in features) == sorted(
            (spec["name"], spec["type"]) for spec in reference["feature_types"]
        )


class TestSklearnClassifierOverRest:
    async def test_label_and_one_probability_per_class(self, harness: Harness) -> None:
        directory = MLFLOW / "sklearn" / "logreg_iris_pipeline"
        await deploy(harness, directory, "v1", wrapped=False)
        response = await harness.client.post(
            f"{contract_path(directory)}/score", json=score_request(expected(directory))
        )
        assert response.status_code == 200, response.text
        assert response.json()["Prediction"]["schema"] == [
            {"type": "String", "fields": ["label"]},
            {"type": "Float64", "fields": ["setosa", "versicolor", "virginica"]},
        ]


class TestMLflowErrorsOverRest:
    async def test_no_supported_flavor_is_a_422_and_leaves_nothing_cached(
        self, harness_factory: HarnessFactory, tmp_path: Path
    ) -> None:
        data_dir = tmp_path / "data"
        harness = await harness_factory(data_dir=data_dir)
        artifact = tmp_path / "artifact"
        (artifact / "data").mkdir(parents=True)
        (artifact / "data" / "model.keras").write_bytes(b"\x00")
        mlmodel = {"flavors": {"keras": {"data": "data"}, "tensorflow": {"saved_model_dir": "tf"}}}
        (artifact / "MLmodel").write_text(yaml.safe_dump(mlmodel))
        response = await harness.client.post("/servable", json=mlflow_body(artifact, "v1"))
        assert response.status_code == 422, response.text
        error = response.json()["CreateServableRequestInvalidError"]
        assert error["field"] == "path"
        assert "keras (not supported); tensorflow (not supported)" in error["errorMessage"]
        assert (await harness.client.get("/samples/artifact/0/v1/metadata")).status_code == 404
        leftovers = [p for p in (data_dir / "artifacts").rglob("*") if p.is_file()]
        assert leftovers == []
        assert list((data_dir / "artifacts" / "servables").iterdir()) == []

    async def test_directory_without_mlmodel_is_a_422(
        self, harness: Harness, tmp_path: Path
    ) -> None:
        artifact = tmp_path / "artifact"
        artifact.mkdir()
        (artifact / "model.onnx").write_bytes(b"\x00")
        response = await harness.client.post("/servable", json=mlflow_body(artifact, "v1"))
        assert response.status_code == 422, response.text
        error = response.json()["CreateServableRequestInvalidError"]["errorMessage"]
        assert "no MLmodel file" in error
        assert str(tmp_path) not in error
