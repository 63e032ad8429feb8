"""What clients of the original ForestFlow send, over the BASIC REST API (issue 11, scope 6):
enum numbers and int64 strings as its protobuf JSON renders them, an `MLmodel` file as an
MLFlowServeRequest's `path`, its `s3::` form (malformed ones are a 400 naming `path`), and
the warning of a deploy that relies on PerformanceBasedValidity, which the original
treated as always valid."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.integration.api.conftest import Harness
from tests.payloads import (
    FIXTURES,
    POWERPLANT_ROWS,
    contract_json,
    fqrv_json,
    prediction_values,
    score_body,
    serve_body,
)

BASE = "/samples/energy_output/0"
MLFLOW_ONNX = FIXTURES / "mlflow" / "onnx" / "gbr_powerplant_onnx"
MOJO = FIXTURES / "h2o" / "gbm_powerplant_regression"


class TestProtobufJson:
    async def test_a_deploy_with_enum_numbers_and_int64_strings(self, harness: Harness) -> None:
        contract = {
            "expirationPolicy": {
                "KeepTopRanked": {"servablesToKeep": "2", "metricToEvaluate": "mae", "ordering": 2}
            },
            "router": {"LatestPhaseInPctBasedRouter": {}},
        }
        created = await harness.client.post("/contract" + BASE, json=contract)
        assert created.status_code == 201, created.text
        body = serve_body("v1", phase_in={"LinearTimeBasedPhaseIn": {"phaseInOverSecs": "60"}})
        body["fqrv"]["contract"]["contract_number"] = "0"
        body["servableSettings"]["loggingSettings"] = {"logLevel": 2, "keyFeatures": ["reqid"]}
        deployed = await harness.client.post("/servable", json=body)
        assert deployed.status_code == 201, deployed.text
        assert deployed.json() == {"ServableCreatedSuccessfully": {"fqrv": fqrv_json("v1")}}

        settings = (await harness.client.get(BASE + "/v1/settings")).json()["ServableSettings"]
        assert settings["loggingSettings"]["logLevel"] == "FULL"
        phase_in = settings["policySettings"]["phaseInPolicy"]
        assert phase_in == {"LinearTimeBasedPhaseIn": {"phaseInOverSecs": 60}}
        answer = (await harness.client.get(BASE + "/contract-settings")).json()
        expiration = answer["ContractSettings"]["expirationPolicy"]["KeepTopRanked"]
        assert (expiration["servablesToKeep"], expiration["ordering"]) == (2, "ASC")

    async def test_a_logging_update_by_number(self, harness: Harness) -> None:
        assert (await harness.client.post("/servable", json=serve_body("v1"))).status_code == 201
        updated = await harness.client.put(BASE + "/v1/logging-settings", json={"logLevel": 1})
        assert updated.status_code == 200, updated.text
        settings = (await harness.client.get(BASE + "/v1/settings")).json()["ServableSettings"]
        assert settings["loggingSettings"]["logLevel"] == "NONE"

    async def test_an_enum_number_the_original_did_not_have(self, harness: Harness) -> None:
        body = serve_body("v1")
        body["servableSettings"]["loggingSettings"] = {"logLevel": 4}
        refused = await harness.client.post("/servable", json=body)
        assert refused.status_code == 422
        (error,) = refused.json().values()
        assert error["field"] == "servableSettings.loggingSettings.logLevel"
        assert (
            "expected one of NONE, FULL, SAMPLE (or their numbers 1, 2, 3)"
            in (error["errorMessage"])
        )

    async def test_scoring_with_type_numbers_and_int64_strings(self, harness: Harness) -> None:
        assert (await harness.client.post("/servable", json=serve_body("v1"))).status_code == 201
        rows = [[15, 42, 1024, 73], [25, 63, 1020, 59]]
        as_numbers = await harness.client.post(
            BASE + "/score", json=score_body(rows, None, "Int64")
        )
        assert as_numbers.status_code == 200, as_numbers.text
        as_protobuf = score_body([[str(v) for v in row] for row in rows], None, "Int64")
        as_protobuf["schema"][0]["type"] = 7  # Tensor.proto: Int64 = 7
        scored = await harness.client.post(BASE + "/score", json=as_protobuf)
        assert scored.status_code == 200, scored.text
        assert prediction_values(scored.json()) == prediction_values(as_numbers.json())

    async def test_a_type_number_out_of_range(self, harness: Harness) -> None:
        assert (await harness.client.post("/servable", json=serve_body("v1"))).status_code == 201
        body = score_body(POWERPLANT_ROWS)
        body["schema"][0]["type"] = 11
        refused = await harness.client.post(BASE + "/score", json=body)
        assert refused.status_code == 422
        (error,) = refused.json().values()
        assert error["field"] == "schema[0].type"
        assert "(or their numbers 1 to 10)" in error["errorMessage"]


def mlflow_request(path: str) -> dict[str, Any]:
    """An MLFlowServeRequest (no flavor) for the power-plant contract."""
    return {"path": path, "fqrv": serve_body("v1")["fqrv"]}


class TestMLmodelFileAsPath:
    @pytest.mark.parametrize("form", ["file URL", "plain path"])
    async def test_the_directory_of_the_file_is_deployed(self, harness: Harness, form: str) -> None:
        mlmodel = MLFLOW_ONNX / "MLmodel"
        path = mlmodel.as_uri() if form == "file URL" else str(mlmodel)
        deployed = await harness.client.post("/servable", json=mlflow_request(path))
        assert deployed.status_code == 201, deployed.text
        scored = await harness.client.post(
            BASE + "/score", json=score_body([[30.22, 80.31, 1014.66, 72.2]])
        )
        assert scored.status_code == 200, scored.text
        ((value,),) = prediction_values(scored.json())
        assert value == pytest.approx(431.7623596191406, rel=1e-6)

    async def test_the_original_s_h2o_mojo_flavor(self, harness: Harness, tmp_path: Path) -> None:
        # the layout the original read: MLmodel's h2o_mojo names `data`, whose h2o.yaml
        # names the MOJO (as mlflow.h2o lays out its own model)
        model = tmp_path / "model"
        data = model / "model.h2o"
        data.mkdir(parents=True)
        shutil.copy(MOJO / "gbm_powerplant_regression.zip", data)
        (data / "h2o.yaml").write_text(
            "full_file: model.h2o/gbm_powerplant_regression.zip\n"
            "model_dir: model.h2o\nmodel_file: gbm_powerplant_regression.zip\n"
        )
        (model / "MLmodel").write_text(
            "flavors:\n  h2o_mojo:\n    data: model.h2o\n    h2o_version: 3.46.0.11\n"
        )
        deploy = mlflow_request((model / "MLmodel").as_uri())
        deployed = await harness.client.post("/servable", json=deploy)
        assert deployed.status_code == 201, deployed.text
        reference = json.loads((MOJO / "expected.json").read_text())
        body = score_body(reference["rows"][:2], reference["features"])
        scored = await harness.client.post(BASE + "/score", json=body)
        assert scored.status_code == 200, scored.text
        values = [row[0] for row in prediction_values(scored.json())]
        assert values == pytest.approx(reference["predictions"][:2], rel=1e-6)

    async def test_a_missing_mlmodel_file_names_path(self, harness: Harness) -> None:
        missing = (FIXTURES / "h2o" / "gbm_powerplant_regression" / "MLmodel").as_uri()
        refused = await harness.client.post("/servable", json=mlflow_request(missing))
        assert refused.status_code == 422
        (error,) = refused.json().values()
        assert error["field"] == "path"
        assert "no MLmodel file at the root of the artifact" in error["errorMessage"]


class TestTheOriginalsS3Form:
    @pytest.mark.parametrize(
        ("path", "reason"),
        [
            ("s3::http://127.0.0.1:9/models", "bucket=<bucket> is missing"),
            ("s3::http://127.0.0.1:9/models bucket=Models", "is not an S3 bucket name"),
            ("s3::ftp://127.0.0.1:9/models bucket=models", "an http:// or https:// URL"),
        ],
    )
    async def test_a_malformed_form_is_a_400_naming_path(
        self, harness: Harness, path: str, reason: str
    ) -> None:
        refused = await harness.client.post("/servable", json=serve_body("v1", path=path))
        assert refused.status_code == 400, refused.text
        error = refused.json()["MalformedRequestError"]
        assert (error["field"], error["StatusCode"]) == ("path", 400)
        assert reason in error["errorMessage"]
        assert (
            "s3::http(s)://host[:port][/bucket][/prefix] bucket=<bucket>" in (error["errorMessage"])
        )
        contracts = (await harness.client.get("/contracts/list")).json()
        assert contracts == {"Contracts": {"contracts": []}}


PERFORMANCE = {"PerformanceBasedValidity": {"minThreshold": 5, "metric": "mae", "ordering": "ASC"}}


class TestPerformanceBasedValidityWarning:
    async def test_the_deploy_answers_and_logs_the_warning(
        self, harness: Harness, caplog: pytest.LogCaptureFixture
    ) -> None:
        body = serve_body("v1", validity=[PERFORMANCE], log_level="NONE")
        with caplog.at_level(logging.WARNING, logger="forestflow.control.plane"):
            deployed = await harness.client.post("/servable", json=body)
        assert deployed.status_code == 201, deployed.text
        (warning,) = deployed.json()["ServableCreatedSuccessfully"]["warnings"]
        assert warning == (
            "samples.energy_output.0.v1 uses PerformanceBasedValidity: it takes no traffic until "
            "its mae metric is reported and meets the threshold, and while no servable of "
            "contract samples.energy_output.0 is valid, scoring the contract answers "
            "NoActiveServablesForContract (422). The metric can only come from an evaluator "
            "(PUT /samples/energy_output/0/v1/metrics): feedback "
            "(POST /samples/energy_output/0/feedback) cannot join its predictions, which are "
            "not logged with keyFeatures. The original ForestFlow treated this rule as always "
            "valid (docs/migrating.md)."
        )
        assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [warning]
        await harness.tick()
        scored = await harness.client.post(BASE + "/score", json=score_body())
        assert scored.status_code == 422
        assert "NoActiveServablesForContract" in scored.json()

    async def test_feedback_is_named_when_predictions_are_keyed(self, harness: Harness) -> None:
        body = serve_body("v1", validity=[PERFORMANCE])
        body["servableSettings"]["loggingSettings"]["keyFeatures"] = ["reqid"]
        deployed = await harness.client.post("/servable", json=body)
        (warning,) = deployed.json()["ServableCreatedSuccessfully"]["warnings"]
        assert "The metric comes from feedback (POST /samples/energy_output/0/feedback) or " in (
            warning
        )

    @pytest.mark.parametrize("other", [{"ImmediatelyValid": {}}, {"NeverValid": {}}])
    async def test_no_warning_when_another_rule_decides(
        self, harness: Harness, other: dict[str, Any]
    ) -> None:
        body = serve_body("v1", validity=[PERFORMANCE, other])
        deployed = await harness.client.post("/servable", json=body)
        assert deployed.json() == {"ServableCreatedSuccessfully": {"fqrv": fqrv_json("v1")}}
        assert (await harness.client.get("/contracts/list")).json() == {
            "Contracts": {"contracts": [contract_json()]}
        }
