"""GraphPipe's routes: `POST /{org}/{project}/{n}/gp` (routed) and `…/{n}/{release}/gp`.

The body is a flatbuffers `Request` (GraphPipe's `graphpipe.fbs`) holding an `InferRequest`
— answered with an `InferResponse` — or a `MetadataRequest` — answered with a
`MetadataResponse`; both `application/octet-stream`, with `X-ForestFlow-Servable` naming
the release that answered (`org.project.n.release`). The route needs the score permission,
whichever request the body holds (the kind is only known once the body is read).

Errors answer with the status the BASIC API gives the same error (400 for a body that is
not a `Request`, 404 for an unknown contract or release, 422 for tensors the model cannot
take, ...) and an `InferResponse` whose `errors` hold one `Error` {code: that status,
message}. A non-200 status is what GraphPipe's reference server answers and what its
clients check (graphpipe-py raises `HTTPError`, graphpipe-go returns an error); the original
ForestFlow put its errors in the same `Error` table, with an HTTP status as the code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from http import HTTPStatus

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from forestflow.api.graphpipe import route_docs as docs
from forestflow.api.graphpipe.messages import (
    MetadataCall,
    read_request,
    write_error_response,
    write_infer_response,
    write_metadata_response,
)
from forestflow.api.graphpipe.service import GraphPipeService
from forestflow.api.rest.auth import Guard
from forestflow.api.rest.bodies import check_declared_length, receive_body
from forestflow.api.rest.endpoints import CONTRACT, SERVABLE
from forestflow.api.rest.errors import INTERNAL_MESSAGE, protocol_route
from forestflow.control.plane import ControlPlane
from forestflow.domain.fqrv import FQRV, Contract
from forestflow.domain.roles import Permission
from forestflow.errors import ForestFlowError, UnsupportedMediaType
from forestflow.serving.inference import InferenceService

log = logging.getLogger(__name__)

OCTET_STREAM = "application/octet-stream"
SERVABLE_HEADER = "x-forestflow-servable"
"""Names the release that answered; GraphPipe's messages have no room for it."""
ACCEPTED_TYPES = (OCTET_STREAM, "application/x-flatbuffers")
"""Declared body types taken (besides none: GraphPipe's clients declare none)."""


def error_answer(error: ForestFlowError) -> Response:
    """The error's status, with an `InferResponse` carrying it as its one `Error`."""
    status = int(error.status)
    headers = {"content-type": OCTET_STREAM}
    if status == HTTPStatus.UNAUTHORIZED:
        headers["www-authenticate"] = "Bearer"  # RFC 9110: name the scheme to use
    return Response(write_error_response(status, error.describe()), status, headers)


def _internal_answer() -> Response:
    body = write_error_response(HTTPStatus.INTERNAL_SERVER_ERROR, INTERNAL_MESSAGE)
    return Response(body, 500, {"content-type": OCTET_STREAM})


GraphPipeRoute = protocol_route(error_answer, _internal_answer)
"""A route that answers its errors as GraphPipe `InferResponse`s."""


def build_graphpipe_router(
    control: ControlPlane,
    inference: InferenceService,
    guard: Guard,
    max_request_bytes: int,
    require_ready: Callable[[], None] = lambda: None,
) -> APIRouter:
    """GraphPipe's routes. `require_ready` raises `ServiceUnavailableError` until the server
    has recovered its state (the app's own check, as the BASIC routes use)."""
    router = APIRouter(route_class=GraphPipeRoute)
    service = GraphPipeService(control, inference)

    async def graphpipe(
        request: Request, organization: str, project: str, contract_number: int
    ) -> Response:
        require_ready()
        contract = Contract(organization, project, contract_number)
        release = request.path_params.get("release_version")
        check_body_headers(request.headers)
        check_declared_length(request.headers.get("content-length"), max_request_bytes)
        call = read_request(await receive_body(request.receive, max_request_bytes))
        if isinstance(call, MetadataCall):
            fqrv, metadata = service.metadata(contract, release)
            return _answer(write_metadata_response(metadata), fqrv)
        inferred = await service.infer(contract, release, call)
        return _answer(write_infer_response(inferred.tensors), inferred.fqrv)

    routes = (
        (CONTRACT + "/gp", "graphpipe", docs.GRAPHPIPE),
        (SERVABLE + "/gp", "graphpipe_release", docs.GRAPHPIPE_RELEASE),
    )
    for path, name, doc in routes:
        router.add_api_route(
            path,
            graphpipe,
            methods=["POST"],
            name=name,
            operation_id=name,
            response_class=Response,
            dependencies=guard.dependencies(Permission.SCORE),  # type: ignore[arg-type]
            **doc.route_options(guarded=True, auth=guard.enabled, parameters=True),
        )
    return router


def _answer(content: bytes, fqrv: FQRV) -> Response:
    return Response(content, headers={"content-type": OCTET_STREAM, SERVABLE_HEADER: str(fqrv)})


def check_body_headers(headers: Mapping[str, str]) -> None:
    """415 for a compressed body, or one declared as anything but octet-stream (or
    flatbuffers); an undeclared one is taken, as GraphPipe's clients send it."""
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding!r} is not supported; send the body uncompressed",
            field="Content-Encoding",
        )
    declared = headers.get("content-type")
    if declared is None:
        return
    if declared.split(";", 1)[0].strip().lower() not in ACCEPTED_TYPES:
        raise UnsupportedMediaType(
            f"expected Content-Type: {OCTET_STREAM} (a GraphPipe Request flatbuffer), "
            f"got {declared!r}",
            field="Content-Type",
        )
