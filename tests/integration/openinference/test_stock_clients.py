"""Stock tritonclient clients, unchanged, against a real server (issue 10, scopes 1 and 2).

Each test runs over REST (`tritonclient.http`) and gRPC (`tritonclient.grpc`); results must
equal what the BASIC API answers for the same rows.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tests.integration.openinference.conftest import OipServer
from tests.payloads import (
    FIXTURES,
    POWERPLANT_FEATURES,
    prediction_values,
    score_body,
    serve_body,
)
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

REGRESSION = "samples.energy_output.0"
CLASSIFIER = "samples.churn.0"
CHURN = FIXTURES / "onnx" / "churn_pipeline_named_inputs"
GBR = FIXTURES / "mlflow" / "onnx" / "gbr_powerplant_onnx"
POWERPLANT_ROWS = json.loads(
    (FIXTURES / "onnx/rf_powerplant_single_input/expected.json").read_text()
)["rows"]
CHURN_EXPECTED = json.loads((CHURN / "expected.json").read_text())
CHURN_TYPES = {"tenure_months": np.int64, "monthly_charges": np.float32}
TRANSPORTS = ["http", "grpc"]
STATUS = {
    "http": {"not_found": "404", "invalid": "400", "unauthenticated": "401"},
    "grpc": {
        "not_found": "StatusCode.NOT_FOUND",
        "invalid": "StatusCode.INVALID_ARGUMENT",
        "unauthenticated": "StatusCode.UNAUTHENTICATED",
    },
}


def deploy(server: OipServer) -> None:
    """Regression v1 and v2 (v2 serves, v1 shadows), and a classifier with string labels."""
    client = server.client
    for body in (
        serve_body("v1"),
        serve_body("v2", path=GBR),
        serve_body("v1", project="churn", path=CHURN, flavor={"ONNX": {"modelPath": "model.onnx"}}),
    ):
        response = client.post("/servable", json=body)
        assert response.status_code == 201, response.text
    logging = {"logLevel": "FULL", "keyFeatures": ["reqid", "contract"]}
    response = client.put("/samples/churn/0/v1/logging-settings", json=logging)
    assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OipServer]:
    started = OipServer(tmp_path_factory.mktemp("oip") / "data")
    try:
        deploy(started.start())
        yield started
    finally:
        started.close()


class Client:
    """One stock client, and the little that differs between the two."""

    def __init__(self, kind: str, server: OipServer, headers: dict[str, str] | None = None):
        self.kind = kind
        self.module: Any = httpclient if kind == "http" else grpcclient
        url = server.http_url if kind == "http" else server.grpc_url
        self.stock = self.module.InferenceServerClient(url=url)
        self.headers = headers

    def infer(
        self,
        model: str,
        columns: dict[str, np.ndarray[Any, Any]],
        version: str = "",
        *,
        binary: bool = True,
        outputs: list[str] | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> Any:
        inputs = []
        for name, array in columns.items():
            tensor = self.module.InferInput(
                name, list(array.shape), np_to_triton_dtype(array.dtype)
            )
            if self.kind == "http":
                tensor.set_data_from_numpy(array, binary_data=binary)
            else:
                tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        requested = None
        if outputs is not None:
            options = {"binary_data": binary} if self.kind == "http" else {}
            requested = [self.module.InferRequestedOutput(name, **options) for name in outputs]
        return self.stock.infer(
            model,
            inputs,
            model_version=version,
            outputs=requested,
            parameters=parameters,
            headers=self.headers,
        )

    def model_version(self, result: Any) -> str:
        response = result.get_response()
        return str(response["model_version"] if self.kind == "http" else response.model_version)

    def metadata(self, model: str, version: str = "") -> dict[str, Any]:
        options = {} if self.kind == "http" else {"as_json": True}
        answer: dict[str, Any] = self.stock.get_model_metadata(
            model, version, headers=self.headers, **options
        )
        return answer

    def status(self, error: InferenceServerException) -> str:
        return str(error.status())

    def close(self) -> None:
        self.stock.close()


@pytest.fixture(params=TRANSPORTS)
def client(request: pytest.FixtureRequest, server: OipServer) -> Iterator[Client]:
    made = Client(request.param, server)
    yield made
    made.close()


def basic(server: OipServer, path: str, body: dict[str, Any]) -> list[list[Any]]:
    response = server.client.post(path, json=body)
    assert response.status_code == 200, response.text
    return prediction_values(response.json())


def churn_columns(rows: list[list[Any]]) -> dict[str, np.ndarray[Any, Any]]:
    columns = {}
    for j, name in enumerate(CHURN_EXPECTED["features"]):
        values = [row[j] for row in rows]
        columns[name] = np.array(values, dtype=CHURN_TYPES.get(name, object))
    return columns


def churn_basic_body(rows: list[list[Any]]) -> dict[str, Any]:
    return {
        "schema": [
            {"type": "Int64", "fields": ["tenure_months"]},
            {"type": "Float32", "fields": ["monthly_charges"]},
            {"type": "String", "fields": ["contract", "payment_method"]},
        ],
        "datum": [
            {
                "tensors": [
                    {"Int64": {"data": [r[0]]}},
                    {"Float32": {"data": [r[1]]}},
                    {"String": {"data": [r[2], r[3]]}},
                ]
            }
            for r in rows
        ],
    }


class TestHealthAndMetadata:
    def test_the_server_and_its_models_are_live_and_ready(self, client: Client) -> None:
        stock = client.stock
        assert stock.is_server_live()
        assert stock.is_server_ready()
        assert stock.is_model_ready(REGRESSION)
        assert stock.is_model_ready(REGRESSION, "v1")
        assert stock.is_model_ready(CLASSIFIER)

    def test_server_metadata_names_forestflow(self, client: Client) -> None:
        metadata = client.stock.get_server_metadata(
            **({} if client.kind == "http" else {"as_json": True})
        )
        assert metadata["name"] == "forestflow"

    def test_model_metadata_lists_inputs_outputs_and_versions(self, client: Client) -> None:
        metadata = client.metadata(REGRESSION)
        assert metadata["name"] == REGRESSION
        assert metadata["versions"] == ["v1", "v2"]
        assert [i["name"] for i in metadata["inputs"]] == POWERPLANT_FEATURES
        assert {i["datatype"] for i in metadata["inputs"]} == {"FP32"}
        assert [o["name"] for o in metadata["outputs"]] == ["variable"]

    def test_classifier_metadata_has_string_inputs_and_labels_as_bytes(
        self, client: Client
    ) -> None:
        metadata = client.metadata(CLASSIFIER, "v1")
        datatypes = {i["name"]: i["datatype"] for i in metadata["inputs"]}
        assert datatypes == {
            "tenure_months": "INT64",
            "monthly_charges": "FP32",
            "contract": "BYTES",
            "payment_method": "BYTES",
        }
        outputs = {o["name"]: o["datatype"] for o in metadata["outputs"]}
        assert outputs == {"label": "BYTES", "no": "FP32", "yes": "FP32"}


class TestInfer:
    def test_a_routed_regression_equals_the_basic_api(
        self, client: Client, server: OipServer
    ) -> None:
        rows = np.array(POWERPLANT_ROWS, dtype=np.float64)
        columns = {name: rows[:, j].copy() for j, name in enumerate(POWERPLANT_FEATURES)}

        result = client.infer(REGRESSION, columns)

        expected = basic(server, "/samples/energy_output/0/score", score_body(POWERPLANT_ROWS))
        assert client.model_version(result) == "v2"  # the router's choice: the latest
        assert result.as_numpy("variable").tolist() == [row[0] for row in expected]

    def test_one_release_takes_a_2d_tensor_in_input_order(
        self, client: Client, server: OipServer
    ) -> None:
        matrix = np.array(POWERPLANT_ROWS, dtype=np.float32)

        result = client.infer(REGRESSION, {"float_input": matrix}, "v1")

        expected = basic(server, "/samples/energy_output/0/v1/score", score_body(POWERPLANT_ROWS))
        assert client.model_version(result) == "v1"
        assert result.as_numpy("variable").tolist() == [row[0] for row in expected]

    def test_a_classifier_answers_labels_as_bytes(self, client: Client, server: OipServer) -> None:
        rows = CHURN_EXPECTED["rows"]

        result = client.infer(CLASSIFIER, churn_columns(rows))

        expected = basic(server, "/samples/churn/0/score", churn_basic_body(rows))
        labels = [label.decode() for label in result.as_numpy("label").tolist()]
        assert labels == [row[0] for row in expected] == CHURN_EXPECTED["predictions"]
        assert result.as_numpy("no").tolist() == [row[1] for row in expected]
        assert result.as_numpy("yes").tolist() == [row[2] for row in expected]

    def test_asked_for_outputs_only_in_json_or_binary(self, client: Client) -> None:
        rows = CHURN_EXPECTED["rows"][:3]
        for binary in (True, False):
            result = client.infer(
                CLASSIFIER, churn_columns(rows), "v1", binary=binary, outputs=["label"]
            )
            assert result.as_numpy("yes") is None
            labels = result.as_numpy("label").tolist()
            assert [v.decode() if isinstance(v, bytes) else v for v in labels] == (
                CHURN_EXPECTED["predictions"][:3]
            )

    def test_routed_requests_are_shadowed_like_basic_ones(
        self, client: Client, server: OipServer
    ) -> None:
        before = stats(server)
        columns = {
            name: np.array([v], dtype=np.float32)
            for name, v in zip(POWERPLANT_FEATURES, POWERPLANT_ROWS[0], strict=True)
        }
        for _ in range(3):
            client.infer(REGRESSION, columns)

        assert stats(server)["v2"]["scoreCount"] == before["v2"]["scoreCount"] + 3
        await_count(server, "v1", "shadeCount", before["v1"]["shadeCount"] + 3)


def stats(server: OipServer) -> dict[str, dict[str, int]]:
    body = server.client.get("/samples/energy_output/0/stats").json()
    return {s["ServableMetrics"]["fqrv"]["releaseVersion"]: s["ServableMetrics"] for s in body}


def await_count(server: OipServer, release: str, counter: str, expected: int) -> None:
    """Shadow work finishes after the response: poll the stats until it is counted."""
    for _ in range(2000):
        if stats(server)[release][counter] >= expected:
            assert stats(server)[release][counter] == expected
            return
    raise AssertionError(f"{release} {counter} stayed below {expected}")


class TestParameters:
    def test_request_parameters_reach_the_prediction_log_as_configs(
        self, client: Client, server: OipServer
    ) -> None:
        request_id = f"req-{client.kind}"
        client.infer(
            CLASSIFIER,
            churn_columns(CHURN_EXPECTED["rows"][:1]),
            parameters={"reqid": request_id, "attempt": 2},
        )

        record = await_logged(server.data_dir, f"{request_id}.one-year")
        assert record["request"]["configs"] == {"reqid": request_id, "attempt": "2"}
        assert record["servedRequest"] is True
        assert record["prediction"]["label"] == ["no"]


def await_logged(data_dir: Path, key: str) -> dict[str, Any]:
    """The prediction-log record with `key`, once the file sink has written it."""
    for _ in range(5000):
        for path in sorted((data_dir / "predictions").glob("*.jsonl")):
            for line in path.read_text().splitlines():
                record: dict[str, Any] = json.loads(line)
                if record["key"] == key:
                    return record
    raise AssertionError(f"no prediction logged with key {key!r}")


class TestErrors:
    def _error(self, call: Any) -> InferenceServerException:
        with pytest.raises(InferenceServerException) as raised:
            call()
        return raised.value

    def test_an_unknown_model_or_version_is_not_found(self, client: Client) -> None:
        columns = {"float_input": np.array(POWERPLANT_ROWS, dtype=np.float32)}
        for model, version in (("samples.nothing.0", ""), (REGRESSION, "v9")):
            error = self._error(lambda m=model, v=version: client.infer(m, columns, v))
            assert client.status(error) == STATUS[client.kind]["not_found"], error
        assert client.stock.is_server_live()

    def test_a_datatype_the_model_cannot_take_is_named(self, client: Client) -> None:
        columns = churn_columns(CHURN_EXPECTED["rows"][:2])
        columns["tenure_months"] = np.array(["four", "five"], dtype=object)

        error = self._error(lambda: client.infer(CLASSIFIER, columns))

        assert client.status(error) == STATUS[client.kind]["invalid"]
        assert "tenure_months" in str(error.message())

    def test_a_2d_tensor_of_the_wrong_width_is_refused_with_the_input_order(
        self, client: Client
    ) -> None:
        matrix = np.array(POWERPLANT_ROWS, dtype=np.float32)[:, :3]

        error = self._error(lambda: client.infer(REGRESSION, {"x": matrix}))

        assert client.status(error) == STATUS[client.kind]["invalid"]
        assert "TemperatureCelcius" in str(error.message())
        assert client.stock.is_server_ready()


def create_token(data_dir: Path, role: str, name: str) -> str:
    created = subprocess.run(
        [
            sys.executable,
            "-m",
            "forestflow.cli",
            "token",
            "create",
            "--data-dir",
            str(data_dir),
            "--role",
            role,
            "--name",
            name,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    return created.stdout.strip()


class TestAuthentication:
    def test_both_transports_take_the_same_bearer_tokens(
        self, oip_server_factory: Callable[..., OipServer], tmp_path: Path
    ) -> None:
        data_dir = tmp_path / "secured"
        admin = create_token(data_dir, "admin", "ops")
        scorer = create_token(data_dir, "scorer", "app")
        server = oip_server_factory({"FORESTFLOW_SECURITY__AUTH": "required"}, data_dir)
        deployed = server.client.post(
            "/servable", json=serve_body("v1"), headers={"Authorization": f"Bearer {admin}"}
        )
        assert deployed.status_code == 201, deployed.text
        columns = {"float_input": np.array(POWERPLANT_ROWS[:2], dtype=np.float32)}

        for kind in TRANSPORTS:
            anonymous = Client(kind, server)
            header = "Authorization" if kind == "http" else "authorization"
            wrong = Client(kind, server, {header: "Bearer ff_not-a-token"})
            admitted = Client(kind, server, {header: f"Bearer {scorer}"})
            try:
                assert anonymous.stock.is_server_live()  # health is open
                assert anonymous.stock.is_server_ready()
                for client in (anonymous, wrong):
                    with pytest.raises(InferenceServerException) as raised:
                        client.infer(REGRESSION, columns)
                    assert client.status(raised.value) == STATUS[kind]["unauthenticated"]
                    assert "bearer token" in str(raised.value.message())
                result = admitted.infer(REGRESSION, columns)
                assert admitted.model_version(result) == "v1"
                assert admitted.metadata(REGRESSION)["versions"] == ["v1"]
            finally:
                for client in (anonymous, wrong, admitted):
                    client.close()
