"""The MLflow scoring protocol's routes, per contract and per release: parse, score, format.

| route | as `mlflow models serve` | permission |
|---|---|---|
| `POST /{org}/{project}/{n}[/{release}]/invocations` | `POST /invocations` | score |
| `GET /{org}/{project}/{n}[/{release}]/ping`, `/health` | `GET /ping`, `/health` | read |
| `GET /{org}/{project}/{n}[/{release}]/version` | `GET /version` | read |

Without a release, a request is routed by the contract's router (counted, shadowed,
logged), as `POST /{org}/{project}/{n}/score` is; with one, that release answers directly.
MLflow's ping needs no credentials; these do (read), since they say which contracts exist:
`/health/live` and `/health/ready` stay open for probes. Errors answer in MLflow's form
(`errors.py`), those of the permission and readiness checks included.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from forestflow import __version__
from forestflow.api.mlflow_scoring import route_docs as docs
from forestflow.api.mlflow_scoring.csv_body import parse_csv
from forestflow.api.mlflow_scoring.errors import error_answer, internal_answer
from forestflow.api.mlflow_scoring.inputs import contract_inputs, servable_inputs
from forestflow.api.mlflow_scoring.payloads import ModelInputs, parse_payload
from forestflow.api.mlflow_scoring.predictions import predictions_body
from forestflow.api.rest.auth import Guard
from forestflow.api.rest.bodies import check_declared_length, parse_json, receive_body
from forestflow.api.rest.endpoints import CONTRACT, SERVABLE, route_adder
from forestflow.api.rest.errors import protocol_route
from forestflow.control.plane import ControlPlane
from forestflow.domain.fqrv import FQRV, Contract
from forestflow.domain.frame import Frame
from forestflow.domain.roles import Permission
from forestflow.errors import (
    MalformedRequest,
    NoActiveServablesForContract,
    UnsupportedMediaType,
)
from forestflow.serving.inference import InferenceService, Scored

log = logging.getLogger(__name__)

JSON = "application/json"
CSV = "text/csv"
SERVABLE_HEADER = "x-forestflow-servable"
"""Names the release that answered (`org.project.n.release`); MLflow's answer has no room."""
PING_BODY = b"\n"
"""What MLflow's ping and health answer, as `application/json`."""


def _answer(parts: tuple[int, bytes, dict[str, str]]) -> Response:
    status, content, headers = parts
    return Response(content, status_code=status, headers=headers)


MlflowScoringRoute = protocol_route(
    lambda error: _answer(error_answer(error)), lambda: _answer(internal_answer())
)
"""A route that answers its errors in MLflow's form."""


def build_mlflow_router(
    control: ControlPlane,
    inference: InferenceService,
    guard: Guard,
    max_request_bytes: int,
    require_ready: Callable[[], None] = lambda: None,
) -> APIRouter:
    """The protocol's routes. `require_ready` raises `ServiceUnavailableError` until the
    server has recovered its state (the app's own check, as the BASIC routes use)."""
    router = APIRouter(route_class=MlflowScoringRoute)
    _route = route_adder(router, guard, Permission.READ)

    @_route("POST", [CONTRACT + "/invocations"], Permission.SCORE, doc=docs.INVOCATIONS)
    async def invocations(
        request: Request, organization: str, project: str, contract_number: int
    ) -> Response:
        require_ready()
        contract = Contract(organization, project, contract_number)
        frame = await read_frame(request, contract_inputs(control, contract), max_request_bytes)
        return predictions_response(await inference.score(contract, frame))

    @_route("POST", [SERVABLE + "/invocations"], Permission.SCORE, doc=docs.RELEASE_INVOCATIONS)
    async def release_invocations(
        request: Request,
        organization: str,
        project: str,
        contract_number: int,
        release_version: str,
    ) -> Response:
        require_ready()
        fqrv = FQRV(Contract(organization, project, contract_number), release_version)
        frame = await read_frame(request, servable_inputs(control, fqrv), max_request_bytes)
        return predictions_response(await inference.score_servable(fqrv, frame))

    @_route("GET", [CONTRACT + "/ping", CONTRACT + "/health"], doc=docs.PING)
    async def ping(organization: str, project: str, contract_number: int) -> Response:
        require_ready()
        contract = Contract(organization, project, contract_number)
        if not control.route(contract).plan.shares():
            return not_serving(contract)
        return Response(PING_BODY, media_type=JSON)

    @_route("GET", [SERVABLE + "/ping", SERVABLE + "/health"], doc=docs.RELEASE_PING)
    async def release_ping(
        organization: str, project: str, contract_number: int, release_version: str
    ) -> Response:
        require_ready()
        control.servable_route(
            FQRV(Contract(organization, project, contract_number), release_version)
        )
        return Response(PING_BODY, media_type=JSON)

    @_route("GET", [CONTRACT + "/version", SERVABLE + "/version"], doc=docs.VERSION)
    async def version() -> Response:
        return Response(__version__, media_type="text/plain")

    return router


def not_serving(contract: Contract) -> Response:
    """MLflow's ping answers 404 when it has no model: so does a contract no release serves."""
    _, content, headers = error_answer(NoActiveServablesForContract(contract))
    content = orjson.dumps({**orjson.loads(content), "error_code": "RESOURCE_DOES_NOT_EXIST"})
    return Response(content, status_code=404, headers=headers)


def predictions_response(scored: Scored) -> Response:
    """`{"predictions": …}`, and the release that answered in a header."""
    content = orjson.dumps(predictions_body(scored.prediction), option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(content, media_type=JSON, headers={SERVABLE_HEADER: str(scored.fqrv)})


async def read_frame(request: Request, inputs: ModelInputs, limit: int) -> Frame:
    """The request's body (JSON or CSV, at most `limit` bytes) as a frame."""
    headers = request.headers
    media = body_media(headers.get("content-type"), headers.get("content-encoding"))
    check_declared_length(headers.get("content-length"), limit)
    raw = await receive_body(request.receive, limit)
    if media == CSV:
        return parse_csv(raw, inputs.types)
    return parse_payload(parse_json_body(raw), inputs)


def body_media(declared: str | None, encoding: str | None) -> str:
    """JSON or CSV, from the declared `Content-Type` (JSON when there is none); 415 for
    another type, a charset other than UTF-8, other parameters, or a compressed body."""
    if encoding is not None and encoding.strip().lower() != "identity":
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding!r} is not supported; send the body uncompressed",
            field="Content-Encoding",
        )
    if declared is None:
        return JSON
    media, *parameters = (part.strip() for part in declared.split(";"))
    media = media.lower()
    if media not in (JSON, CSV):
        raise UnsupportedMediaType(
            f"expected Content-Type {JSON} or {CSV}, got {declared!r}", field="Content-Type"
        )
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() != "charset":
            raise UnsupportedMediaType(
                f"unrecognized Content-Type parameter {name.strip()!r}", field="Content-Type"
            )
        if value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise UnsupportedMediaType("only UTF-8 bodies are read", field="Content-Type")
    return media


def parse_json_body(raw: bytes) -> Any:
    """The JSON in `raw`; `NaN` and `Infinity` are taken too, as Python's `json` (and so
    MLflow's own client, for a DataFrame with missing values) writes them."""
    try:
        return parse_json(raw)
    except MalformedRequest as error:
        try:
            return json.loads(raw)
        except ValueError:
            raise error from None
