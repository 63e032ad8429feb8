"""GraphPipe in process (issue 10, scope 4): flatbuffers requests built from the published
schema score as the BASIC API does for the same rows, metadata describes the serving
release, and a body that is not a `Request` is a clear 400 — never a 500."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import flatbuffers
import numpy as np
import pytest

from forestflow.api.graphpipe._generated import (
    InferRequest,
    InferResponse,
    MetadataRequest,
    MetadataResponse,
    Request,
    Tensor,
)
from forestflow.api.graphpipe._generated.Req import Req
from forestflow.api.graphpipe._generated.Type import Type
from forestflow.control.tokens import TokenRegistry
from forestflow.domain.roles import Role
from forestflow.store.sqlite import open_store
from forestflow.testing import FakeClock
from tests.integration.graphpipe.conftest import GraphPipeHarness, GraphPipeHarnessFactory
from tests.payloads import FIXTURES, POWERPLANT_FEATURES, POWERPLANT_ROWS, score_body, serve_body

POWERPLANT = "/samples/energy_output/0"
CHURN = "/samples/churn/0"
CHURN_MODEL = FIXTURES / "onnx" / "churn_pipeline_named_inputs"
CHURN_EXPECTED = json.loads((CHURN_MODEL / "expected.json").read_text())
CHURN_FEATURES: list[str] = CHURN_EXPECTED["features"]
CHURN_ROWS: list[list[Any]] = CHURN_EXPECTED["rows"][:5]
ONNX_ONLY = {"ONNX": {"modelPath": "model.onnx"}}


# --- requests, built with flatbuffers from graphpipe.fbs ---------------------------------


@dataclass
class Tensorish:
    """A tensor to send: numbers as a numpy array (its dtype picks the type), or strings."""

    values: np.ndarray[Any, Any]
    type: int = -1

    def kind(self) -> int:
        if self.type >= 0:
            return self.type
        if self.values.dtype == object:
            return Type.String
        return {
            "float64": Type.Float64,
            "float32": Type.Float32,
            "int64": Type.Int64,
            "int32": Type.Int32,
        }[self.values.dtype.name]


@dataclass
class Infer:
    tensors: Sequence[Tensorish]
    input_names: Sequence[str] = ()
    output_names: Sequence[str] = ()
    config: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _strings(builder: flatbuffers.Builder, start: Any, values: Sequence[str | bytes]) -> int:
    offsets = [builder.CreateString(value) for value in values]
    start(builder, len(offsets))
    for offset in reversed(offsets):
        builder.PrependUOffsetTRelative(offset)
    return int(builder.EndVector())


def _tensor(builder: flatbuffers.Builder, tensor: Tensorish) -> int:
    values = tensor.values
    shape = builder.CreateNumpyVector(np.asarray(values.shape, dtype="<i8"))
    strings = data = None
    if tensor.kind() == Type.String:
        strings = _strings(builder, Tensor.StartStringValVector, list(values.ravel()))
    else:
        raw = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<")).tobytes()
        data = builder.CreateByteVector(raw)
    Tensor.Start(builder)
    Tensor.AddType(builder, tensor.kind())
    Tensor.AddShape(builder, shape)
    if strings is not None:
        Tensor.AddStringVal(builder, strings)
    if data is not None:
        Tensor.AddData(builder, data)
    return int(Tensor.End(builder))


def infer_request(request: Infer) -> bytes:
    """A `Request` holding an `InferRequest`."""
    builder = flatbuffers.Builder(1024)
    tensors = [_tensor(builder, t) for t in request.tensors]
    InferRequest.StartInputTensorsVector(builder, len(tensors))
    for offset in reversed(tensors):
        builder.PrependUOffsetTRelative(offset)
    tensors_vector = builder.EndVector()
    inputs = _strings(builder, InferRequest.StartInputNamesVector, request.input_names)
    outputs = _strings(builder, InferRequest.StartOutputNamesVector, request.output_names)
    config = None if request.config is None else builder.CreateString(request.config)
    InferRequest.Start(builder)
    if config is not None:
        InferRequest.AddConfig(builder, config)
    InferRequest.AddInputNames(builder, inputs)
    InferRequest.AddInputTensors(builder, tensors_vector)
    InferRequest.AddOutputNames(builder, outputs)
    return _finish(builder, Req.InferRequest, InferRequest.End(builder))


def metadata_request() -> bytes:
    """A `Request` holding a `MetadataRequest`."""
    builder = flatbuffers.Builder(64)
    MetadataRequest.Start(builder)
    return _finish(builder, Req.MetadataRequest, MetadataRequest.End(builder))


def _finish(builder: flatbuffers.Builder, kind: int, message: int) -> bytes:
    Request.Start(builder)
    Request.AddReqType(builder, kind)
    Request.AddReq(builder, message)
    builder.Finish(Request.End(builder))
    return bytes(builder.Output())


# --- responses, read with the generated classes ------------------------------------------

NUMPY = {
    Type.Uint8: "<u1",
    Type.Int32: "<i4",
    Type.Int64: "<i8",
    Type.Float32: "<f4",
    Type.Float64: "<f8",
}


def outputs_of(body: bytes) -> list[np.ndarray[Any, Any]]:
    """The output tensors of an `InferResponse` without errors, as arrays of their shape."""
    response = InferResponse.InferResponse.GetRootAs(body, 0)
    assert response.ErrorsLength() == 0
    arrays = []
    for i in range(response.OutputTensorsLength()):
        tensor = response.OutputTensors(i)
        shape = tuple(tensor.ShapeAsNumpy().tolist())
        if tensor.Type() == Type.String:
            values = [tensor.StringVal(j).decode() for j in range(tensor.StringValLength())]
            arrays.append(np.array(values, dtype=object).reshape(shape))
        else:
            raw = tensor.DataAsNumpy().tobytes()
            arrays.append(np.frombuffer(raw, dtype=NUMPY[tensor.Type()]).reshape(shape))
    return arrays


def error_of(body: bytes) -> tuple[int, str]:
    """The one `Error` of an `InferResponse` that reports one."""
    response = InferResponse.InferResponse.GetRootAs(body, 0)
    assert response.OutputTensorsLength() == 0
    assert response.ErrorsLength() == 1
    error = response.Errors(0)
    return int(error.Code()), error.Message().decode()


async def post(harness: GraphPipeHarness, path: str, body: bytes, **headers: str) -> Any:
    return await harness.client.post(path + "/gp", content=body, headers=headers)


async def infer(harness: GraphPipeHarness, path: str, request: Infer) -> list[np.ndarray]:
    response = await post(harness, path, infer_request(request))
    assert response.status_code == 200, error_of(response.content)
    assert response.headers["content-type"] == "application/octet-stream"
    return outputs_of(response.content)


async def basic_columns(harness: GraphPipeHarness, path: str, body: dict) -> dict[str, list]:
    """The BASIC API's prediction for `body`, column by column."""
    response = await harness.client.post(path + "/score", json=body)
    assert response.status_code == 200, response.text
    prediction = response.json()["Prediction"]
    columns: dict[str, list[Any]] = {}
    for datum in prediction["datum"]:
        for group, tensor in zip(prediction["schema"], datum["tensors"], strict=True):
            (values,) = tensor.values()
            for name, value in zip(group["fields"], values["data"], strict=True):
                columns.setdefault(name, []).append(value)
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
                    {"Int64": {"data": [row[0]]}},
                    {"Float32": {"data": [row[1]]}},
                    {"String": {"data": [row[2], row[3]]}},
                ]
            }
            for row in rows
        ],
    }


