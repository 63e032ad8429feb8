"""The MLflow scoring protocol in process (issue 10, scope 3): MLflow's payload forms and
CSV score as the BASIC API does for the same rows, through the same router, shadows and
prediction log; health answers as MLflow's; errors in MLflow's form, naming the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from forestflow.control.tokens import TokenRegistry
from forestflow.domain.roles import Role
from forestflow.store.sqlite import open_store
from forestflow.testing import FakeClock
from tests.integration.mlflow_scoring.conftest import MlflowHarness, MlflowHarnessFactory
from tests.payloads import (
    FIXTURES,
    POWERPLANT_FEATURES,
    POWERPLANT_ROWS,
    prediction_values,
    score_body,
    serve_body,
)

CONTRACT = "/samples/energy_output/0"
CHURN_CONTRACT = "/samples/churn/0"
CHURN = FIXTURES / "onnx" / "churn_pipeline_named_inputs"
CHURN_EXPECTED = json.loads((CHURN / "expected.json").read_text())
CHURN_FEATURES: list[str] = CHURN_EXPECTED["features"]
CHURN_ROWS: list[list[Any]] = CHURN_EXPECTED["rows"][:4]
ONNX_ONLY = {"ONNX": {"modelPath": "model.onnx"}}
MLFLOW = FIXTURES / "mlflow"
MLFLOW_MODELS = sorted(path.parent for path in MLFLOW.glob("*/*/MLmodel"))


def records(features: list[str], rows: list[list[Any]]) -> list[dict[str, Any]]:
    return [dict(zip(features, row, strict=True)) for row in rows]


def columns(features: list[str], rows: list[list[Any]]) -> dict[str, list[Any]]:
    return {name: [row[j] for row in rows] for j, name in enumerate(features)}


def csv_text(features: list[str], rows: list[list[Any]], *, index: bool = False) -> str:
    """What `pandas.DataFrame.to_csv()` writes (with its index column when `index`)."""
    header = ([""] if index else []) + features
    lines = [",".join(header)]
    lines += [
        ",".join(([str(i)] if index else []) + [str(v) for v in row]) for i, row in enumerate(rows)
    ]
    return "\n".join(lines) + "\n"


# MLflow's documented payload forms, for the power plant's rows
PAYLOADS: dict[str, dict[str, Any]] = {
    "dataframe_split": {
        "dataframe_split": {"columns": POWERPLANT_FEATURES, "data": POWERPLANT_ROWS}
    },
    "dataframe_split without columns": {"dataframe_split": {"data": POWERPLANT_ROWS}},
    "dataframe_split as pandas writes it": {
        "dataframe_split": {
            "index": [0, 1],
            "columns": POWERPLANT_FEATURES,
            "data": POWERPLANT_ROWS,
        }
    },
    "dataframe_records": {"dataframe_records": records(POWERPLANT_FEATURES, POWERPLANT_ROWS)},
    "instances as records": {"instances": records(POWERPLANT_FEATURES, POWERPLANT_ROWS)},
    "instances as rows": {"instances": POWERPLANT_ROWS},
    "inputs as columns": {"inputs": columns(POWERPLANT_FEATURES, POWERPLANT_ROWS)},
    "inputs as rows": {"inputs": POWERPLANT_ROWS},
    "inputs with params": {"inputs": POWERPLANT_ROWS, "params": {"reqid": "123"}},
}


async def deploy(harness: MlflowHarness, *bodies: dict[str, Any]) -> None:
    for body in bodies:
        response = await harness.client.post("/servable", json=body)
        assert response.status_code == 201, response.text


@pytest.fixture
async def harness(mlflow_harness: MlflowHarness) -> MlflowHarness:
    """Power plant v1 and a churn classifier (numbers and strings, label and probabilities)."""
    await deploy(
        mlflow_harness,
        serve_body("v1"),
        serve_body("v1", project="churn", path=CHURN, flavor=ONNX_ONLY),
    )
    return mlflow_harness


async def invoke(harness: MlflowHarness, path: str, **request: Any) -> Any:
    response = await harness.client.post(path + "/invocations", **request)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()


async def basic(harness: MlflowHarness, path: str, body: dict[str, Any]) -> list[list[Any]]:
    response = await harness.client.post(path + "/score", json=body)
    assert response.status_code == 200, response.text
    return prediction_values(response.json())


def churn_score_body(rows: list[list[Any]]) -> dict[str, Any]:
    return {
        "schema": [
            {"type": "Int64", "fields": CHURN_FEATURES[:1]},
            {"type": "Float32", "fields": CHURN_FEATURES[1:2]},
            {"type": "String", "fields": CHURN_FEATURES[2:]},
        ],
        "datum": [
            {
                "tensors": [
                    {"Int64": {"data": r[:1]}},
                    {"Float32": {"data": r[1:2]}},
                    {"String": {"data": r[2:]}},
                ]
            }
            for r in rows
        ],
    }


class TestPayloadForms:
    @pytest.mark.parametrize("form", PAYLOADS)
    async def test_each_form_answers_what_the_basic_api_answers(
        self, harness: MlflowHarness, form: str
    ) -> None:
        expected = [row[0] for row in await basic(harness, CONTRACT, score_body())]

        answer = await invoke(harness, CONTRACT, json=PAYLOADS[form])

        assert answer == {"predictions": expected}

    @pytest.mark.parametrize("index", [False, True], ids=["plain", "with pandas' index column"])
    async def test_csv_answers_what_the_basic_api_answers(
        self, harness: MlflowHarness, index: bool
    ) -> None:
        expected = [row[0] for row in await basic(harness, CONTRACT, score_body())]
        body = csv_text(POWERPLANT_FEATURES, POWERPLANT_ROWS, index=index)

        answer = await invoke(
            harness, CONTRACT, content=body, headers={"Content-Type": "text/csv; charset=utf-8"}
        )

        assert answer == {"predictions": expected}

    async def test_one_release_answers_directly_without_counting(
        self, harness: MlflowHarness
    ) -> None:
        expected = [row[0] for row in await basic(harness, CONTRACT + "/v1", score_body())]

        response = await harness.client.post(
            CONTRACT + "/v1/invocations", json=PAYLOADS["dataframe_split"]
        )
        stats = (await harness.client.get(CONTRACT + "/stats")).json()

        assert response.json() == {"predictions": expected}
        assert response.headers["x-forestflow-servable"] == "samples.energy_output.0.v1"
        assert stats[0]["ServableMetrics"]["scoreCount"] == 0

    async def test_a_classifier_answers_records_of_label_and_probabilities(
        self, harness: MlflowHarness
    ) -> None:
        basic_rows = await basic(harness, CHURN_CONTRACT, churn_score_body(CHURN_ROWS))
        response = await harness.client.post(
            CHURN_CONTRACT + "/score", json=churn_score_body(CHURN_ROWS)
        )
        fields = [f for group in response.json()["Prediction"]["schema"] for f in group["fields"]]
        payload = {"dataframe_split": {"columns": CHURN_FEATURES, "data": CHURN_ROWS}}

        answer = await invoke(harness, CHURN_CONTRACT, json=payload)
        csv_answer = await invoke(
            harness,
            CHURN_CONTRACT,
            content=csv_text(CHURN_FEATURES, CHURN_ROWS),
            headers={"Content-Type": "text/csv"},
        )

        assert answer == {
            "predictions": [dict(zip(fields, row, strict=True)) for row in basic_rows]
        }
        assert [r["label"] for r in answer["predictions"]] == CHURN_EXPECTED["outputs"]["label"][:4]
        assert csv_answer == answer

    async def test_strings_of_digits_stay_text_in_csv_for_a_text_input(
        self, harness: MlflowHarness
    ) -> None:
        rows = [[48, 56.55, "12", "credit-card"]]  # '12' is an unknown category: still text
        answer = await invoke(
            harness,
            CHURN_CONTRACT,
            content=csv_text(CHURN_FEATURES, rows),
            headers={"Content-Type": "text/csv"},
        )
        assert answer["predictions"][0]["label"] in ("yes", "no")

    async def test_json_with_nan_is_read_as_missing_values(self, harness: MlflowHarness) -> None:
        # Python's json (and so MLflow's client) writes NaN for a DataFrame's missing values
        split = '{"columns": %s, "data": [[48, NaN, "one-year", "credit-card"]]}'
        body = '{"dataframe_split": %s}' % (split % json.dumps(CHURN_FEATURES))
        response = await harness.client.post(
            CHURN_CONTRACT + "/invocations",
            content=body,
            headers={"Content-Type": "application/json"},
        )
        basic_answer = await harness.client.post(
            CHURN_CONTRACT + "/score",
            json=churn_score_body([[48, None, "one-year", "credit-card"]]),
        )
        (refusal,) = basic_answer.json().values()

        assert response.status_code == 400, response.text
        assert response.json() == {
            "error_code": "INVALID_PARAMETER_VALUE",
            "message": refusal["errorMessage"],
        }
        assert response.json()["message"].startswith("monthly_charges: missing value in row 0")

    async def test_params_reach_the_prediction_log_as_configs(self, harness: MlflowHarness) -> None:
        logging = {"logLevel": "FULL", "keyFeatures": ["reqid"]}
        response = await harness.client.put(CONTRACT + "/v1/logging-settings", json=logging)
        assert response.status_code == 200, response.text
        harness.sink.events.clear()

        await invoke(
            harness, CONTRACT, json={"inputs": POWERPLANT_ROWS, "params": {"reqid": "r-1", "n": 2}}
        )

        (event,) = harness.sink.events
        assert event.served_request
        assert dict(event.request.configs) == {"reqid": "r-1", "n": "2"}
        assert event.key == "r-1"
        assert event.request.names == POWERPLANT_FEATURES

    @pytest.mark.parametrize("directory", MLFLOW_MODELS, ids=lambda d: d.name)
    async def test_mlflow_serving_input_examples_score_as_the_basic_api(
        self, mlflow_harness: MlflowHarness, directory: Path
    ) -> None:
        """Each MLflow fixture's own `serving_input_example.json` (what MLflow documents for
        the model) scores, and equals the BASIC API's answer for the same rows."""
        path = f"/samples/{directory.name}/0"
        fqrv = {
            "contract": {
                "organization": "samples",
                "project": directory.name,
                "contract_number": 0,
            },
            "release_version": "v1",
        }
        await deploy(mlflow_harness, {"path": directory.as_uri(), "fqrv": fqrv})
        example = json.loads((directory / "serving_input_example.json").read_text())
        split = example["dataframe_split"]
        response = await mlflow_harness.client.post(path + "/score", json=float_score_body(split))
        names = [f for group in response.json()["Prediction"]["schema"] for f in group["fields"]]
        rows = prediction_values(response.json())

        answer = await invoke(mlflow_harness, path, json=example)

        if len(names) == 1:
            assert answer == {"predictions": [row[0] for row in rows]}
        else:
            assert answer == {"predictions": [dict(zip(names, row, strict=True)) for row in rows]}
        expected = json.loads((directory / "expected.json").read_text())
        count = len(split["data"])
        if (
            expected["rows"][:count] == split["data"]
            and expected["prediction_kind"] == "ndarray_1d"
        ):
            np.testing.assert_allclose(
                answer["predictions"], expected["predictions"][:count], rtol=1e-6
            )


