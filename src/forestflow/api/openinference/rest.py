"""The Open Inference Protocol's REST routes (`/v2/...`): parse, call the catalog, format.

Errors answer in the protocol's form, `{"error": "<message>"}`, with the status of
`errors.protocol_status` — permission and readiness failures included, since this
router's route class catches them where they are raised. Health answers false with 400, as
the protocol has it ("a 4xx status code indicates false").
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from http import HTTPStatus
from types import MappingProxyType
from typing import Any

import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from forestflow import __version__
from forestflow.api.openinference import route_docs as docs
from forestflow.api.openinference.errors import is_ready_now, protocol_status
from forestflow.api.openinference.models import ModelCatalog, ModelMetadata
from forestflow.api.openinference.rest_codec import (
    RestInferRequest,
    infer_response,
    parse_infer,
    split_binary,
)
from forestflow.api.rest.auth import Guard
from forestflow.api.rest.bodies import (
    check_declared_length,
    check_json_type,
    parse_json,
    receive_body,
)
from forestflow.api.rest.endpoints import route_adder
from forestflow.api.rest.errors import INTERNAL_MESSAGE, protocol_route
from forestflow.api.rest.responses import JSONResponse
from forestflow.control.plane import ControlPlane
from forestflow.domain.roles import Permission
from forestflow.errors import ForestFlowError, UnsupportedMediaType
from forestflow.serving.inference import InferenceService

log = logging.getLogger(__name__)

SERVER_NAME = "forestflow"
EXTENSIONS = ("binary_tensor_data",)
HEADER_LENGTH = "inference-header-content-length"
"""The binary extension's header: the length of the JSON at the start of the body."""
NOT_READY = 400
MODEL = "/v2/models/{model_name}"
VERSION = MODEL + "/versions/{model_version}"


def error_response(error: ForestFlowError) -> Response:
    """`{"error": message}` with the protocol's status for `error`."""
    status, content, headers = error_answer(error)
    return Response(content, status_code=status, headers=headers)


def _internal_response() -> Response:
    return JSONResponse({"error": INTERNAL_MESSAGE}, status_code=500)


OpenInferenceRoute = protocol_route(error_response, _internal_response)
"""A route that answers its errors in the protocol's form."""


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

    open_routes = (
        ("/v2/health/live", live, docs.SERVER_LIVE),
        ("/v2/health/ready", server_ready, docs.SERVER_READY),
    )
    for path, endpoint, doc in open_routes:
        options = doc.route_options(guarded=False, auth=False, parameters=False)
        router.add_api_route(
            path,
            endpoint,
            methods=["GET"],
            response_class=JSONResponse,
            operation_id=f"server_{endpoint.__name__.removeprefix('server_')}",
            **options,
        )

    @_route("GET", ["/v2"], doc=docs.SERVER_METADATA)
    async def server_metadata() -> JSONResponse:
        return JSONResponse(
            {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}
        )

    @_route("GET", [MODEL, VERSION], doc=docs.MODEL_METADATA)
    async def model_metadata(request: Request, model_name: str) -> JSONResponse:
        require_ready()
        metadata = catalog.metadata(model_name, _version(request))
        return JSONResponse(metadata_body(metadata))

    @_route("GET", [MODEL + "/ready", VERSION + "/ready"], doc=docs.MODEL_READY)
    async def model_ready(request: Request, model_name: str) -> JSONResponse:
        require_ready()
        is_ready = catalog.ready(model_name, _version(request))
        return JSONResponse(
            {"name": model_name, "ready": is_ready}, status_code=200 if is_ready else NOT_READY
        )

    @_route("POST", [MODEL + "/infer", VERSION + "/infer"], Permission.SCORE, doc=docs.INFER)
    async def infer(request: Request, model_name: str) -> Response:
        require_ready()
        headers = request.headers
        check_body_headers(headers)
        check_declared_length(headers.get("content-length"), max_request_bytes)
        raw = await receive_body(request.receive, max_request_bytes)
        content, answer_headers = await answer_infer(
            catalog, model_name, _version(request), decode_body(headers, raw)
        )
        return Response(content, headers=answer_headers)

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


def infer_target(path: str) -> tuple[str, str] | None:
    """(model name, version or "") of a `/v2/models/{model}[/versions/{version}]/infer`
    path; None for any other path. For a lane that serves inference ahead of the framework."""
    parts = path.split("/")
    if len(parts) not in (5, 7) or parts[:3] != ["", "v2", "models"] or parts[-1] != "infer":
        return None
    if not all(parts[3:-1]) or (len(parts) == 7 and parts[4] != "versions"):
        return None
    return parts[3], parts[5] if len(parts) == 7 else ""


def check_body_headers(headers: Mapping[str, str]) -> None:
    """415 for a compressed body, or one that is neither JSON nor (with the binary
    extension's header) octet-stream. `headers` by lower-case name, as Starlette's or the
    score lane's are."""
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding!r} is not supported; send the body uncompressed",
            field="Content-Encoding",
        )
    if headers.get(HEADER_LENGTH) is None:
        check_json_type(headers.get("content-type"))
        return
    declared = headers.get("content-type", "application/octet-stream")
    media = declared.split(";", 1)[0].strip().lower()
    if media not in ("application/octet-stream", "application/json"):
        raise UnsupportedMediaType(
            f"a body with Inference-Header-Content-Length must be application/octet-stream, "
            f"got {declared!r}",
            field="Content-Type",
        )


def decode_body(headers: Mapping[str, str], raw: bytes) -> RestInferRequest:
    """An inference request body (headers already checked) decoded."""
    header_length = headers.get(HEADER_LENGTH)
    if header_length is None:
        return parse_infer(parse_json(raw))
    return parse_infer(*split_binary(raw, header_length.strip()))


JSON_HEADERS: Mapping[str, str] = MappingProxyType({"content-type": "application/json"})
"""The headers of a JSON answer (one shared, read-only mapping)."""


async def answer_infer(
    catalog: ModelCatalog, model_name: str, model_version: str, decoded: RestInferRequest
) -> tuple[bytes, Mapping[str, str]]:
    """Score a decoded request; the response body and its headers (JSON, or the JSON header
    and binary outputs)."""
    result = await catalog.infer(model_name, model_version, decoded.request)
    header, blobs = infer_response(result, decoded)
    head = orjson.dumps(header, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return head, JSON_HEADERS
    content = b"".join([head, *blobs])
    return content, {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(head))}


def error_answer(error: ForestFlowError) -> tuple[int, bytes, dict[str, str]]:
    """Status, body and headers of the protocol's answer to `error`."""
    status = protocol_status(error).http
    headers = {"content-type": "application/json"}
    if status == HTTPStatus.UNAUTHORIZED:
        headers["www-authenticate"] = "Bearer"  # RFC 9110: name the scheme to use
    return int(status), orjson.dumps({"error": error.describe()}), headers