def churn_tensors(rows: list[list[Any]]) -> list[Tensorish]:
    return [
        Tensorish(np.array([row[0] for row in rows], dtype=np.int64)),
        Tensorish(np.array([row[1] for row in rows], dtype=np.float32)),
        Tensorish(np.array([row[2] for row in rows], dtype=object)),
        Tensorish(np.array([row[3] for row in rows], dtype=object)),
    ]


@pytest.fixture
async def harness(graphpipe_harness_factory: GraphPipeHarnessFactory) -> GraphPipeHarness:
    """Power plant v1 (a regression) and a churn classifier (string labels)."""
    made = await graphpipe_harness_factory()
    for body in (
        serve_body("v1"),
        serve_body("v1", project="churn", path=CHURN_MODEL, flavor=ONNX_ONLY),
    ):
        response = await made.client.post("/servable", json=body)
        assert response.status_code == 201, response.text
    return made


class TestInference:
    async def test_a_2d_tensor_scores_as_the_basic_api(self, harness: GraphPipeHarness) -> None:
        expected = await basic_columns(harness, POWERPLANT, score_body())
        matrix = Tensorish(np.array(POWERPLANT_ROWS, dtype=np.float64))
        (prediction,) = await infer(harness, POWERPLANT, Infer([matrix]))
        (values,) = expected.values()
        assert prediction.shape == (len(POWERPLANT_ROWS),)
        np.testing.assert_allclose(prediction, values, rtol=1e-6)

    async def test_one_named_tensor_per_feature(self, harness: GraphPipeHarness) -> None:
        expected = await basic_columns(harness, POWERPLANT, score_body())
        columns = np.array(POWERPLANT_ROWS, dtype=np.float32).T
        request = Infer([Tensorish(c) for c in columns], input_names=POWERPLANT_FEATURES)
        (prediction,) = await infer(harness, POWERPLANT, request)
        np.testing.assert_allclose(prediction, next(iter(expected.values())), rtol=1e-6)

    async def test_the_classifier_answers_string_labels_as_the_basic_api(
        self, harness: GraphPipeHarness
    ) -> None:
        expected = await basic_columns(harness, CHURN, churn_basic_body(CHURN_ROWS))
        named = Infer(churn_tensors(CHURN_ROWS), input_names=CHURN_FEATURES)
        unnamed = Infer(churn_tensors(CHURN_ROWS))  # the model's inputs, in its order
        for request in (named, unnamed):
            outputs = await infer(harness, CHURN, request)
            assert len(outputs) == len(expected)
            for output, (name, values) in zip(outputs, expected.items(), strict=True):
                if output.dtype == object:
                    assert list(output) == values, name
                else:
                    np.testing.assert_allclose(output, values, rtol=1e-6, err_msg=name)
        labels = [label for label in expected.values() if isinstance(label[0], str)]
        assert labels == [CHURN_EXPECTED["predictions"][: len(CHURN_ROWS)]]

    async def test_output_names_select_and_order_the_outputs(
        self, harness: GraphPipeHarness
    ) -> None:
        expected = await basic_columns(harness, CHURN, churn_basic_body(CHURN_ROWS))
        names = list(expected)[::-1]
        request = Infer(churn_tensors(CHURN_ROWS), CHURN_FEATURES, output_names=names)
        outputs = await infer(harness, CHURN, request)
        for output, name in zip(outputs, names, strict=True):
            if output.dtype == object:
                assert list(output) == expected[name]
            else:
                np.testing.assert_allclose(output, expected[name], rtol=1e-6)

    async def test_a_release_answers_directly_and_is_named(self, harness: GraphPipeHarness) -> None:
        body = infer_request(Infer([Tensorish(np.array(POWERPLANT_ROWS))]))
        routed = await post(harness, POWERPLANT, body)
        direct = await post(harness, POWERPLANT + "/v1", body)
        for response in (routed, direct):
            assert response.status_code == 200
            assert response.headers["x-forestflow-servable"] == "samples.energy_output.0.v1"
        np.testing.assert_array_equal(outputs_of(routed.content), outputs_of(direct.content))
        (stats,) = (await harness.client.get(POWERPLANT + "/stats")).json()
        assert stats["ServableMetrics"]["scoreCount"] == 1  # the direct one is not counted

    async def test_config_reaches_the_prediction_log(self, harness: GraphPipeHarness) -> None:
        matrix = [Tensorish(np.array(POWERPLANT_ROWS))]
        harness.sink.events.clear()
        await infer(harness, POWERPLANT, Infer(matrix, config='{"gameid": "g-1", "n": 3}'))
        await infer(harness, POWERPLANT, Infer(matrix, config="plain text"))
        first, second = harness.sink.events
        assert dict(first.request.configs) == {"gameid": "g-1", "n": "3"}
        assert dict(second.request.configs) == {"config": "plain text"}