def float_score_body(split: dict[str, Any]) -> dict[str, Any]:
    """A BASIC request for a dataframe_split of numbers."""
    return score_body(rows=split["data"], features=split["columns"])


class TestHealth:
    async def test_ping_and_health_answer_as_mlflow(self, harness: MlflowHarness) -> None:
        for path in (CONTRACT + "/ping", CONTRACT + "/health", CONTRACT + "/v1/ping"):
            response = await harness.client.get(path)
            assert (response.status_code, response.content) == (200, b"\n"), path
            assert response.headers["content-type"] == "application/json"

    async def test_ping_is_404_for_an_unknown_contract_or_one_no_release_serves(
        self, harness: MlflowHarness
    ) -> None:
        await deploy(harness, serve_body("v1", project="shadow", validity=[{"NeverValid": {}}]))
        await harness.app.control.evaluate()

        unknown = await harness.client.get("/samples/nothing/0/ping")
        unknown_release = await harness.client.get(CONTRACT + "/v9/health")
        shadow_only = await harness.client.get("/samples/shadow/0/ping")

        assert unknown.status_code == unknown_release.status_code == shadow_only.status_code == 404
        assert unknown.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
        assert "no active servable" in shadow_only.json()["message"]

    async def test_not_ready_while_recovering(
        self, mlflow_harness_factory: MlflowHarnessFactory
    ) -> None:
        harness = await mlflow_harness_factory(start=False)

        ping = await harness.client.get(CONTRACT + "/ping")
        invoked = await harness.client.post(
            CONTRACT + "/invocations", json=PAYLOADS["inputs as rows"]
        )

        assert ping.status_code == invoked.status_code == 503
        assert invoked.json() == {
            "error_code": "TEMPORARILY_UNAVAILABLE",
            "message": "recovering state; not ready yet",
        }

    async def test_version(self, harness: MlflowHarness) -> None:
        from forestflow import __version__

        response = await harness.client.get(CONTRACT + "/version")
        assert (response.status_code, response.text) == (200, __version__)


