"""A contract's `missingValues`: `accept` (the default) scores a missing value as the model
would; `refuse` answers 422 naming the input, whatever the model accepts (issue 11)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.integration.api.conftest import Harness
from tests.payloads import FIXTURES, score_body, serve_body

XGBOOST = FIXTURES / "mlflow" / "xgboost" / "xgb_breast_cancer_booster"
EXPECTED = json.loads((XGBOOST / "expected.json").read_text())
FEATURES: list[str] = EXPECTED["features"]
BASE = "/missing/xgb/0"
OPEN_INFERENCE = "/v2/models/missing.xgb.0/infer"


async def contract_with(harness: Harness, **settings: Any) -> None:
    body = {"expirationPolicy": {"KeepLatest": {"servablesToKeep": 2}}, **settings}
    response = await harness.client.post("/contract" + BASE, json=body)
    assert response.status_code == 201, response.text
    serve = serve_body(
        "v1",
        path=XGBOOST,
        org="missing",
        project="xgb",
        flavor={"XGBoost": {"modelPath": "model.ubj"}},
    )
    deployed = await harness.client.post("/servable", json=serve)
    assert deployed.status_code == 201, deployed.text


def complete_row() -> list[float]:
    return next(row for row in EXPECTED["rows"] if None not in row)


def with_null(at: int) -> list[Any]:
    row: list[Any] = list(complete_row())
    row[at] = None
    return row


async def score(harness: Harness, body: dict[str, Any], release: str = "") -> Any:
    return await harness.client.post(f"{BASE}{release}/score", json=body)


class TestAccept:
    async def test_is_the_default_and_scores_missing_values(self, harness: Harness) -> None:
        await contract_with(harness)
        settings = (await harness.client.get(BASE + "/contract-settings")).json()

        null = await score(harness, score_body([with_null(3)], FEATURES))
        left_out = await score(harness, score_body([complete_row()[1:]], FEATURES[1:]))

        assert json.dumps(settings).count('"missingValues": "accept"') == 1
        assert (null.status_code, left_out.status_code) == (200, 200)


class TestRefuse:
    @pytest.mark.parametrize("release", ["", "/v1"])
    async def test_a_null_is_refused_naming_the_input_and_the_row(
        self, harness: Harness, release: str
    ) -> None:
        await contract_with(harness, missingValues="refuse")
        rows = [complete_row(), with_null(3)]

        response = await score(harness, score_body(rows, FEATURES), release)

        assert response.status_code == 422, response.text
        error = response.json()["InferenceRequestInvalidError"]
        assert error["field"] == FEATURES[3]
        assert error["errorMessage"] == (
            f"{FEATURES[3]}: row 1: the value is missing, and this contract refuses missing "
            "values (missingValues: refuse)"
        )

    async def test_an_input_left_out_is_refused(self, harness: Harness) -> None:
        await contract_with(harness, missingValues="refuse")

        response = await score(harness, score_body([complete_row()[1:]], FEATURES[1:]))

        assert response.status_code == 422, response.text
        assert response.json()["InferenceRequestInvalidError"]["field"] == FEATURES[0]

    async def test_complete_rows_score_and_other_protocols_refuse_too(
        self, harness: Harness
    ) -> None:
        await contract_with(harness, missingValues="refuse")
        tensors = [
            {"name": name, "datatype": "FP64", "shape": [1], "data": [value]}
            for name, value in zip(FEATURES, with_null(0), strict=True)
        ]

        complete = await score(harness, score_body([complete_row()], FEATURES))
        v2 = await harness.client.post(OPEN_INFERENCE, json={"inputs": tensors})

        assert complete.status_code == 200, complete.text
        assert v2.status_code == 400, v2.text
        assert v2.json()["error"].startswith(f"{FEATURES[0]}: row 0: the value is missing")

    async def test_an_update_naming_it_switches_it_and_keeps_the_rest(
        self, harness: Harness
    ) -> None:
        await contract_with(harness, missingValues="refuse")

        updated = await harness.client.put(BASE, json={"missingValues": "accept"})
        settings = (await harness.client.get(BASE + "/contract-settings")).json()
        null = await score(harness, score_body([with_null(3)], FEATURES))

        assert updated.status_code == 200, updated.text
        assert '"servablesToKeep": 2' in json.dumps(settings)
        assert null.status_code == 200, null.text

    async def test_an_unknown_value_is_refused_naming_the_field(self, harness: Harness) -> None:
        response = await harness.client.post(
            "/contract" + BASE, json={"missingValues": "sometimes"}
        )

        assert response.status_code == 422, response.text
        assert response.json()["ContractValidationError"]["field"] == "missingValues"