class TestMetadata:
    async def test_metadata_describes_the_release_that_serves(
        self, harness: GraphPipeHarness
    ) -> None:
        for path in (CHURN, CHURN + "/v1"):
            response = await post(harness, path, metadata_request())
            assert response.status_code == 200
            assert response.headers["x-forestflow-servable"] == "samples.churn.0.v1"
            metadata = MetadataResponse.MetadataResponse.GetRootAs(response.content, 0)
            assert metadata.Name() == b"samples.churn.0"
            assert metadata.Version() == b"v1"
            assert metadata.Server() == b"ForestFlow"
            inputs = [metadata.Inputs(i) for i in range(metadata.InputsLength())]
            assert [i.Name().decode() for i in inputs] == CHURN_FEATURES
            assert [i.Type() for i in inputs] == [
                Type.Int64,
                Type.Float32,
                Type.String,
                Type.String,
            ]
            assert all(i.ShapeAsNumpy().tolist() == [-1] for i in inputs)
            assert metadata.OutputsLength() >= 1
            assert b"tenure_months" in metadata.Description()

    async def test_numeric_inputs_offer_the_2d_layout(self, harness: GraphPipeHarness) -> None:
        response = await post(harness, POWERPLANT, metadata_request())
        metadata = MetadataResponse.MetadataResponse.GetRootAs(response.content, 0)
        assert b"[rows, 4]" in metadata.Description()
        names = [metadata.Inputs(i).Name().decode() for i in range(metadata.InputsLength())]
        assert names == POWERPLANT_FEATURES