class TestRouting:
    async def test_routed_requests_are_counted_shadowed_and_logged(
        self, harness: MlflowHarness
    ) -> None:
        await deploy(harness, serve_body("v2"))  # v2 serves, v1 shadows (the default router)
        await harness.app.control.evaluate()
        harness.sink.events.clear()

        response = await harness.client.post(
            CONTRACT + "/invocations", json=PAYLOADS["dataframe_records"]
        )
        await harness.settle()

        assert response.headers["x-forestflow-servable"] == "samples.energy_output.0.v2"
        served = {(str(e.fqrv), e.served_request) for e in harness.sink.events}
        assert served == {
            ("samples.energy_output.0.v2", True),
            ("samples.energy_output.0.v1", False),
        }

    async def test_rows_without_names_need_releases_that_agree_on_the_input_order(
        self, harness: MlflowHarness
    ) -> None:
        flipped = {"ONNX": {"modelPath": "model.onnx", "featureNames": POWERPLANT_FEATURES[::-1]}}
        await deploy(
            harness,
            serve_body(
                "v2", phase_in={"LinearTimeBasedPhaseIn": {"phaseInOverSecs": 100}}, flavor=flipped
            ),
        )
        harness.clock.advance(seconds=50)
        await harness.app.control.evaluate()

        unnamed = await harness.client.post(
            CONTRACT + "/invocations", json=PAYLOADS["inputs as rows"]
        )
        named = await harness.client.post(
            CONTRACT + "/invocations", json=PAYLOADS["dataframe_split"]
        )
        one_release = await harness.client.post(
            CONTRACT + "/v2/invocations", json=PAYLOADS["inputs as rows"]
        )

        assert unnamed.status_code == 400
        assert unnamed.json()["message"].startswith("inputs: values without column names")
        assert "take different inputs" in unnamed.json()["message"]
        assert named.status_code == one_release.status_code == 200


