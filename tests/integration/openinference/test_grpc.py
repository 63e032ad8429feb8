"""The gRPC service in process, driven through the generated stub: what stock clients never
send (typed `contents`, every parameter kind) and the status code of every error."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import Any

import grpc
import grpc.aio
import numpy as np
import pytest
from tests.integration.openinference.conftest import OipHarness, OipHarnessFactory
from tests.payloads import FIXTURES, POWERPLANT_FEATURES, POWERPLANT_ROWS, serve_body

from forestflow.api.grpc._generated import grpc_predict_v2_pb2 as pb
from forestflow.api.grpc._generated import grpc_predict_v2_pb2_grpc as pb_grpc
from forestflow.api.grpc.interceptors import status_code
from forestflow.api.grpc.server import OpenInferenceGrpcServer
from forestflow.api.openinference.errors import protocol_status
from forestflow.api.rest.auth import Guard
from forestflow.errors import (
    AuthenticationRequired,
    ForestFlowError,
    InferenceRequestInvalidError,
    InvalidField,
    MalformedRequest,
    ModelFailedError,
    NoActiveServablesForContract,
    PayloadTooLarge,
    PermissionDenied,
    ServiceUnavailableError,
    UnknownContract,
    UnknownServable,
)

CHURN = FIXTURES / "onnx" / "churn_pipeline_named_inputs"
REGRESSION = "samples.energy_output.0"


@pytest.fixture
async def stub(oip_harness_factory: OipHarnessFactory) -> AsyncIterator[Any]:
    """A client stub to a gRPC server beside an in-process app with two models."""
    harness: OipHarness = await oip_harness_factory()
    for body in (
        serve_body("v1"),
        serve_body("v1", project="churn", path=CHURN, flavor={"ONNX": {"modelPath": "model.onnx"}}),
    ):
        assert (await harness.client.post("/servable", json=body)).status_code == 201
    app = harness.app
    server = OpenInferenceGrpcServer(app.control, app.inference, app.guard, "127.0.0.1", 0)
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield pb_grpc.GRPCInferenceServiceStub(channel)
    finally:
        await channel.close()
        await server.stop(0)


def churn_request(tenure: Any = None, **overrides: Any) -> Any:
    request = pb.ModelInferRequest(model_name="samples.churn.0", **overrides)
    if tenure is None:
        tenure = pb.ModelInferRequest.InferInputTensor(
            name="tenure_months",
            datatype="INT64",
            shape=[1],
            contents=pb.InferTensorContents(int64_contents=[48]),
        )
    request.inputs.append(tenure)
    request.inputs.add(
        name="monthly_charges",
        datatype="FP32",
        shape=[1, 1],
        contents=pb.InferTensorContents(fp32_contents=[56.55]),
    )
    request.inputs.add(
        name="contract",
        datatype="BYTES",
        shape=[1],
        contents=pb.InferTensorContents(bytes_contents=[b"one-year"]),
    )
    request.inputs.add(
        name="payment_method",
        datatype="BYTES",
        shape=[1],
        contents=pb.InferTensorContents(bytes_contents=[b"credit-card"]),
    )
    return request


def tenure(datatype: str, **contents: list[Any]) -> Any:
    return pb.ModelInferRequest.InferInputTensor(
        name="tenure_months",
        datatype=datatype,
        shape=[1],
        contents=pb.InferTensorContents(**contents),
    )


def outputs(response: Any) -> dict[str, Any]:
    return {
        output.name: (output.datatype, raw)
        for output, raw in zip(response.outputs, response.raw_output_contents, strict=True)
    }


class TestTypedContents:
    @pytest.mark.parametrize(
        ("datatype", "contents"),
        [
            ("INT8", {"int_contents": [48]}),
            ("INT16", {"int_contents": [48]}),
            ("INT32", {"int_contents": [48]}),
            ("INT64", {"int64_contents": [48]}),
            ("UINT8", {"uint_contents": [48]}),
            ("UINT32", {"uint_contents": [48]}),
            ("UINT64", {"uint64_contents": [48]}),
            ("FP32", {"fp32_contents": [48.0]}),
            ("FP64", {"fp64_contents": [48.0]}),
        ],
    )
    async def test_every_contents_field_reaches_the_model(
        self, stub: Any, datatype: str, contents: dict[str, list[Any]]
    ) -> None:
        response = await stub.ModelInfer(churn_request(tenure(datatype, **contents), id="r7"))

        assert (response.model_name, response.model_version, response.id) == (
            "samples.churn.0",
            "v1",
            "r7",
        )
        label = outputs(response)["label"]
        assert label == ("BYTES", b"\x02\x00\x00\x00no")

    async def test_fp16_comes_raw_and_parameters_of_every_kind_are_taken(self, stub: Any) -> None:
        request = pb.ModelInferRequest(model_name=REGRESSION, model_version="v1")
        request.inputs.add(name="m", datatype="FP16", shape=[2, 4])
        request.raw_input_contents.append(np.array(POWERPLANT_ROWS, dtype="<f2").tobytes())
        request.parameters["reqid"].string_param = "abc"
        request.parameters["n"].int64_param = 3
        request.parameters["flag"].bool_param = True

        response = await stub.ModelInfer(request)

        datatype, raw = outputs(response)["variable"]
        assert datatype == "FP32"
        assert len(np.frombuffer(raw, dtype="<f4")) == 2

    async def test_ready_and_metadata(self, stub: Any) -> None:
        live = await stub.ServerLive(pb.ServerLiveRequest())
        ready = await stub.ModelReady(pb.ModelReadyRequest(name=REGRESSION, version="v1"))
        metadata = await stub.ModelMetadata(pb.ModelMetadataRequest(name=REGRESSION))
        server = await stub.ServerMetadata(pb.ServerMetadataRequest())

        assert (live.live, ready.ready, server.name) == (True, True, "forestflow")
        assert [t.name for t in metadata.inputs] == POWERPLANT_FEATURES
        assert list(metadata.versions) == ["v1"]


async def test_not_ready_until_the_state_is_recovered(
    oip_harness_factory: OipHarnessFactory,
) -> None:
    app = (await oip_harness_factory(start=False)).app
    server = OpenInferenceGrpcServer(
        app.control, app.inference, app.guard, "127.0.0.1", 0, require_ready=app._require_ready
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            client = pb_grpc.GRPCInferenceServiceStub(channel)
            live = await client.ServerLive(pb.ServerLiveRequest())
            before = await client.ServerReady(pb.ServerReadyRequest())
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await client.ModelInfer(churn_request())
            await app.start(periodic=False)
            after = await client.ServerReady(pb.ServerReadyRequest())
    finally:
        await server.stop(0)

    assert (live.live, before.ready, after.ready) == (True, False, True)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert refused.value.details() == "recovering state; not ready yet"


def test_a_taken_port_is_an_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = OpenInferenceGrpcServer(None, None, Guard(None), "127.0.0.1", port)  # type: ignore[arg-type]
        with pytest.raises(OSError, match=f"cannot listen for gRPC on 127.0.0.1:{port}"):
            asyncio.run(server.start())


BAD_REQUESTS = [
    ("int8 range", churn_request(tenure("INT8", int_contents=[300])), "out of range for INT8"),
    ("fp16 typed", churn_request(tenure("FP16", fp32_contents=[1.0])), "raw_input_contents"),
    ("count", churn_request(tenure("INT64", int64_contents=[1, 2])), "holds 1 element(s)"),
    ("datatype", churn_request(tenure("DOUBLE", fp64_contents=[1.0])), "unsupported datatype"),
    ("string", churn_request(tenure("BYTES", bytes_contents=[b"x"])), "tenure_months"),
    ("raw count", churn_request(raw_input_contents=[b"\x00" * 8]), "raw_input_contents"),
    ("unknown output", churn_request(outputs=[{"name": "nope"}]), "'nope'"),
]


class TestErrors:
    @pytest.mark.parametrize(
        ("request_", "message"),
        [case[1:] for case in BAD_REQUESTS],
        ids=[case[0] for case in BAD_REQUESTS],
    )
    async def test_bad_requests_are_invalid_arguments(
        self, stub: Any, request_: Any, message: str
    ) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.ModelInfer(request_)

        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in str(raised.value.details())
        assert (await stub.ServerReady(pb.ServerReadyRequest())).ready

    async def test_a_parameter_without_a_value_and_both_contents_and_raw(self, stub: Any) -> None:
        empty = churn_request()
        empty.parameters["k"].SetInParent()
        both = churn_request()
        both.raw_input_contents.extend([b"", b"", b"", b""])

        for request, message in ((empty, "parameters.k"), (both, "not both")):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.ModelInfer(request)
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert message in str(raised.value.details())

    async def test_unknown_models_are_not_found(self, stub: Any) -> None:
        for call in (
            stub.ModelReady(pb.ModelReadyRequest(name="samples.none.0")),
            stub.ModelMetadata(pb.ModelMetadataRequest(name=REGRESSION, version="v9")),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await call
            assert raised.value.code() == grpc.StatusCode.NOT_FOUND


ERRORS: list[tuple[ForestFlowError, HTTPStatus, grpc.StatusCode]] = [
    (MalformedRequest("x"), HTTPStatus.BAD_REQUEST, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidField("x"), HTTPStatus.BAD_REQUEST, grpc.StatusCode.INVALID_ARGUMENT),
    (InferenceRequestInvalidError("x"), HTTPStatus.BAD_REQUEST, grpc.StatusCode.INVALID_ARGUMENT),
    (AuthenticationRequired("x"), HTTPStatus.UNAUTHORIZED, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied("x"), HTTPStatus.FORBIDDEN, grpc.StatusCode.PERMISSION_DENIED),
    (UnknownContract("c"), HTTPStatus.NOT_FOUND, grpc.StatusCode.NOT_FOUND),
    (UnknownServable("f"), HTTPStatus.NOT_FOUND, grpc.StatusCode.NOT_FOUND),
    (PayloadTooLarge(1), HTTPStatus.REQUEST_ENTITY_TOO_LARGE, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (
        NoActiveServablesForContract("c"),
        HTTPStatus.BAD_REQUEST,
        grpc.StatusCode.FAILED_PRECONDITION,
    ),
    (ServiceUnavailableError("x"), HTTPStatus.SERVICE_UNAVAILABLE, grpc.StatusCode.UNAVAILABLE),
    (ModelFailedError("x"), HTTPStatus.INTERNAL_SERVER_ERROR, grpc.StatusCode.INTERNAL),
]


@pytest.mark.parametrize(
    ("error", "status", "code"), ERRORS, ids=[type(e[0]).__name__ for e in ERRORS]
)
def test_rest_and_grpc_report_an_error_alike(
    error: ForestFlowError, status: HTTPStatus, code: grpc.StatusCode
) -> None:
    assert protocol_status(error).http == status
    assert status_code(error) == code


def test_every_error_has_a_grpc_code() -> None:
    for kind in _subclasses(ForestFlowError):
        error = kind.__new__(kind)
        ForestFlowError.__init__(error, "x")
        assert status_code(error) is not grpc.StatusCode.UNKNOWN, kind


def _subclasses(kind: type[ForestFlowError]) -> list[type[ForestFlowError]]:
    direct = kind.__subclasses__()
    return [kind, *(sub for child in direct for sub in _subclasses(child))]
