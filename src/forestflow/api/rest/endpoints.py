"""The BASIC REST API (SPEC §2.3, §2.4, §4.1, §4.3): parse, call one service, format."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from fastapi import APIRouter
from starlette.requests import Request

from forestflow.api.rest.bodies import read_json
from forestflow.api.rest.converters import parse_inference_request, prediction_body
from forestflow.api.rest.responses import JSONResponse, wrapped
from forestflow.api.rest.views import metadata_body, servable_metrics_body
from forestflow.control.plane import ControlPlane
from forestflow.control.serve_request import BasicServeRequest, MLFlowServeRequest, ServeRequest
from forestflow.domain.codec import decode, encode
from forestflow.domain.fqrv import FQRV, Contract
from forestflow.domain.settings import ContractSettings, LoggingSettings, PolicySettings
from forestflow.errors import (
    ContractValidationError,
    CreateServableRequestInvalidError,
    ForestFlowError,
    InvalidField,
)
from forestflow.serving.inference import InferenceService

T = TypeVar("T")

CONTRACT = "/{organization}/{project}/{contract_number:int}"
SERVABLE = CONTRACT + "/{release_version}"


@dataclass(frozen=True, slots=True)
class RestContext:
    """What the REST endpoints call into."""

    control: ControlPlane
    inference: InferenceService
    max_request_bytes: int


def _contract(organization: str, project: str, contract_number: int) -> Contract:
    return Contract(organization, project, contract_number)


def _fqrv(organization: str, project: str, contract_number: int, release_version: str) -> FQRV:
    return FQRV(_contract(organization, project, contract_number), release_version)


def _decode_as(kind: type[ForestFlowError], cls: type[T], data: Any, path: str = "") -> T:
    """Decode `data`, re-labelling field errors as `kind` (each command has its error name)."""
    try:
        return decode(cls, data, path=path)
    except InvalidField as error:
        raise error.as_kind(kind) from None


def build_router(ctx: RestContext) -> APIRouter:
    """All BASIC REST routes bound to `ctx`."""
    router = APIRouter()
    _add_contract_routes(router, ctx)
    _add_servable_routes(router, ctx)
    _add_inference_routes(router, ctx)
    return router


def _route(
    router: APIRouter, method: str, paths: list[str]
) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
    def decorate(endpoint: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        for path in paths:
            router.add_api_route(path, endpoint, methods=[method], response_class=JSONResponse)
        return endpoint

    return decorate


def _add_contract_routes(router: APIRouter, ctx: RestContext) -> None:
    control = ctx.control

    @_route(router, "GET", ["/contracts/list"])
    async def list_contracts() -> JSONResponse:
        return wrapped("Contracts", {"contracts": [encode(c) for c in control.contracts()]})

    @_route(router, "POST", ["/contract" + CONTRACT])
    async def create_contract(
        request: Request, organization: str, project: str, contract_number: int
    ) -> JSONResponse:
        contract = _contract(organization, project, contract_number)
        settings = await _contract_settings(request, ctx)
        await control.create_contract(contract, settings)
        return wrapped("ContractCreatedSuccessfully", {"contract": encode(contract)}, 201)

    @_route(router, "PUT", [CONTRACT])
    async def update_contract(
        request: Request, organization: str, project: str, contract_number: int
    ) -> JSONResponse:
        contract = _contract(organization, project, contract_number)
        settings = await _contract_settings(request, ctx)
        await control.update_contract(contract, settings)
        return wrapped("ContractUpdatedSuccessfully", {"contract": encode(contract)})

    @_route(router, "DELETE", [CONTRACT])
    async def delete_contract(
        organization: str, project: str, contract_number: int
    ) -> JSONResponse:
        contract = _contract(organization, project, contract_number)
        await control.delete_contract(contract)
        return wrapped("ContractDeletedSuccessfully", {"contract": encode(contract)})

    @_route(router, "GET", [CONTRACT + "/contract-settings", CONTRACT + "/c-settings"])
    async def contract_settings(
        organization: str, project: str, contract_number: int
    ) -> JSONResponse:
        contract = _contract(organization, project, contract_number)
        return wrapped("ContractSettings", encode(control.contract_settings(contract)))

    @_route(router, "GET", [CONTRACT + "/list", CONTRACT + "/releases"])
    async def list_releases(organization: str, project: str, contract_number: int) -> JSONResponse:
        contract = _contract(organization, project, contract_number)
        return JSONResponse([{"FQRV": encode(f)} for f in control.releases(contract)])

    @_route(router, "GET", [CONTRACT + "/stats"])
    async def stats(organization: str, project: str, contract_number: int) -> JSONResponse:
        contract = _contract(organization, project, contract_number)
        return JSONResponse([servable_metrics_body(m) for m in control.metrics(contract)])

    @_route(router, "GET", [CONTRACT + "/servable-settings", CONTRACT + "/s-settings"])
    async def servables_settings(
        organization: str, project: str, contract_number: int
    ) -> JSONResponse:
        contract = _contract(organization, project, contract_number)
        return JSONResponse(
            [
                {"ServableSettings": {"fqrv": encode(f), **encode(s)}}
                for f, s in control.servables_settings(contract)
            ]
        )

    @_route(router, "GET", [CONTRACT + "/metadata"])
    async def contract_metadata(
        organization: str, project: str, contract_number: int
    ) -> JSONResponse:
        contract = _contract(organization, project, contract_number)
        fqrvs = [f for f in control.releases(contract) if f not in control.load_errors()]
        return JSONResponse([metadata_body(f, control.signature(f)) for f in fqrvs])


async def _contract_settings(request: Request, ctx: RestContext) -> ContractSettings:
    body = await read_json(request, ctx.max_request_bytes)
    return _decode_as(ContractValidationError, ContractSettings, body)


def _add_servable_routes(router: APIRouter, ctx: RestContext) -> None:
    control = ctx.control

    @_route(router, "POST", ["/servable"])
    async def deploy(request: Request) -> JSONResponse:
        serve = _serve_request(await read_json(request, ctx.max_request_bytes))
        fqrv = await control.deploy(serve)
        return wrapped("ServableCreatedSuccessfully", {"fqrv": encode(fqrv)}, 201)

    @_route(router, "POST", ["/servable" + SERVABLE])
    async def deploy_at(
        request: Request,
        organization: str,
        project: str,
        contract_number: int,
        release_version: str,
    ) -> JSONResponse:
        fqrv = _fqrv(organization, project, contract_number, release_version)
        serve = _serve_request(await read_json(request, ctx.max_request_bytes), fqrv)
        await control.deploy(serve)
        return wrapped("ServableCreatedSuccessfully", {"fqrv": encode(fqrv)}, 201)

    @_route(router, "PUT", [SERVABLE + "/policy-settings", SERVABLE + "/policy"])
    async def update_policy(
        request: Request,
        organization: str,
        project: str,
        contract_number: int,
        release_version: str,
    ) -> JSONResponse:
        fqrv = _fqrv(organization, project, contract_number, release_version)
        body = await read_json(request, ctx.max_request_bytes)
        policy = _decode_as(CreateServableRequestInvalidError, PolicySettings, body)
        await control.update_policy(fqrv, policy)
        return wrapped("PolicySettingsUpdatedSuccessfully", {"fqrv": encode(fqrv)})

    @_route(router, "PUT", [SERVABLE + "/logging-settings", SERVABLE + "/logging"])
    async def update_logging(
        request: Request,
        organization: str,
        project: str,
        contract_number: int,
        release_version: str,
    ) -> JSONResponse:
        fqrv = _fqrv(organization, project, contract_number, release_version)
        body = await read_json(request, ctx.max_request_bytes)
        logging_settings = _decode_as(CreateServableRequestInvalidError, LoggingSettings, body)
        await control.update_logging(fqrv, logging_settings)
        return wrapped("LoggingSettingsUpdatedSuccessfully", {"fqrv": encode(fqrv)})

    @_route(router, "DELETE", [SERVABLE])
    async def delete_servable(
        organization: str, project: str, contract_number: int, release_version: str
    ) -> JSONResponse:
        fqrv = _fqrv(organization, project, contract_number, release_version)
        await control.delete_servable(fqrv)
        return wrapped("ServablesDeletedSuccessfully", {"fqrvs": [encode(fqrv)]})

    @_route(router, "GET", [SERVABLE + "/settings"])
    async def servable_settings(
        organization: str, project: str, contract_number: int, release_version: str
    ) -> JSONResponse:
        fqrv = _fqrv(organization, project, contract_number, release_version)
        settings = encode(control.servable_settings(fqrv))
        return wrapped("ServableSettings", {"fqrv": encode(fqrv), **settings})

    @_route(router, "GET", [SERVABLE + "/metadata"])
    async def servable_metadata(
        organization: str, project: str, contract_number: int, release_version: str
    ) -> JSONResponse:
        fqrv = _fqrv(organization, project, contract_number, release_version)
        return JSONResponse(metadata_body(fqrv, control.signature(fqrv)))


def _serve_request(body: Any, fqrv: FQRV | None = None) -> ServeRequest:
    """Decode a serve request: wrapped by its type name (`{"MLFlowServeRequest": {...}}`), in
    the `type` form, or bare — a BasicServeRequest when it names a `flavor`, else an
    MLFlowServeRequest."""
    kind = CreateServableRequestInvalidError
    request: ServeRequest
    wrapper = (
        isinstance(body, dict) and len(body) == 1 and next(iter(body)) in ServeRequest.registry
    )
    typed = isinstance(body, dict) and body.get("type") in ServeRequest.registry
    if wrapper or typed:
        request = _decode_as(kind, cast(Any, ServeRequest), body)
    elif isinstance(body, dict) and "flavor" not in body:
        request = _decode_as(kind, MLFlowServeRequest, body)
    else:
        request = _decode_as(kind, BasicServeRequest, body)
    return request.with_fqrv(fqrv) if fqrv is not None else request


def _add_inference_routes(router: APIRouter, ctx: RestContext) -> None:
    inference = ctx.inference

    @_route(router, "POST", [CONTRACT + "/score"])
    async def score(
        request: Request, organization: str, project: str, contract_number: int
    ) -> JSONResponse:
        contract = _contract(organization, project, contract_number)
        frame = parse_inference_request(await read_json(request, ctx.max_request_bytes))
        scored = await inference.score(contract, frame)
        return JSONResponse(prediction_body(scored.fqrv, scored.prediction))

    @_route(router, "POST", [SERVABLE + "/score"])
    async def score_servable(
        request: Request,
        organization: str,
        project: str,
        contract_number: int,
        release_version: str,
    ) -> JSONResponse:
        fqrv = _fqrv(organization, project, contract_number, release_version)
        frame = parse_inference_request(await read_json(request, ctx.max_request_bytes))
        scored = await inference.score_servable(fqrv, frame)
        return JSONResponse(prediction_body(scored.fqrv, scored.prediction))
