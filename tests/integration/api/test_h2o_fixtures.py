"""The H2O MOJO fixtures deployed and scored over the BASIC REST API, in process: every
prediction, including rows with missing values and unseen levels, equals H2O's own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.integration.api.conftest import Harness
from tests.payloads import FIXTURES, serve_body

H2O = FIXTURES / "h2o"
DIRECTORIES = sorted(H2O.iterdir())
VERSION = "3.46.0.11"


def expected(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "expected.json").read_text())


def contract_path(directory: Path) -> str:
    return f"/samples/{directory.name}/0"


def score_request(features: list[str], types: dict[str, str], rows: list[list[Any]]) -> Any:
    """A BASIC score request: enums in one String tensor, numbers in one Float64 tensor."""
    groups = [
        ("String", [f for f in features if types[f] == "String"]),
        ("Float64", [f for f in features if types[f] != "String"]),
    ]
    groups = [(kind, fields) for kind, fields in groups if fields]
    datum = []
    for row in rows:
        values = dict(zip(features, row, strict=True))
        tensors = []
        for kind, fields in groups:
            data = [
                values[f] if values[f] is None or kind == "String" else float(values[f])
                for f in fields
            ]
            tensors.append({kind: {"data": data}})
        datum.append({"tensors": tensors})
    schema = [{"type": kind, "fields": fields} for kind, fields in groups]
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


def assert_matches(columns: dict[str, list[Any]], reference: dict[str, Any], rows: slice) -> None:
    tolerance = reference["tolerance_rel"]
    if reference["task"] == "regression":
        assert list(columns) == ["Regression"]
        want = reference["predictions"][rows]
        np.testing.assert_allclose(columns["Regression"], want, rtol=tolerance)
        return
    assert list(columns) == ["label", *reference["classes"]]
    assert columns["label"] == reference["predictions"][rows]
    probabilities = np.column_stack([columns[c] for c in reference["classes"]])
    np.testing.assert_allclose(probabilities, reference["probabilities"][rows], rtol=tolerance)


async def deploy(harness: Harness, directory: Path) -> None:
    reference = expected(directory)
    body = serve_body(
        "v1",
        path=directory,
        project=directory.name,
        flavor={"H2OMojo": {"mojoPath": reference["model_file"], "version": VERSION}},
    )
    response = await harness.client.post("/servable", json=body)
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("directory", DIRECTORIES, ids=lambda d: d.name)
class TestH2OFixturesOverRest:
    async def test_rows_with_nulls_score_as_h2o_scored_them(
        self, harness: Harness, directory: Path
    ) -> None:
        await deploy(harness, directory)
        reference = expected(directory)
        types = {f["name"]: f["type"] for f in reference["feature_types"]}
        request = score_request(reference["features"], types, reference["rows"])
        response = await harness.client.post(f"{contract_path(directory)}/score", json=request)
        assert response.status_code == 200, response.text
        assert response.json()["Prediction"]["servableFQRV"] == f"samples.{directory.name}.0.v1"
        assert_matches(named_predictions(response.json()), reference, slice(None))

    async def test_features_left_out_of_the_schema_are_missing_values(
        self, harness: Harness, directory: Path
    ) -> None:
        await deploy(harness, directory)
        reference = expected(directory)
        types = {f["name"]: f["type"] for f in reference["feature_types"]}
        gappy = [i for i, row in enumerate(reference["rows"]) if None in row and any(row)]
        assert gappy
        for i in gappy:
            row = reference["rows"][i]
            present = [j for j, value in enumerate(row) if value is not None]
            features = [reference["features"][j] for j in present]
            request = score_request(features, types, [[row[j] for j in present]])
            path = f"{contract_path(directory)}/v1/score"
            response = await harness.client.post(path, json=request)
            assert response.status_code == 200, response.text
            assert_matches(named_predictions(response.json()), reference, slice(i, i + 1))

    async def test_metadata_lists_the_inputs_with_their_domains(
        self, harness: Harness, directory: Path
    ) -> None:
        await deploy(harness, directory)
        reference = expected(directory)
        response = await harness.client.get(f"{contract_path(directory)}/v1/metadata")
        assert response.status_code == 200, response.text
        metadata = response.json()["BasicMetaData"]
        features = {f["name"]: f for f in metadata["features"]}
        assert sorted(features) == sorted(reference["features"])
        for spec in reference["feature_types"]:
            feature = features[spec["name"]]
            assert feature["acceptsMissing"] is True
            if spec["h2o_type"] == "enum":
                assert (feature["type"], feature["domain"]) == ("String", spec["domain"])
            else:
                assert feature["type"] == "Float64"
                assert "domain" not in feature
        outputs = [(o["name"], o["type"]) for o in metadata["outputs"]]
        if reference["task"] == "regression":
            assert outputs == [("Regression", "Float64")]
        else:
            classes = [(c, "Float64") for c in reference["classes"]]
            assert outputs == [("label", "String"), *classes]


class TestH2OErrorsOverRest:
    async def test_a_corrupt_mojo_is_a_422_naming_the_problem(
        self, harness: Harness, tmp_path: Path
    ) -> None:
        artifact = tmp_path / "artifact"  # not tmp_path itself: it holds the data directory
        artifact.mkdir()
        (artifact / "model.zip").write_bytes(b"PK\x03\x04 not really a zip")
        body = serve_body("v1", path=artifact, flavor={"H2OMojo": {"mojoPath": "model.zip"}})
        response = await harness.client.post("/servable", json=body)
        assert response.status_code == 422
        error = response.json()["CreateServableRequestInvalidError"]["errorMessage"]
        assert "'model.zip' is not a zip archive: not an H2O MOJO" in error
        assert str(artifact) not in error

    async def test_an_unseen_level_sent_over_rest_scores_as_missing(self, harness: Harness) -> None:
        directory = H2O / "glm_churn_binomial"
        await deploy(harness, directory)
        reference = expected(directory)
        types = {f["name"]: f["type"] for f in reference["feature_types"]}
        rows = [
            ["crypto", "east", "month-to-month", 30, 80.0],
            [None, "east", "month-to-month", 30, 80.0],
        ]
        request = score_request(reference["features"], types, rows)
        response = await harness.client.post(f"{contract_path(directory)}/score", json=request)
        assert response.status_code == 200, response.text
        unseen, missing = (named_predictions(response.json())["yes"][i] for i in (0, 1))
        assert unseen == missing
        assert rows[0] == reference["rows"][17]
        assert unseen == pytest.approx(reference["probabilities"][17][1], rel=1e-9)