class TestErrors:
    @pytest.mark.parametrize(
        ("body", "message"),
        [
            ([1, 2], "the body must be a JSON object with one of dataframe_split"),
            ({"data": [[1]]}, "the body must hold exactly one of dataframe_split"),
            ({"inputs": [[1]], "instances": [[1]]}, "the body must hold exactly one of"),
            ({"dataframe_split": [[1]]}, "dataframe_split: expected an object with 'data'"),
            ({"dataframe_split": {"columns": ["a"]}}, "dataframe_split.data: missing"),
            ({"dataframe_split": {"data": [], "columns": []}}, "dataframe_split.data: is empty"),
            (
                {
                    "dataframe_split": {
                        "columns": POWERPLANT_FEATURES,
                        "data": [[1, 2, 3, 4], [1, 2]],
                    }
                },
                "dataframe_split.data[1]: the row holds 2 values; expected 4",
            ),
            (
                {"dataframe_split": {"data": [[1, 2]]}},
                "dataframe_split.data: values without column names",
            ),
            ({"dataframe_records": {"a": 1}}, "dataframe_records: expected an array of rows"),
            ({"dataframe_records": [{"a": 1}, [1]]}, "dataframe_records[1]: expected objects"),
            (
                {"instances": [[1, 2, 3, [4]]]},
                "instances.RelativeHumidity: row 0: expected a single value",
            ),
            (
                {"inputs": {"TemperatureCelcius": [1, 2], "ExhaustVacuumHg": [1]}},
                "inputs: columns differ in length",
            ),
            (
                {"inputs": {"TemperatureCelcius": [1, "x"]}},
                "inputs.TemperatureCelcius: the column mixes",
            ),
            ({"inputs": [[1, 2, 3, 4]], "params": [1]}, "params: expected an object"),
            (
                {
                    "dataframe_records": [
                        {
                            "TemperatureCelcius": "hot",
                            "ExhaustVacuumHg": 1,
                            "AmbientPressureMillibar": 1,
                            "RelativeHumidity": 1,
                        }
                    ]
                },
                "TemperatureCelcius: expects Float",
            ),
            (
                {"dataframe_records": [{"Temperature": 1.0}]},
                "none of the request's fields ('Temperature')",
            ),
        ],
    )
    async def test_malformed_payloads_are_400_naming_the_field(
        self, harness: MlflowHarness, body: Any, message: str
    ) -> None:
        response = await harness.client.post(CONTRACT + "/invocations", json=body)

        assert response.status_code == 400, response.text
        answer = response.json()
        assert set(answer) == {"error_code", "message"}
        assert answer["error_code"] in ("BAD_REQUEST", "INVALID_PARAMETER_VALUE")
        assert message in answer["message"]

    @pytest.mark.parametrize(
        ("content", "message"),
        [
            ("{not json", "malformed JSON"),
            ("", "the request body is empty"),
        ],
    )
    async def test_malformed_json_is_400(
        self, harness: MlflowHarness, content: str, message: str
    ) -> None:
        response = await harness.client.post(
            CONTRACT + "/invocations", content=content, headers={"Content-Type": "application/json"}
        )
        assert (response.status_code, response.json()["error_code"]) == (400, "BAD_REQUEST")
        assert message in response.json()["message"]

    @pytest.mark.parametrize(
        ("content", "message"),
        [
            ("", "csv: the body is empty"),
            ("a,b\n", "csv: the body holds a header but no rows"),
            ("a,a\n1,2\n", "csv.header: column 'a' is named twice"),
            ("a,b\n1,2,3\n", "csv: line 2 holds 3 values; the header names 2"),
        ],
    )
    async def test_malformed_csv_is_400(
        self, harness: MlflowHarness, content: str, message: str
    ) -> None:
        response = await harness.client.post(
            CONTRACT + "/invocations", content=content, headers={"Content-Type": "text/csv"}
        )
        assert response.status_code == 400, response.text
        assert response.json()["message"].startswith(message)

    async def test_unknown_contract_and_release_are_404(self, harness: MlflowHarness) -> None:
        for path in ("/samples/nothing/0", CONTRACT + "/v9"):
            response = await harness.client.post(
                path + "/invocations", json=PAYLOADS["inputs as rows"]
            )
            assert response.status_code == 404, path
            assert response.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"

    @pytest.mark.parametrize(
        "content_type",
        [
            "text/plain",
            "application/vnd.apache.parquet",
            "application/json; charset=latin-1",
            "text/csv; format=pandas-split",
        ],
    )
    async def test_other_content_types_are_415(
        self, harness: MlflowHarness, content_type: str
    ) -> None:
        response = await harness.client.post(
            CONTRACT + "/invocations", content=b"{}", headers={"Content-Type": content_type}
        )
        assert response.status_code == 415
        assert response.json()["message"].startswith("Content-Type: ")

    async def test_a_body_over_the_limit_is_413(
        self, mlflow_harness_factory: MlflowHarnessFactory
    ) -> None:
        harness = await mlflow_harness_factory(server={"max_request_bytes": 1024})
        await deploy(harness, serve_body("v1"))
        rows = POWERPLANT_ROWS * 50

        response = await harness.client.post(CONTRACT + "/invocations", json={"inputs": rows})

        assert response.status_code == 413
        assert response.json()["error_code"] == "BAD_REQUEST"

    async def test_a_contract_no_release_serves_is_400(self, harness: MlflowHarness) -> None:
        await deploy(harness, serve_body("v1", project="shadow", validity=[{"NeverValid": {}}]))
        await harness.app.control.evaluate()

        response = await harness.client.post(
            "/samples/shadow/0/invocations", json=PAYLOADS["dataframe_split"]
        )

        assert response.status_code == 400
        assert "has no active servable" in response.json()["message"]