class TestErrors:
    async def test_unknown_contract_and_release_are_404(self, harness: GraphPipeHarness) -> None:
        for path in ("/samples/nothing/0", POWERPLANT + "/v9"):
            for body in (metadata_request(), infer_request(Infer([Tensorish(np.ones((1, 4)))]))):
                response = await post(harness, path, body)
                assert response.status_code == 404
                code, message = error_of(response.content)
                assert code == 404
                assert "nothing" in message or "v9" in message

    @pytest.mark.parametrize(
        "body",
        [b"", b"\x00", b"not a flatbuffer at all", b"\xff" * 64, b"\x04\x00\x00\x00" * 3],
    )
    async def test_garbage_is_a_clear_400(self, harness: GraphPipeHarness, body: bytes) -> None:
        response = await post(harness, POWERPLANT, body)
        assert response.status_code == 400
        code, message = error_of(response.content)
        assert code == 400
        assert "GraphPipe Request" in message

    async def test_truncated_and_corrupted_requests_never_fail_the_server(
        self, harness: GraphPipeHarness
    ) -> None:
        valid = infer_request(
            Infer(churn_tensors(CHURN_ROWS[:2]), CHURN_FEATURES, config='{"k": "v"}')
        )
        rng = random.Random(10)
        bodies = [valid[:cut] for cut in range(0, len(valid), 7)]
        for _ in range(150):
            corrupted = bytearray(valid)
            for _ in range(rng.randint(1, 4)):
                corrupted[rng.randrange(len(corrupted))] = rng.randrange(256)
            bodies.append(bytes(corrupted))
        statuses = set()
        for body in bodies:
            response = await post(harness, CHURN, body)
            statuses.add(response.status_code)
            assert response.status_code < 500, body
            if response.status_code != 200:
                code, _ = error_of(response.content)
                assert code == response.status_code
        assert 400 in statuses

    async def test_data_that_does_not_fill_the_shape_is_400(
        self, harness: GraphPipeHarness
    ) -> None:
        body = infer_request(Infer([Tensorish(np.ones((7, 4)))]))  # sent as [7, 4]…
        sent, claimed = (np.asarray(dims, dtype="<i8").tobytes() for dims in ([7, 4], [8, 4]))
        response = await post(harness, POWERPLANT, body.replace(sent, claimed))  # …said [8, 4]
        assert response.status_code == 400
        assert "not the 32 element(s)" in error_of(response.content)[1]

    async def test_tensors_the_model_cannot_take_are_422(self, harness: GraphPipeHarness) -> None:
        cases = {
            "three unnamed": Infer([Tensorish(np.ones(2))] * 3),
            "wrong width": Infer([Tensorish(np.ones((2, 3)))]),
            "unknown output": Infer([Tensorish(np.ones((2, 4)))], output_names=["nope"]),
        }
        for case, request in cases.items():
            response = await post(harness, POWERPLANT, infer_request(request))
            assert response.status_code == 422, case
            code, message = error_of(response.content)
            assert code == 422
            assert ("input_tensors" in message) or ("output_names" in message), message

    async def test_names_must_match_the_tensors(self, harness: GraphPipeHarness) -> None:
        request = Infer([Tensorish(np.ones((1, 4)))], input_names=["a", "b"])
        response = await post(harness, POWERPLANT, infer_request(request))
        assert response.status_code == 400
        assert error_of(response.content)[1].startswith("input_names:")

    async def test_a_json_body_is_415(self, harness: GraphPipeHarness) -> None:
        response = await harness.client.post(POWERPLANT + "/gp", json=score_body())
        assert response.status_code == 415
        assert error_of(response.content)[0] == 415

    async def test_a_body_over_the_limit_is_413(
        self, graphpipe_harness_factory: GraphPipeHarnessFactory
    ) -> None:
        small = await graphpipe_harness_factory(server={"max_request_bytes": 1024})
        big = infer_request(Infer([Tensorish(np.ones((200, 4)))]))
        response = await post(small, POWERPLANT, big)
        assert response.status_code == 413
        assert error_of(response.content)[0] == 413


class TestPermissions:
    async def test_scoring_needs_a_token(
        self, graphpipe_harness_factory: GraphPipeHarnessFactory, tmp_path: Path
    ) -> None:
        store = open_store(tmp_path / "secured")
        tokens = TokenRegistry(store, FakeClock())
        tokens.create("ops", Role.ADMIN)
        scorer = tokens.create("app", Role.SCORER)
        store.close()
        harness = await graphpipe_harness_factory(
            data_dir=tmp_path / "secured", security={"auth": "required"}
        )
        anonymous = await post(harness, POWERPLANT, metadata_request())
        admitted = await post(
            harness, POWERPLANT, metadata_request(), authorization=f"Bearer {scorer}"
        )
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"] == "Bearer"
        assert error_of(anonymous.content) == (401, error_of(anonymous.content)[1])
        assert "bearer token" in error_of(anonymous.content)[1]
        assert admitted.status_code == 404  # past the check: no such contract here
