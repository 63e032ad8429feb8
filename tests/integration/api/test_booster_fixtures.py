"""The native XGBoost and LightGBM fixture boosters deployed as BasicServeRequests and scored
over the BASIC REST API, in process: every prediction, rows with missing values included,
equals the one the library gave when the fixture was made."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.integration.api.conftest import Harness
from tests.payloads import FIXTURES, score_body, serve_body


@dataclass(frozen=True)
class Booster:
    """A fixture booster: where it lives, how it is deployed, how its outputs are read."""

    directory: Path
    flavor: dict[str, Any]
    classes: int

    @property
    def expected(self) -> dict[str, Any]:
        return json.loads((self.directory / "expected.json").read_text())

    @property
    def base(self) -> str:
        return f"/boosters/{self.directory.name}/0"

    def probabilities(self, rows: slice) -> np.ndarray:
        """The class probabilities the library gave, one row per request row."""
        predictions = np.array(self.expected["predictions"][rows])
        if predictions.ndim == 1:  # binary:logistic gives P(class 1)
            return np.column_stack([1 - predictions, predictions])
        return predictions


XGBOOST = Booster(
    FIXTURES / "mlflow" / "xgboost" / "xgb_breast_cancer_booster",
    {"XGBoost": {"modelPath": "model.ubj"}},
    classes=2,
)
LIGHTGBM = Booster(
    FIXTURES / "mlflow" / "lightgbm" / "lgbm_wine_multiclass_booster",
    {"LightGBM": {"modelPath": "model.lgb"}},
    classes=3,
)
BOOSTERS = [pytest.param(XGBOOST, id="xgboost"), pytest.param(LIGHTGBM, id="lightgbm")]


async def deploy(harness: Harness, booster: Booster) -> None:
    body = serve_body(
        "v1",
        path=booster.directory,
        org="boosters",
        project=booster.directory.name,
        flavor=booster.flavor,
    )
    response = await harness.client.post("/servable", json=body)
    assert response.status_code == 201, response.text


def columns_of(body: dict[str, Any]) -> dict[str, list[Any]]:
    """The Prediction response as one list of values per output field."""
    prediction = body["Prediction"]
    columns: dict[str, list[Any]] = {}
    for datum in prediction["datum"]:
        for group, tensor in zip(prediction["schema"], datum["tensors"], strict=True):
            (content,) = tensor.values()
            for field, value in zip(group["fields"], content["data"], strict=True):
                columns.setdefault(field, []).append(value)
    return columns


def assert_matches(columns: dict[str, list[Any]], booster: Booster, rows: slice) -> None:
    names = [str(i) for i in range(booster.classes)]
    assert list(columns) == ["label", *names]
    want = booster.probabilities(rows)
    got = np.column_stack([columns[name] for name in names])
    np.testing.assert_allclose(got, want, rtol=booster.expected["tolerance_rel"])
    assert columns["label"] == np.argmax(want, axis=1).tolist()


class TestBoosterFixturesOverRest:
    @pytest.mark.parametrize("booster", BOOSTERS)
    async def test_metadata_lists_the_booster_s_features(
        self, harness: Harness, booster: Booster
    ) -> None:
        await deploy(harness, booster)
        response = await harness.client.get(f"{booster.base}/v1/metadata")
        assert response.status_code == 200, response.text
        metadata = response.json()["BasicMetaData"]
        features = booster.expected["features"]
        assert [(f["name"], f["type"], f["acceptsMissing"]) for f in metadata["features"]] == [
            (name, "Float64", True) for name in features
        ]
        (group,) = metadata["inputs"]
        assert (group["type"], group["fields"]) == ("Float64", features)
        outputs = [(o["name"], o["type"]) for o in metadata["outputs"]]
        assert outputs == [
            ("label", "Int64"),
            *((str(i), "Float64") for i in range(booster.classes)),
        ]

    @pytest.mark.parametrize("booster", BOOSTERS)
    async def test_every_row_scores_as_the_library_did(
        self, harness: Harness, booster: Booster
    ) -> None:
        await deploy(harness, booster)
        rows = booster.expected["rows"]
        assert any(value is None for row in rows for value in row)  # missing values sent as null
        response = await harness.client.post(
            f"{booster.base}/score", json=score_body(rows, booster.expected["features"])
        )
        assert response.status_code == 200, response.text
        assert_matches(columns_of(response.json()), booster, slice(None))

    @pytest.mark.parametrize("booster", BOOSTERS)
    async def test_a_left_out_feature_is_missing(self, harness: Harness, booster: Booster) -> None:
        await deploy(harness, booster)
        features = booster.expected["features"]
        index, row = next((i, row) for i, row in enumerate(booster.expected["rows"]) if None in row)
        kept = [
            (name, value) for name, value in zip(features, row, strict=True) if value is not None
        ]
        assert len(kept) < len(features)
        body = score_body([[value for _, value in kept]], [name for name, _ in kept])
        response = await harness.client.post(f"{booster.base}/score", json=body)
        assert response.status_code == 200, response.text
        assert_matches(columns_of(response.json()), booster, slice(index, index + 1))

    @pytest.mark.parametrize("booster", BOOSTERS)
    async def test_a_misspelt_feature_is_refused(self, harness: Harness, booster: Booster) -> None:
        await deploy(harness, booster)
        features = list(booster.expected["features"])
        row = booster.expected["rows"][0]
        misspelt = features[1]
        features[1] = misspelt.upper()
        response = await harness.client.post(
            f"{booster.base}/score", json=score_body([row], features)
        )
        assert response.status_code == 422, response.text
        assert misspelt in response.text

    async def test_a_corrupt_booster_is_refused_with_a_reason(
        self, harness: Harness, tmp_path: Path
    ) -> None:
        model = (XGBOOST.directory / "model.ubj").read_bytes()
        artifact = tmp_path / "artifact"  # beside the server's data directory, not above it
        artifact.mkdir()
        (artifact / "model.ubj").write_bytes(model[: len(model) // 2])
        body = serve_body("v1", path=artifact, flavor={"XGBoost": {"modelPath": "model.ubj"}})
        response = await harness.client.post("/servable", json=body)
        assert response.status_code == 422, response.text
        message = response.json()["CreateServableRequestInvalidError"]["errorMessage"]
        assert "not a valid XGBoost model" in message
        assert "malformed UBJSON" in message