class TestAuth:
    async def test_tokens_are_checked_and_refusals_in_mlflow_form(
        self, mlflow_harness_factory: MlflowHarnessFactory, tmp_path: Path
    ) -> None:
        store = open_store(tmp_path / "secured")
        registry = TokenRegistry(store, FakeClock())
        admin = registry.create("admin", Role.ADMIN)
        scorer = registry.create("scorer", Role.SCORER)
        store.close()
        harness = await mlflow_harness_factory(
            data_dir=tmp_path / "secured", security={"auth": "required"}
        )
        client = harness.client
        as_admin = {"Authorization": f"Bearer {admin}"}
        as_scorer = {"Authorization": f"Bearer {scorer}"}
        response = await client.post("/servable", json=serve_body("v1"), headers=as_admin)
        assert response.status_code == 201, response.text
        payload = PAYLOADS["inputs as rows"]

        anonymous = await client.post(CONTRACT + "/invocations", json=payload)
        anonymous_ping = await client.get(CONTRACT + "/ping")
        forged = await client.post(
            CONTRACT + "/invocations", json=payload, headers={"Authorization": "Bearer ff_x"}
        )
        scorer_ping = await client.get(CONTRACT + "/ping", headers=as_scorer)
        scorer_scores = await client.post(
            CONTRACT + "/invocations", json=payload, headers=as_scorer
        )

        assert anonymous.status_code == anonymous_ping.status_code == forged.status_code == 401
        assert anonymous.json()["error_code"] == "UNAUTHENTICATED"
        assert anonymous.headers["www-authenticate"] == "Bearer"
        assert scorer_ping.status_code == scorer_scores.status_code == 200
