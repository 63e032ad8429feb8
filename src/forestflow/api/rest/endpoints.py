"""The BASIC REST API (SPEC §2.3, §2.4, §4.1, §4.3): parse, call one service, format."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from fastapi import APIRouter
from starlette.requests import Request

from forestflow.api.rest import route_docs as docs
from forestflow.api.rest.auth import Guard, principal_of
from forestflow.api.rest.bodies import read_json
from forestflow.api.rest.converters import parse_inference_request, prediction_body
from forestflow.api.rest.openapi import RouteDoc
from forestflow.api.rest.responses import JSONResponse, wrapped
from forestflow.api.rest.views import (
    metadata_body,
    servable_history_body,
    servable_metrics_body,
)
from forestflow.control.deploy_warnings import deploy_warnings
from forestflow.control.plane import ControlPlane, Edit
from forestflow.control.serve_request import BasicServeRequest, MLFlowServeRequest, ServeRequest
from forestflow.domain.codec import decode, decode_changes, encode
from forestflow.domain.fqrv import FQRV, Contract
from forestflow.domain.roles import Permission, may_only_shadow, never_serves
from forestflow.domain.settings import (
    ContractSettings,
    LoggingSettings,
    PolicySettings,
    ServableSettings,
    SettingsT,
    with_changes,
)
from forestflow.errors import (
    ContractValidationError,
    CreateServableRequestInvalidError,
    ForestFlowError,
    InvalidField,
    PermissionDenied,
)
from forestflow.serving.inference import InferenceService

T = TypeVar("T")

CONTRACT = "/{organization}/{project}/{contract_number:int}"
SERVABLE = CONTRACT + "/{release_version}"
MAX_HISTORY_PAGE = 1000


@dataclass(frozen=True, slots=True)
class RestContext:
    """What the REST endpoints call into."""

    control: ControlPlane
    inference: InferenceService
    max_request_bytes: int
    guard: Guard


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


def settings_edit(kind: type[ForestFlowError], cls: type[SettingsT], body: Any) -> Edit[SettingsT]:
    """A settings update from a `PUT` body (SPEC §2.4): each field the body names replaces
    the current value, the others keep theirs; `{}` changes nothing. The body is checked
    here, the merged value when the control plane applies it; both refuse as `kind`."""
    try:
        changes = decode_changes(cls, body)
    except InvalidField as error:
        raise error.as_kind(kind) from None

    def edit(current: SettingsT) -> SettingsT:
        try:
            return with_changes(current, changes)
        except InvalidField as error:
            raise error.as_kind(kind) from None

    return edit


def build_router(ctx: RestContext) -> APIRouter:
    """All BASIC REST routes bound to `ctx`."""
    router = APIRouter()
    _add_contract_routes(router, ctx)
    _add_servable_routes(router, ctx)
    _add_inference_routes(router, ctx)
    return router


Endpoint = Callable[..., Awaitable[Any]]


def _alias_name(first: str, alias: str) -> str:
    """What an alias path adds to the first: its fixed segments the first lacks (`policy`,
    `versions`), else `release` for a path that adds a release."""
    named = set(first.split("/"))
    extra = [part for part in alias.split("/") if part and "{" not in part and part not in named]
    if extra:
        return "_".join(extra).replace("-", "_")
    return "release" if alias.count("{") > first.count("{") else "alias"


def route_adder(
    router: APIRouter, guard: Guard, default: Permission
) -> Callable[..., Callable[[Endpoint], Endpoint]]:
    """`add(method, paths, permission=default, *, doc=None)`: a decorator registering an
    endpoint under `paths`, open only to callers allowed `permission`; `doc` declares its
    body, answers and errors in the OpenAPI document (`openapi.RouteDoc`)."""

    def add(
        method: str,
        paths: list[str],
        permission: Permission = default,
        *,
        doc: RouteDoc | None = None,
    ) -> Callable[[Endpoint], Endpoint]:
        def decorate(endpoint: Endpoint) -> Endpoint:
            for index, path in enumerate(paths):
                options: dict[str, Any] = {}
                if doc is not None:
                    options = doc.route_options(
                        guarded=True, auth=guard.enabled, parameters="{" in path
                    )
                    # the first path is the route's name; the others are aliases of it
                    options["operation_id"] = (
                        endpoint.__name__
                        if index == 0
                        else f"{endpoint.__name__}_{_alias_name(paths[0], path)}"
                    )
                router.add_api_route(
                    path,
                    endpoint,
                    methods=[method],
                    response_class=JSONResponse,
                    dependencies=guard.dependencies(permission),  # type: ignore[arg-type]
                    **options,
                )
            return endpoint

        return decorate

    return add


def actor(request: Request) -> str | None:
    """The name of the token making a command (None when auth is off), for the history."""
    return principal_of(request).name


def history_page(limit: int) -> int:
    """A history page size (`limit`), 1 to `MAX_HISTORY_PAGE`."""
    if not 1 <= limit <= MAX_HISTORY_PAGE:
        raise InvalidField(f"must be between 1 and {MAX_HISTORY_PAGE}", field="limit")
    return limit


MAX_SEQ = 2**63 - 1


def history_before(before: int | None) -> int | None:
    """A history cursor (`before`, an entry's `seq`): None, or 0 to 2^63 - 1."""
    if before is not None and not 0 <= before <= MAX_SEQ:
        raise InvalidField(f"must be an entry's seq, between 0 and {MAX_SEQ}", field="before")
    return before


def check_owner(request: Request, control: ControlPlane, fqrv: FQRV) -> None:
    """A shadow deployer may change only the servables it deployed itself."""
    principal = principal_of(request)
    if may_only_shadow(principal.role) and control.owner(fqrv) != principal.name:
        raise PermissionDenied(
            f"a {principal.role.value} may change only the servables it deployed; "
            f"{fqrv} was not deployed by {principal.name!r}"
        )


def check_shadow_only(request: Request, policy: PolicySettings, field: str) -> None:
    """A shadow deployer's servables must hold `NeverValid`: they never take traffic."""
    principal = principal_of(request)
    if may_only_shadow(principal.role) and not never_serves(policy):
        raise PermissionDenied(
            f"a {principal.role.value} may deploy only servables that never serve: "
            f'{field} must hold {{"NeverValid": {{}}}}',
            field=field,
        )


def _add_contract_routes(router: APIRouter, ctx: RestContext) -> None:
    control = ctx.control
    manage = Permission.MANAGE_CONTRACTS
    _route = route_adder(router, ctx.guard, Permission.READ)

    @_route("GET", ["/contracts/list"], doc=docs.LIST_CONTRACTS)
    async def list_contracts() -> JSONResponse:
        return wrapped("Contracts", {"contracts": [encode(c) for c in control.contracts()]})

    @_route("POST", ["/contract" + CONTRACT], manage, doc=docs.CREATE_CONTRACT)
    async def create_contract(
        request: Request, organization: str, project: str, contract_number: int
    ) -> JSONResponse:
        contract = _contract(organization, project, contract_number)
        settings = await _contract_settings(request, ctx)
        await control.create_contract(contract, settings, actor=actor(request))
        return wrapped("ContractCreatedSuccessfully", {"contract": encode(contract)}, 201)

    @_route("PUT", [CONTRACT], manage, doc=docs.UPDATE_CONTRACT)
    async def update_contract(
        request: Request, organization: str, project: str, contract_number: int
    ) -> JSONResponse:
        contract = _contract(organization, project, contract_number)
        body = await read_json(request, ctx.max_request_bytes)
        edit = settings_edit(ContractValidationError, ContractSettings, body)
        await control.update_contract(contract, edit, actor=actor(request))
        return wrapped("ContractUpdatedSuccessfully", {"contract": encode(contract)})

    @_route("DELETE", [CONTRACT], manage, doc=docs.DELETE_CONTRACT)
    async def delete_contract(
        request: Request, organization: str, project: str, contract_number: int
    ) -> JSONResponse:
        contract = _contract(organization, project, contract_number)
        await control.delete_contract(contract, actor=actor(request))
        return wrapped("ContractDeletedSuccessfully", {"contract": encode(contract)})

    @_route(
        "GET",
        [CONTRACT + "/contract-settings", CONTRACT + "/c-settings"],
        doc=docs.CONTRACT_SETTINGS_DOC,
    )
    async def contract_settings(
        organization: str, project: str, contract_number: int
    ) -> JSONResponse:
        contract = _contract(organization, project, contract_number)
        return wrapped("ContractSettings", encode(control.contract_settings(contract)))

    @_route("GET", [CONTRACT + "/list", CONTRACT + "/releases"], doc=docs.LIST_RELEASES)
    async def list_releases(organization: str, project: str, contract_number: int) -> JSONResponse:
        contract = _contract(organization, project, contract_number)
        failed = control.load_errors()
        return JSONResponse(
            [
                # the original's shape, plus why a servable that could not be loaded failed
                {"FQRV": encode(f), "state": "failed", "failure": failed[f]}
                if f in failed
                else {"FQRV": encode(f)}
                for f in control.releases(contract)
            ]
        )

    @_route("GET", [CONTRACT + "/stats"], doc=docs.STATS)
    async def stats(organization: str, project: str, contract_number: int) -> JSONResponse:
        contract = _contract(organization, project, contract_number)
        return JSONResponse([servable_metrics_body(m) for m in control.metrics(contract)])

    @_route(
        "GET",
        [CONTRACT + "/servable-settings", CONTRACT + "/s-settings"],
        doc=docs.SERVABLES_SETTINGS,
    )
    async def servables_settings(
        organization: str, project: str, contract_number: int
    ) -> JSONResponse:
        contract = _contract(organization, project, contract_number)
        return JSONResponse(
            [
                {"ServableSettings": _settings_body(control, f, s)}
                for f, s in control.servables_settings(contract)
            ]
        )

    @_route("GET", [CONTRACT + "/metadata"], doc=docs.CONTRACT_METADATA)
    async def contract_metadata(
        organization: str, project: str, contract_number: int
    ) -> JSONResponse:
        contract = _contract(organization, project, contract_number)
        fqrvs = [f for f in control.releases(contract) if f not in control.load_errors()]
        return JSONResponse(
            [metadata_body(f, control.signature(f), control.lineage(f)) for f in fqrvs]
        )

    @_route("GET", [CONTRACT + "/history"], Permission.READ_HISTORY, doc=docs.CONTRACT_HISTORY)
    async def contract_history(
        organization: str,
        project: str,
        contract_number: int,
        before: int | None = None,
        limit: int = 100,
    ) -> JSONResponse:
        contract = _contract(organization, project, contract_number)
        page = await control.contract_history(
            contract, before_seq=history_before(before), limit=history_page(limit)
        )
        servables = [servable_history_body(h) for h in page]
        return wrapped("ContractHistory", {"contract": encode(contract), "servables": servables})


def _settings_body(control: ControlPlane, fqrv: FQRV, settings: ServableSettings) -> dict[str, Any]:
    """A servable's settings, and its lineage (where it came from, who deployed it when)."""
    return {"fqrv": encode(fqrv), **encode(settings), "lineage": encode(control.lineage(fqrv))}


async def _contract_settings(request: Request, ctx: RestContext) -> ContractSettings:
    body = await read_json(request, ctx.max_request_bytes)
    return _decode_as(ContractValidationError, ContractSettings, body)


def _add_servable_routes(router: APIRouter, ctx: RestContext) -> None:
    control = ctx.control
    deploy_ = Permission.DEPLOY
    _route = route_adder(router, ctx.guard, Permission.READ)

    async def deploy_checked(request: Request, serve: ServeRequest) -> FQRV:
        check_shadow_only(
            request,
            serve.servable_settings.policy_settings,
            "servableSettings.policySettings.validityPolicy",
        )
        if may_only_shadow(principal_of(request).role) and serve.contract_settings is not None:
            raise PermissionDenied(
                "a shadow-deployer may not set contract settings", field="contractSettings"
            )
        return await control.deploy(serve, actor=actor(request))

    @_route("POST", ["/servable"], deploy_, doc=docs.DEPLOY)
    async def deploy(request: Request) -> JSONResponse:
        serve = _serve_request(await read_json(request, ctx.max_request_bytes))
        fqrv = await deploy_checked(request, serve)
        return wrapped("ServableCreatedSuccessfully", _created(fqrv, serve), 201)

    @_route("POST", ["/servable" + SERVABLE], deploy_, doc=docs.DEPLOY_AT)
    async def deploy_at(
        request: Request,
        organization: str,
        project: str,
        contract_number: int,
        release_version: str,
    ) -> JSONResponse:
        fqrv = _fqrv(organization, project, contract_number, release_version)
        serve = _serve_request(await read_json(request, ctx.max_request_bytes), fqrv)
        await deploy_checked(request, serve)
        return wrapped("ServableCreatedSuccessfully", _created(fqrv, serve), 201)

    @_route(
        "PUT",
        [SERVABLE + "/policy-settings", SERVABLE + "/policy"],
        deploy_,
        doc=docs.UPDATE_POLICY,
    )
    async def update_policy(
        request: Request,
        organization: str,
        project: str,
        contract_number: int,
        release_version: str,
    ) -> JSONResponse:
        fqrv = _fqrv(organization, project, contract_number, release_version)
        check_owner(request, control, fqrv)
        body = await read_json(request, ctx.max_request_bytes)
        merge = settings_edit(CreateServableRequestInvalidError, PolicySettings, body)

        def edit(current: PolicySettings) -> PolicySettings:
            policy = merge(current)
            # on the merged policy: naming only the phase-in keeps NeverValid
            check_shadow_only(request, policy, "validityPolicy")
            return policy

        await control.update_policy(fqrv, edit, actor=actor(request))
        return wrapped("PolicySettingsUpdatedSuccessfully", {"fqrv": encode(fqrv)})

    @_route(
        "PUT",
        [SERVABLE + "/logging-settings", SERVABLE + "/logging"],
        deploy_,
        doc=docs.UPDATE_LOGGING,
    )
    async def update_logging(
        request: Request,
        organization: str,
        project: str,
        contract_number: int,
        release_version: str,
    ) -> JSONResponse:
        fqrv = _fqrv(organization, project, contract_number, release_version)
        check_owner(request, control, fqrv)
        body = await read_json(request, ctx.max_request_bytes)
        edit = settings_edit(CreateServableRequestInvalidError, LoggingSettings, body)
        await control.update_logging(fqrv, edit, actor=actor(request))
        return wrapped("LoggingSettingsUpdatedSuccessfully", {"fqrv": encode(fqrv)})

    @_route("DELETE", [SERVABLE], deploy_, doc=docs.DELETE_SERVABLE)
    async def delete_servable(
        request: Request,
        organization: str,
        project: str,
        contract_number: int,
        release_version: str,
    ) -> JSONResponse:
        fqrv = _fqrv(organization, project, contract_number, release_version)
        check_owner(request, control, fqrv)
        await control.delete_servable(fqrv, actor=actor(request))
        return wrapped("ServablesDeletedSuccessfully", {"fqrvs": [encode(fqrv)]})

    @_route("GET", [SERVABLE + "/settings"], doc=docs.SERVABLE_SETTINGS)
    async def servable_settings(
        organization: str, project: str, contract_number: int, release_version: str
    ) -> JSONResponse:
        fqrv = _fqrv(organization, project, contract_number, release_version)
        settings = control.servable_settings(fqrv)
        return wrapped("ServableSettings", _settings_body(control, fqrv, settings))

    @_route("GET", [SERVABLE + "/metadata"], doc=docs.SERVABLE_METADATA)
    async def servable_metadata(
        organization: str, project: str, contract_number: int, release_version: str
    ) -> JSONResponse:
        fqrv = _fqrv(organization, project, contract_number, release_version)
        signature = control.signature(fqrv)
        return JSONResponse(metadata_body(fqrv, signature, control.lineage(fqrv)))


def _created(fqrv: FQRV, serve: ServeRequest) -> dict[str, Any]:
    """The `ServableCreatedSuccessfully` body: the FQRV, and `warnings` when there are any
    (a release that waits for a performance metric: docs/migrating.md)."""
    warnings = deploy_warnings(fqrv, serve.servable_settings)
    return {"fqrv": encode(fqrv), **({"warnings": warnings} if warnings else {})}


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
    _route = route_adder(router, ctx.guard, Permission.SCORE)

    @_route("POST", [CONTRACT + "/score"], doc=docs.SCORE)
    async def score(
        request: Request, organization: str, project: str, contract_number: int
    ) -> JSONResponse:
        contract = _contract(organization, project, contract_number)
        frame = parse_inference_request(await read_json(request, ctx.max_request_bytes))
        scored = await inference.score(contract, frame)
        return JSONResponse(prediction_body(scored.fqrv, scored.prediction))

    @_route("POST", [SERVABLE + "/score"], doc=docs.SCORE_SERVABLE)
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
