"""The Open Inference Protocol's REST routes (`/v2/...`): parse, call the catalog, format.

Errors answer in the protocol's form, `{"error": "<message>"}`, with the status of
`errors.protocol_status` — permission and readiness failures included, since this
router's route class catches them where they are raised. Health answers false with 400, as
the protocol has it ("a 4xx status code indicates false").
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import APIRouter
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from forestflow import __version__
from forestflow.api.openinference.errors import INTERNAL_MESSAGE, is_ready_now, protocol_status
from forestflow.api.openinference.models import ModelCatalog, ModelMetadata
from forestflow.api.openinference.rest_codec import infer_response, parse_infer, split_binary
from forestflow.api.rest.auth import Guard
from forestflow.api.rest.bodies import read_json
from forestflow.api.rest.endpoints import route_adder
from forestflow.api.rest.responses import JSONResponse
from forestflow.control.plane import ControlPlane
from forestflow.domain.roles import Permission
from forestflow.errors import (
    ForestFlowError,
    MalformedRequest,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from forestflow.serving.inference import InferenceService

log = logging.getLogger(__name__)

SERVER_NAME = "forestflow"
EXTENSIONS = ("binary_tensor_data",)
HEADER_LENGTH = "Inference-Header-Content-Length"
NOT_READY = 400
MODEL = "/v2/models/{model_name}"
VERSION = MODEL + "/versions/{model_version}"


def error_response(error: ForestFlowError) -> JSONResponse:
    """`{"error": message}` with the protocol's status for `error`."""
    status = protocol_status(error).http
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": error.describe()}, status_code=int(status), headers=headers)


class OpenInferenceRoute(APIRoute):
    """A route that answers its errors in the protocol's form."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """The usual handler (permission checks included), its errors caught."""
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except ForestFlowError as error:
                if protocol_status(error).http >= 500:
                    log.error("%s %s failed: %s", request.method, request.url.path, error.message)
                return error_response(error)
            except (HTTPException, RequestValidationError):
                raise
            except Exception:
                log.exception("%s %s failed unexpectedly", request.method, request.url.path)
                return JSONResponse({"error": INTERNAL_MESSAGE}, status_code=500)

        return answer


def build_openinference_router(
    control: ControlPlane,
    inference: InferenceService,
    guard: Guard,
    max_request_bytes: int,
    require_ready: Callable[[], None] = lambda: None,
) -> APIRouter:
    """The protocol's REST routes. `require_ready` raises `ServiceUnavailableError` until the
    server has recovered its state (the app's own check, as the BASIC routes use)."""
    router = APIRouter(route_class=OpenInferenceRoute)
    catalog = ModelCatalog(control, inference)
    _route = route_adder(router, guard, Permission.READ)

    async def live() -> JSONResponse:
        return JSONResponse({"live": True})

    async def server_ready() -> JSONResponse:
        is_ready = is_ready_now(require_ready)
        return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else NOT_READY)

    for path, endpoint in (("/v2/health/live", live), ("/v2/health/ready", server_ready)):
        router.add_api_route(path, endpoint, methods=["GET"], response_class=JSONResponse)

    @_route("GET", ["/v2"])
    async def server_metadata() -> JSONResponse:
        return JSONResponse(
            {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}
        )

    @_route("GET", [MODEL, VERSION])
    async def model_metadata(request: Request, model_name: str) -> JSONResponse:
        require_ready()
        metadata = catalog.metadata(model_name, _version(request))
        return JSONResponse(metadata_body(metadata))

    @_route("GET", [MODEL + "/ready", VERSION + "/ready"])
    async def model_ready(request: Request, model_name: str) -> JSONResponse:
        require_ready()
        is_ready = catalog.ready(model_name, _version(request))
        return JSONResponse(
            {"name": model_name, "ready": is_ready}, status_code=200 if is_ready else NOT_READY
        )

    @_route("POST", [MODEL + "/infer", VERSION + "/infer"], Permission.SCORE)
    async def infer(request: Request, model_name: str) -> Response:
        require_ready()
        body, binary = await _infer_body(request, max_request_bytes)
        decoded = parse_infer(body, binary)
        result = await catalog.infer(model_name, _version(request), decoded.request)
        header, blobs = infer_response(result, decoded)
        if not blobs:
            return JSONResponse(header)
        head = orjson.dumps(header, option=orjson.OPT_SERIALIZE_NUMPY)
        return Response(
            b"".join([head, *blobs]),
            media_type="application/octet-stream",
            headers={HEADER_LENGTH: str(len(head))},
        )

    return router


def _version(request: Request) -> str:
    """The model version of a `.../versions/{model_version}/...` path; "" for the model."""
    return str(request.path_params.get("model_version", ""))


def metadata_body(metadata: ModelMetadata) -> dict[str, Any]:
    """The metadata response: the protocol's fields, plus how to lay out the inputs."""
    return {
        "name": metadata.name,
        "versions": list(metadata.versions),
        "platform": metadata.platform,
        "inputs": [_tensor(t) for t in metadata.inputs],
        "outputs": [_tensor(t) for t in metadata.outputs],
        "parameters": metadata.parameters,
    }


def _tensor(tensor: Any) -> dict[str, Any]:
    return {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}


async def _infer_body(request: Request, limit: int) -> tuple[Any, bytes]:
    """The JSON header and the binary data after it (the binary tensor data extension)."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding!r} is not supported; send the body uncompressed",
            field="Content-Encoding",
        )
    header_length = request.headers.get(HEADER_LENGTH)
    if header_length is None:
        return await read_json(request, limit), b""
    declared = request.headers.get("content-type", "application/octet-stream")
    media = declared.split(";", 1)[0].strip().lower()
    if media not in ("application/octet-stream", "application/json"):
        raise UnsupportedMediaType(
            f"a body with {HEADER_LENGTH} must be application/octet-stream, got {declared!r}",
            field="Content-Type",
        )
    return split_binary(await _read_bytes(request, limit), header_length.strip())


async def _read_bytes(request: Request, limit: int) -> bytes:
    """The raw body, refused with 413 beyond `limit` bytes (checked while it streams in)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(limit)
            chunks.append(chunk)
    except ClientDisconnect:
        raise MalformedRequest("the client went away before sending the whole body") from None
    return b"".join(chunks)
