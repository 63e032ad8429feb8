"""The protocol's REST routes in process: layouts, datatypes, the binary extension, the
prediction log, and every error in the protocol's own form."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from tests.integration.openinference.conftest import OipHarness, OipHarnessFactory
from tests.payloads import (
    FIXTURES,
    POWERPLANT_FEATURES,
    POWERPLANT_ROWS,
    prediction_values,
    score_body,
    serve_body,
)

from forestflow.api.openinference.rest import infer_target
from forestflow.control.tokens import TokenRegistry
from forestflow.domain.roles import Role
from forestflow.store.sqlite import open_store
from forestflow.testing import FakeClock

MODEL = "/v2/models/samples.energy_output.0"
CHURN_MODEL = "/v2/models/samples.churn.0"
CHURN = FIXTURES / "onnx" / "churn_pipeline_named_inputs"
CHURN_ROW = [48, 56.55, "one-year", "credit-card"]
ONNX_ONLY = {"ONNX": {"modelPath": "model.onnx"}}


def tensor(name: str, datatype: str, data: list[Any], shape: list[int] | None = None) -> dict:
    return {"name": name, "datatype": datatype, "shape": shape or [len(data)], "data": data}


def features(rows: list[list[Any]] = POWERPLANT_ROWS, datatype: str = "FP64") -> list[dict]:
    return [
        tensor(name, datatype, [row[j] for row in rows])
        for j, name in enumerate(POWERPLANT_FEATURES)
    ]


def churn_inputs(row: list[Any] = CHURN_ROW, tenure: str = "INT64") -> list[dict]:
    return [
        tensor("tenure_months", tenure, [row[0]]),
        tensor("monthly_charges", "FP32", [row[1]]),
        tensor("contract", "BYTES", [row[2]]),
        tensor("payment_method", "BYTES", [row[3]]),
    ]


async def deploy(harness: OipHarness, *bodies: dict[str, Any]) -> None:
    for body in bodies:
        response = await harness.client.post("/servable", json=body)
        assert response.status_code == 201, response.text


@pytest.fixture
async def harness(oip_harness_factory: OipHarnessFactory) -> OipHarness:
    """Power plant v1 (serving) and a churn classifier."""
    made = await oip_harness_factory()
    await deploy(
        made,
        serve_body("v1"),
        serve_body("v1", project="churn", path=CHURN, flavor=ONNX_ONLY),
    )
    return made


async def infer(harness: OipHarness, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await harness.client.post(path + "/infer", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def fp32(values: list[float]) -> list[float]:
    """FP32 JSON data as the float32 values it denotes (what a client reads)."""
    return np.array(values, dtype=np.float32).tolist()  # type: ignore[no-any-return]


def outputs(answer: dict[str, Any]) -> dict[str, list[Any]]:
    return {output["name"]: output["data"] for output in answer["outputs"]}


class TestHealth:
    async def test_live_at_once_ready_and_answering_only_once_recovered(
        self, oip_harness_factory: OipHarnessFactory
    ) -> None:
        harness = await oip_harness_factory(start=False)
        client = harness.client

        assert (await client.get("/v2/health/live")).json() == {"live": True}
        not_ready = await client.get("/v2/health/ready")
        refused = await client.post(MODEL + "/infer", json={"inputs": features()})
        await harness.app.start(periodic=False)
        ready = await client.get("/v2/health/ready")

        assert (not_ready.status_code, not_ready.json()) == (400, {"ready": False})
        assert refused.status_code == 503
        assert refused.json() == {"error": "recovering state; not ready yet"}
        assert (ready.status_code, ready.json()) == (200, {"ready": True})

    async def test_model_readiness(self, harness: OipHarness) -> None:
        await deploy(harness, serve_body("v1", project="shadow", validity=[{"NeverValid": {}}]))
        client = harness.client

        assert (await client.get(MODEL + "/ready")).json() == {
            "name": "samples.energy_output.0",
            "ready": True,
        }
        assert (await client.get(MODEL + "/versions/v1/ready")).status_code == 200
        # loaded, so it scores when addressed, but the contract has no active servable
        assert (
            await client.get("/v2/models/samples.shadow.0/versions/v1/ready")
        ).status_code == 200
        unrouted = await client.get("/v2/models/samples.shadow.0/ready")
        assert (unrouted.status_code, unrouted.json()["ready"]) == (400, False)
        assert (await client.get("/v2/models/samples.none.0/ready")).status_code == 404


class TestMetadata:
    async def test_says_whether_and_how_a_2d_tensor_is_taken(self, harness: OipHarness) -> None:
        regression = (await harness.client.get(MODEL)).json()
        churn = (await harness.client.get(CHURN_MODEL + "/versions/v1")).json()

        assert regression["parameters"]["accepts_2d_tensor"] is True
        assert regression["parameters"]["tensor_2d_datatype"] == "FP32"
        assert regression["parameters"]["input_order"] == ",".join(POWERPLANT_FEATURES)
        assert regression["parameters"]["servable_fqrv"] == "samples.energy_output.0.v1"
        assert churn["parameters"]["accepts_2d_tensor"] is False
        assert churn["parameters"]["input_order"] == (
            "tenure_months,monthly_charges,contract,payment_method"
        )

    async def test_a_model_without_input_names_takes_features_by_position(
        self, harness: OipHarness
    ) -> None:
        await deploy(harness, serve_body("v1", project="bare", flavor=ONNX_ONLY))

        metadata = (await harness.client.get("/v2/models/samples.bare.0")).json()
        body = {"inputs": [tensor("x", "FP32", POWERPLANT_ROWS, [2, 4])]}
        answer = await infer(harness, "/v2/models/samples.bare.0", body)
        named = await infer(harness, MODEL, {"inputs": features()})

        assert metadata["inputs"] == []
        assert metadata["parameters"]["accepts_2d_tensor"] is True
        assert outputs(answer) == outputs(named)

    async def test_describes_the_release_with_the_largest_traffic_share(
        self, harness: OipHarness
    ) -> None:
        await deploy(harness, serve_body("v2"))

        metadata = (await harness.client.get(MODEL)).json()

        assert metadata["versions"] == ["v1", "v2"]
        assert metadata["parameters"]["servable_fqrv"] == "samples.energy_output.0.v2"


class TestInfer:
    async def test_per_feature_2d_and_nested_data_equal_the_basic_api(
        self, harness: OipHarness
    ) -> None:
        basic = await harness.client.post("/samples/energy_output/0/score", json=score_body())
        expected = [row[0] for row in prediction_values(basic.json())]

        per_feature = await infer(harness, MODEL, {"inputs": features()})
        matrix = await infer(
            harness, MODEL, {"inputs": [tensor("m", "FP32", POWERPLANT_ROWS, [2, 4])]}
        )
        flat = [v for row in POWERPLANT_ROWS for v in row]
        flat_2d = await infer(harness, MODEL, {"inputs": [tensor("m", "FP64", flat, [2, 4])]})

        for answer in (per_feature, matrix, flat_2d):
            assert answer["model_name"] == "samples.energy_output.0"
            assert answer["model_version"] == "v1"
            (output,) = answer["outputs"]
            assert (output["name"], output["datatype"], output["shape"]) == (
                "variable",
                "FP32",
                [2],
            )
            assert fp32(output["data"]) == expected

    async def test_a_model_name_follows_what_its_contract_serves(self, harness: OipHarness) -> None:
        """What a name resolves to is remembered per route: a new main release with other
        inputs, a deleted release and a deleted contract are seen at once."""
        matrix = {"inputs": [tensor("m", "FP64", POWERPLANT_ROWS, [2, 4])]}
        assert (await infer(harness, MODEL, matrix))["model_version"] == "v1"
        assert (await infer(harness, MODEL + "/versions/v1", matrix))["model_version"] == "v1"

        await deploy(harness, serve_body("v2", path=CHURN, flavor=ONNX_ONLY))
        churn = await infer(harness, MODEL, {"inputs": churn_inputs()})
        expected = await infer(harness, CHURN_MODEL, {"inputs": churn_inputs()})
        refused = await harness.client.post(MODEL + "/infer", json=matrix)
        deleted = await harness.client.delete("/samples/energy_output/0/v1")
        gone = await harness.client.post(MODEL + "/versions/v1/infer", json=matrix)
        await harness.client.delete("/samples/energy_output/0/v2")
        contract_gone = await harness.client.delete("/samples/energy_output/0")
        no_contract = await harness.client.post(MODEL + "/infer", json=matrix)

        assert churn["model_version"] == "v2"
        assert outputs(churn) == outputs(expected)
        assert refused.status_code == 400, refused.text
        # the matrix's columns are now the churn model's inputs, in its order
        assert refused.json()["error"].startswith("tenure_months: expects Int64 values")
        assert deleted.status_code == 200, deleted.text
        assert gone.status_code == 404, gone.text
        assert contract_gone.status_code == 200, contract_gone.text
        assert no_contract.status_code == 404, no_contract.text

    async def test_null_is_a_missing_value_where_the_model_takes_one(
        self, harness: OipHarness
    ) -> None:
        rows = [[None, 41.76, 1024.07, 73.17]]
        basic = await harness.client.post("/samples/energy_output/0/score", json=score_body(rows))
        answer = await infer(harness, MODEL, {"inputs": features(rows)})
        refused = await harness.client.post(
            CHURN_MODEL + "/infer", json={"inputs": churn_inputs([None, 56.55, "a", "b"])}
        )

        assert fp32(outputs(answer)["variable"]) == [v[0] for v in prediction_values(basic.json())]
        left_out = await harness.client.post(
            CHURN_MODEL + "/infer", json={"inputs": churn_inputs()[:3]}
        )

        assert refused.status_code == 400
        assert "tenure_months" in refused.json()["error"]
        assert left_out.status_code == 400
        assert "missing feature(s) 'payment_method'" in left_out.json()["error"]

    @pytest.mark.parametrize(
        "datatype",
        [
            "INT8",
            "INT16",
            "INT32",
            "INT64",
            "UINT8",
            "UINT16",
            "UINT32",
            "UINT64",
            "FP16",
            "FP32",
            "FP64",
        ],
    )
    async def test_every_numeric_datatype_reaches_an_integer_input(
        self, harness: OipHarness, datatype: str
    ) -> None:
        answer = await infer(harness, CHURN_MODEL, {"inputs": churn_inputs(tenure=datatype)})

        assert outputs(answer)["label"] == ["no"]

    async def test_a_request_id_comes_back_and_parameters_become_configs(
        self, harness: OipHarness
    ) -> None:
        logging = {"logLevel": "FULL", "keyFeatures": ["reqid", "RelativeHumidity"]}
        await harness.client.put("/samples/energy_output/0/v1/logging-settings", json=logging)
        parameters = {"reqid": "abc", "n": 3, "x": 0.5, "flag": True}
        body = {"id": "r1", "inputs": features(), "parameters": parameters}

        answer = await infer(harness, MODEL, body)

        assert answer["id"] == "r1"
        (event,) = [e for e in harness.sink.events if e.served_request]
        # as JSON text, as MLflow's params
        assert dict(event.request.configs) == {"reqid": "abc", "n": "3", "x": "0.5", "flag": "true"}
        assert event.key == "abc.73.17"

    async def test_a_routed_request_is_shadowed_a_direct_one_is_not_counted(
        self, harness: OipHarness
    ) -> None:
        await deploy(harness, serve_body("v2"))

        routed = await infer(harness, MODEL, {"inputs": features()})
        direct = await infer(harness, MODEL + "/versions/v1", {"inputs": features()})
        await harness.settle()

        assert (routed["model_version"], direct["model_version"]) == ("v2", "v1")
        served = [(str(e.fqrv), e.served_request) for e in harness.sink.events]
        assert served == [
            ("samples.energy_output.0.v2", True),
            ("samples.energy_output.0.v1", False),
        ]
        stats = (await harness.client.get("/samples/energy_output/0/stats")).json()
        counts = {
            s["ServableMetrics"]["fqrv"]["releaseVersion"]: s["ServableMetrics"] for s in stats
        }
        assert (counts["v2"]["scoreCount"], counts["v1"]["scoreCount"]) == (1, 0)
        assert counts["v1"]["shadeCount"] == 1


def raw_bytes(values: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def binary_request(inputs: list[tuple[dict[str, Any], bytes]], **extra: Any) -> tuple[bytes, str]:
    header = {"inputs": [], **extra}
    blobs = []
    for spec, blob in inputs:
        header["inputs"].append({**spec, "parameters": {"binary_data_size": len(blob)}})
        blobs.append(blob)
    head = json.dumps(header).encode()
    return head + b"".join(blobs), str(len(head))


class TestBinaryTensorData:
    async def test_binary_inputs_and_outputs(self, harness: OipHarness) -> None:
        body, length = binary_request(
            [
                (
                    {"name": "tenure_months", "datatype": "INT64", "shape": [1]},
                    np.array([48], "<i8").tobytes(),
                ),
                (
                    {"name": "monthly_charges", "datatype": "FP32", "shape": [1]},
                    np.array([56.55], "<f4").tobytes(),
                ),
                ({"name": "contract", "datatype": "BYTES", "shape": [1]}, raw_bytes([b"one-year"])),
                (
                    {"name": "payment_method", "datatype": "BYTES", "shape": [1]},
                    raw_bytes([b"credit-card"]),
                ),
            ],
            outputs=[{"name": "label", "parameters": {"binary_data": True}}, {"name": "yes"}],
        )

        response = await harness.client.post(
            CHURN_MODEL + "/infer",
            content=body,
            headers={
                "Inference-Header-Content-Length": length,
                "Content-Type": "application/octet-stream",
            },
        )

        assert response.status_code == 200, response.text
        size = int(response.headers["Inference-Header-Content-Length"])
        header = orjson.loads(response.content[:size])
        label, yes = header["outputs"]
        assert label["parameters"] == {"binary_data_size": len(raw_bytes([b"no"]))}
        assert response.content[size:] == raw_bytes([b"no"])
        assert yes["datatype"] == "FP32"
        assert math.isclose(yes["data"][0], 0.0688464641571045, rel_tol=1e-6)

    async def test_all_outputs_in_binary_when_the_request_asks(self, harness: OipHarness) -> None:
        matrix = np.array(POWERPLANT_ROWS, dtype="<f8")
        body, length = binary_request(
            [({"name": "m", "datatype": "FP64", "shape": [2, 4]}, matrix.tobytes())],
            parameters={"binary_data_output": True},
        )

        response = await harness.client.post(
            MODEL + "/infer", content=body, headers={"Inference-Header-Content-Length": length}
        )
        json_answer = await infer(harness, MODEL, {"inputs": features()})

        size = int(response.headers["Inference-Header-Content-Length"])
        values = np.frombuffer(response.content[size:], dtype="<f4").tolist()
        assert values == fp32(outputs(json_answer)["variable"])


BAD_BODIES: list[tuple[str, Any, int, str]] = [
    ("not an object", [1], 400, "expected a JSON object"),
    ("no inputs", {"inputs": []}, 400, "inputs"),
    ("unknown field", {"inputs": features(), "extra": 1}, 400, "extra"),
    ("datatype", {"inputs": [tensor("x", "FLOAT", [1.0])]}, 400, "unsupported datatype 'FLOAT'"),
    ("shape vs data", {"inputs": [tensor("x", "FP64", [1.0, 2.0], [3])]}, 400, "holds 3"),
    ("negative shape", {"inputs": [tensor("x", "FP64", [], [-1])]}, 400, "dimensions"),
    ("3-D", {"inputs": [tensor("x", "FP64", [1.0] * 8, [2, 2, 2])]}, 400, "[rows, n_features]"),
    ("2-D width", {"inputs": [tensor("x", "FP64", [1.0] * 6, [2, 3])]}, 400, "TemperatureCelcius"),
    (
        "rows disagree",
        {"inputs": [*features()[:3], tensor("RelativeHumidity", "FP64", [1.0])]},
        400,
        "row(s)",
    ),
    ("twice", {"inputs": [*features(), features()[0]]}, 400, "given twice"),
    (
        "bool as number",
        {"inputs": [tensor("x", "FP64", [True])]},
        400,
        "expected numbers, got bool",
    ),
    ("string as number", {"inputs": [tensor("x", "INT64", ["1"])]}, 400, "expected numbers"),
    ("fraction as integer", {"inputs": [tensor("x", "INT32", [1.5])]}, 400, "whole numbers"),
    ("INT8 range", {"inputs": [tensor("x", "INT8", [300])]}, 400, "out of range for INT8"),
    ("FP32 range", {"inputs": [tensor("x", "FP32", [1e40])]}, 400, "out of range for FP32"),
    ("huge integer", {"inputs": [tensor("x", "UINT64", [2**70])]}, 400, "out of range"),
    ("number as BYTES", {"inputs": [tensor("x", "BYTES", [1])]}, 400, "expected strings"),
    ("unknown output", {"inputs": features(), "outputs": [{"name": "nope"}]}, 400, "'nope'"),
    (
        "classification",
        {
            "inputs": features(),
            "outputs": [{"name": "variable", "parameters": {"classification": 2}}],
        },
        400,
        "classification extension",
    ),
    ("parameter value", {"inputs": features(), "parameters": {"k": [1]}}, 400, "parameters.k"),
    (
        "binary size past the end",
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP64",
                    "shape": [1],
                    "parameters": {"binary_data_size": 8},
                }
            ]
        },
        400,
        "binary data",
    ),
]


class TestErrors:
    @pytest.mark.parametrize(
        ("body", "status", "message"),
        [case[1:] for case in BAD_BODIES],
        ids=[case[0] for case in BAD_BODIES],
    )
    async def test_bad_bodies_are_refused_in_the_protocols_form(
        self, harness: OipHarness, body: Any, status: int, message: str
    ) -> None:
        response = await harness.client.post(MODEL + "/infer", json=body)

        assert response.status_code == status, response.text
        assert list(response.json()) == ["error"]
        assert message in response.json()["error"]

    @pytest.mark.parametrize(
        ("path", "status", "message"),
        [
            ("/v2/models/samples.nothing.0", 404, "unknown contract samples.nothing.0"),
            ("/v2/models/nothing", 400, "expected organization.project.number"),
            (MODEL + "/versions/v9", 404, "unknown servable samples.energy_output.0.v9"),
        ],
    )
    async def test_unknown_models_and_versions(
        self, harness: OipHarness, path: str, status: int, message: str
    ) -> None:
        for response in (
            await harness.client.get(path),
            await harness.client.post(path + "/infer", json={"inputs": features()}),
        ):
            assert response.status_code == status
            assert message in response.json()["error"]

    @pytest.mark.parametrize(
        ("headers", "content", "status", "message"),
        [
            ({"Content-Type": "text/plain"}, b"{}", 415, "application/json"),
            ({"Content-Encoding": "gzip"}, b"{}", 415, "Content-Encoding"),
            ({}, b"{not json", 400, "malformed JSON"),
            ({"Inference-Header-Content-Length": "99"}, b"{}", 400, "not a length"),
            (
                {"Inference-Header-Content-Length": "2", "Content-Type": "text/plain"},
                b"{}",
                415,
                "application/octet-stream",
            ),
        ],
    )
    async def test_bodies_that_are_not_the_protocols(
        self,
        harness: OipHarness,
        headers: dict[str, str],
        content: bytes,
        status: int,
        message: str,
    ) -> None:
        response = await harness.client.post(MODEL + "/infer", content=content, headers=headers)

        assert response.status_code == status
        assert message in response.json()["error"]

    async def test_left_over_binary_data_and_bytes_that_are_not_text(
        self, harness: OipHarness
    ) -> None:
        spec = {"name": "contract", "datatype": "BYTES", "shape": [1]}
        body, length = binary_request([(spec, raw_bytes([b"\xff\xfe"]))])
        head = {"Inference-Header-Content-Length": length}

        not_text = await harness.client.post(CHURN_MODEL + "/infer", content=body, headers=head)
        left_over = await harness.client.post(
            CHURN_MODEL + "/infer", content=body + b"xx", headers=head
        )

        assert not_text.status_code == 400
        assert "not UTF-8" in not_text.json()["error"]
        assert left_over.status_code == 400
        assert "belong to no input" in left_over.json()["error"]

    async def test_a_contract_without_an_active_servable_cannot_answer_yet(
        self, harness: OipHarness
    ) -> None:
        await deploy(harness, serve_body("v1", project="shadow", validity=[{"NeverValid": {}}]))

        response = await harness.client.post(
            "/v2/models/samples.shadow.0/infer", json={"inputs": features()}
        )

        assert response.status_code == 400
        assert "no active servable" in response.json()["error"]

    async def test_a_body_over_the_limit_is_refused(
        self, oip_harness_factory: OipHarnessFactory
    ) -> None:
        harness = await oip_harness_factory(server={"max_request_bytes": 1024})
        big = {"inputs": [tensor("x", "FP64", [1.0] * 500)]}

        as_json = await harness.client.post(MODEL + "/infer", json=big)
        as_binary = await harness.client.post(
            MODEL + "/infer",
            content=b"{}" + bytes(2000),
            headers={"Inference-Header-Content-Length": "2"},
        )

        assert (as_json.status_code, as_binary.status_code) == (413, 413)
        assert "limit of 1024 bytes" in as_binary.json()["error"]


class TestAuthentication:
    async def test_no_token_is_401_in_the_protocols_form_health_stays_open(
        self, oip_harness_factory: OipHarnessFactory, tmp_path: Path
    ) -> None:
        store = open_store(tmp_path / "secured")
        token = TokenRegistry(store, FakeClock()).create("ops", Role.ADMIN)
        store.close()
        harness = await oip_harness_factory(
            data_dir=tmp_path / "secured", security={"auth": "required"}
        )
        client = harness.client

        refused = await client.get(MODEL)
        admitted = await client.get("/v2", headers={"Authorization": f"Bearer {token}"})

        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"] == "Bearer"
        assert "bearer token" in refused.json()["error"]
        assert admitted.json()["name"] == "forestflow"
        assert (await client.get("/v2/health/ready")).status_code == 200


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ("/v2/models/a.b.0/infer", ("a.b.0", "")),
        ("/v2/models/a.b.0/versions/v1.2/infer", ("a.b.0", "v1.2")),
        ("/v2/models/a.b.0/ready", None),
        ("/v2/models//infer", None),
        ("/v2/models/a.b.0/releases/v1/infer", None),
        ("/v2/models/a.b.0/versions//infer", None),
        ("/a/b/0/score", None),
    ],
)
def test_infer_target_recognises_the_routes_paths(
    path: str, target: tuple[str, str] | None
) -> None:
    assert infer_target(path) == target
