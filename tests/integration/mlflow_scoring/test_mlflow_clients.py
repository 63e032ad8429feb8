"""MLflow's own client code, written for `mlflow models serve`, with only its base URL
changed (issue 10, scope 3), against a server on a loopback port: MLflow's
`ScoringServerClient` (what `mlflow` itself drives `mlflow models serve` with),
`mlflow.deployments.PredictionsResponse`, and plain `requests` as MLflow's docs write it."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests

from tests.integration.mlflow_scoring.conftest import LoopbackServer
from tests.payloads import FIXTURES, POWERPLANT_FEATURES, POWERPLANT_ROWS, score_body, serve_body

with warnings.catch_warnings():
    # mlflow warns when imported, about type hints of its own GenAI classes: not ours to fix
    warnings.filterwarnings("ignore", message=".*AnyType", category=UserWarning)
    from mlflow.deployments import PredictionsResponse
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

CONTRACT = "/samples/energy_output/0"
CHURN_CONTRACT = "/samples/churn/0"
CHURN = FIXTURES / "onnx" / "churn_pipeline_named_inputs"
CHURN_FRAME = pd.DataFrame(
    {
        "tenure_months": [48, 4],
        "monthly_charges": [56.55, 114.32],
        "contract": ["one-year", "month-to-month"],
        "payment_method": ["credit-card", "credit-card"],
    }
)


@pytest.fixture(scope="module")
def server(loopback_server: LoopbackServer) -> LoopbackServer:
    """Power plant v1 and a churn classifier, deployed through the BASIC API."""
    for body in (
        serve_body("v1"),
        serve_body("v1", project="churn", path=CHURN, flavor={"ONNX": {"modelPath": "model.onnx"}}),
    ):
        response = loopback_server.client.post("/servable", json=body)
        assert response.status_code == 201, response.text
    return loopback_server


def basic_predictions(
    server: LoopbackServer, path: str, body: dict[str, Any]
) -> dict[str, list[Any]]:
    """The BASIC API's answer as one list of values per output field."""
    response = server.client.post(path + "/score", json=body)
    assert response.status_code == 200, response.text
    prediction = response.json()["Prediction"]
    columns: dict[str, list[Any]] = {}
    for datum in prediction["datum"]:
        for group, tensor in zip(prediction["schema"], datum["tensors"], strict=True):
            (content,) = tensor.values()
            for field, value in zip(group["fields"], content["data"], strict=True):
                columns.setdefault(field, []).append(value)
    return columns


def scoring_client(server: LoopbackServer, path: str) -> ScoringServerClient:
    """MLflow's client for `mlflow models serve`, its base URL set to the contract's."""
    client = ScoringServerClient("127.0.0.1", server.port)
    client.url_prefix = server.base_url + path
    return client


class TestScoringServerClient:
    def test_ping_version_and_invoke_a_dataframe(self, server: LoopbackServer) -> None:
        expected = basic_predictions(server, CONTRACT, score_body())
        client = scoring_client(server, CONTRACT)
        frame = pd.DataFrame(POWERPLANT_ROWS, columns=POWERPLANT_FEATURES)

        client.wait_server_ready(timeout=30)
        version = client.get_version()
        answer = client.invoke(frame)

        assert isinstance(answer, PredictionsResponse)
        (values,) = expected.values()
        np.testing.assert_allclose(answer.get_predictions("ndarray"), values)
        assert answer.get_predictions().iloc[:, 0].tolist() == values
        assert version

    def test_invoke_a_numpy_array_and_params_on_one_release(self, server: LoopbackServer) -> None:
        expected = basic_predictions(server, CONTRACT + "/v1", score_body())
        client = scoring_client(server, CONTRACT + "/v1")

        answer = client.invoke(np.array(POWERPLANT_ROWS), params={"reqid": "abc"})

        assert answer["predictions"] == next(iter(expected.values()))

    def test_a_classifier_answers_a_dataframe_of_label_and_probabilities(
        self, server: LoopbackServer
    ) -> None:
        rows = CHURN_FRAME.to_numpy().tolist()
        body = {
            "schema": [
                {"type": "Int64", "fields": ["tenure_months"]},
                {"type": "Float32", "fields": ["monthly_charges"]},
                {"type": "String", "fields": ["contract", "payment_method"]},
            ],
            "datum": [
                {
                    "tensors": [
                        {"Int64": {"data": [int(r[0])]}},
                        {"Float32": {"data": [r[1]]}},
                        {"String": {"data": r[2:]}},
                    ]
                }
                for r in rows
            ],
        }
        expected = basic_predictions(server, CHURN_CONTRACT, body)

        answer = scoring_client(server, CHURN_CONTRACT).invoke(CHURN_FRAME)

        assert answer.get_predictions().to_dict(orient="list") == expected

    def test_a_bad_request_fails_with_mlflows_error_body(self, server: LoopbackServer) -> None:
        client = scoring_client(server, CONTRACT)
        frame = pd.DataFrame([[1.0, 2.0]], columns=["Temperature", "Vacuum"])

        with pytest.raises(
            Exception, match=r"error code 400.*\"error_code\": ?\"INVALID_PARAMETER_VALUE\""
        ):
            client.invoke(frame)


class TestPlainRequests:
    """The `requests` calls of MLflow's serving docs, with the contract's base URL."""

    def test_each_documented_payload(self, server: LoopbackServer) -> None:
        url = server.base_url + CONTRACT + "/invocations"
        frame = pd.DataFrame(POWERPLANT_ROWS, columns=POWERPLANT_FEATURES)
        (expected,) = basic_predictions(server, CONTRACT, score_body()).values()
        payloads = [
            {"json": {"dataframe_split": frame.to_dict(orient="split")}},
            {"json": {"dataframe_records": frame.to_dict(orient="records")}},
            {"json": {"instances": POWERPLANT_ROWS}},
            {"json": {"inputs": frame.to_dict(orient="list")}},
            {"data": frame.to_csv(), "headers": {"Content-Type": "text/csv"}},
            {"data": frame.to_csv(index=False), "headers": {"Content-Type": "text/csv"}},
        ]

        answers = [requests.post(url, timeout=30, **payload) for payload in payloads]

        for answer in answers:
            assert answer.status_code == 200, answer.text
            assert answer.json() == {"predictions": expected}

    def test_ping_and_health(self, server: LoopbackServer) -> None:
        for route in ("/ping", "/health"):
            response = requests.get(server.base_url + CONTRACT + route, timeout=30)
            assert (response.status_code, response.text) == (200, "\n")

    def test_unknown_contract_is_404(self, server: LoopbackServer) -> None:
        response = requests.post(
            server.base_url + "/samples/nothing/0/invocations",
            json={"inputs": POWERPLANT_ROWS},
            timeout=30,
        )
        assert response.status_code == 404
        assert response.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
