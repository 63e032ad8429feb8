"""Every API call the clients make, once: its method, path, body and how its answer reads.

`Client` and `AsyncClient` only send a `Call` and hand its answer to `Call.parse`, so the
two stay the same API by construction; the CLI sends the same calls and prints the raw
answer (`--json`) or the parsed one (tables).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from forestflow.client._answers import (
    ContractSettings,
    CreatedToken,
    Deployed,
    EventsPage,
    FeedbackAccepted,
    HistoryEntry,
    Metadata,
    Prediction,
    PredictionLogStats,
    Release,
    ServableMetrics,
    ServableSettings,
    Token,
    unwrap,
)
from forestflow.client._names import FQRV, Contract
from forestflow.client._requests import BasicServeRequest, MLFlowServeRequest, ServeRequest

T = TypeVar("T")
EVENTS = "/prediction-log/events"
ContractLike = Contract | str
FQRVLike = FQRV | str


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One request and the reading of its answer."""

    method: str
    path: str
    parse: Callable[[Any], T]
    json: Any = None
    params: Mapping[str, Any] | None = None
    long: bool = False
    """Whether the call may take long (a deploy fetches and loads a model)."""


def _fqrv_of(key: str) -> Callable[[Any], FQRV]:
    return lambda answer: FQRV.from_json(unwrap(answer, key)["fqrv"])


def _contract_of(key: str) -> Callable[[Any], Contract]:
    return lambda answer: Contract.from_json(unwrap(answer, key)["contract"])


def contracts() -> Call[list[Contract]]:
    """`GET /contracts/list`."""

    def parse(answer: Any) -> list[Contract]:
        return [Contract.from_json(c) for c in unwrap(answer, "Contracts")["contracts"]]

    return Call("GET", "/contracts/list", parse)


def create_contract(
    contract: ContractLike, settings: Mapping[str, Any] | None = None
) -> Call[Contract]:
    """`POST /contract/{org}/{project}/{n}`; no settings: the server's defaults."""
    path = "/contract" + Contract.parse(contract).path
    body = dict(settings) if settings is not None else {}
    return Call("POST", path, _contract_of("ContractCreatedSuccessfully"), body)


def update_contract(contract: ContractLike, changes: Mapping[str, Any]) -> Call[Contract]:
    """`PUT /{org}/{project}/{n}`: the fields named change, the others keep their value."""
    path = Contract.parse(contract).path
    return Call("PUT", path, _contract_of("ContractUpdatedSuccessfully"), dict(changes))


def delete_contract(contract: ContractLike) -> Call[Contract]:
    """`DELETE /{org}/{project}/{n}` (a contract without servables)."""
    path = Contract.parse(contract).path
    return Call("DELETE", path, _contract_of("ContractDeletedSuccessfully"))


def contract_settings(contract: ContractLike) -> Call[ContractSettings]:
    """`GET /{org}/{project}/{n}/contract-settings`."""
    path = Contract.parse(contract).path + "/contract-settings"
    return Call("GET", path, ContractSettings.from_json)


def deploy(
    request: ServeRequest | Mapping[str, Any], fqrv: FQRVLike | None = None
) -> Call[Deployed]:
    """`POST /servable` (or `/servable/{org}/{project}/{n}/{release}`, whose FQRV wins)."""
    body = (
        request.to_json()
        if isinstance(request, BasicServeRequest | MLFlowServeRequest)
        else dict(request)
    )
    path = "/servable" + (FQRV.parse(fqrv).path if fqrv is not None else "")
    return Call("POST", path, Deployed.from_json, body, long=True)


def releases(contract: ContractLike) -> Call[list[Release]]:
    """`GET /{org}/{project}/{n}/list`: the servables in deployment order."""
    path = Contract.parse(contract).path + "/list"
    return Call("GET", path, lambda answer: [Release.from_json(item) for item in answer])


def servables_settings(contract: ContractLike) -> Call[list[ServableSettings]]:
    """`GET /{org}/{project}/{n}/servable-settings`."""
    path = Contract.parse(contract).path + "/servable-settings"
    return Call("GET", path, lambda answer: [ServableSettings.from_json(s) for s in answer])


def servable_settings(fqrv: FQRVLike) -> Call[ServableSettings]:
    """`GET /{org}/{project}/{n}/{release}/settings`."""
    return Call("GET", FQRV.parse(fqrv).path + "/settings", ServableSettings.from_json)


def update_policy(fqrv: FQRVLike, changes: Mapping[str, Any]) -> Call[FQRV]:
    """`PUT …/{release}/policy-settings`: the fields named change."""
    path = FQRV.parse(fqrv).path + "/policy-settings"
    return Call("PUT", path, _fqrv_of("PolicySettingsUpdatedSuccessfully"), dict(changes))


def update_logging(fqrv: FQRVLike, changes: Mapping[str, Any]) -> Call[FQRV]:
    """`PUT …/{release}/logging-settings`: the fields named change."""
    path = FQRV.parse(fqrv).path + "/logging-settings"
    return Call("PUT", path, _fqrv_of("LoggingSettingsUpdatedSuccessfully"), dict(changes))


def delete_servable(fqrv: FQRVLike) -> Call[list[FQRV]]:
    """`DELETE /{org}/{project}/{n}/{release}`."""

    def parse(answer: Any) -> list[FQRV]:
        return [FQRV.from_json(f) for f in unwrap(answer, "ServablesDeletedSuccessfully")["fqrvs"]]

    return Call("DELETE", FQRV.parse(fqrv).path, parse)


def metadata(fqrv: FQRVLike) -> Call[Metadata]:
    """`GET …/{release}/metadata`: what the model takes and answers."""
    return Call("GET", FQRV.parse(fqrv).path + "/metadata", Metadata.from_json)


def contract_metadata(contract: ContractLike) -> Call[list[Metadata]]:
    """`GET /{org}/{project}/{n}/metadata`: one per loaded servable."""
    path = Contract.parse(contract).path + "/metadata"
    return Call("GET", path, lambda answer: [Metadata.from_json(m) for m in answer])


def stats(contract: ContractLike) -> Call[list[ServableMetrics]]:
    """`GET /{org}/{project}/{n}/stats`."""
    path = Contract.parse(contract).path + "/stats"
    return Call("GET", path, lambda answer: [ServableMetrics.from_json(m) for m in answer])


def score(target: ContractLike | FQRV, body: Mapping[str, Any]) -> Call[Prediction]:
    """`POST /{org}/{project}/{n}/score` (routed), or `…/{release}/score` for an FQRV."""
    where = target if isinstance(target, FQRV) else Contract.parse(target)
    return Call("POST", where.path + "/score", Prediction.from_json, dict(body))


def update_metrics(fqrv: FQRVLike, metrics: Mapping[str, float]) -> Call[dict[str, float]]:
    """`PUT …/{release}/metrics`: merged; answers the servable's performance metrics."""

    def parse(answer: Any) -> dict[str, float]:
        body = unwrap(answer, "PerformanceMetricsUpdatedSuccessfully")
        return dict(body["performanceMetrics"])

    path = FQRV.parse(fqrv).path + "/metrics"
    return Call("PUT", path, parse, {"metrics": dict(metrics)})


def feedback(
    contract: ContractLike, records: Sequence[Mapping[str, Any]] | Mapping[str, Any]
) -> Call[FeedbackAccepted]:
    """`POST /{org}/{project}/{n}/feedback`: records, or `{key: actual}`."""
    if isinstance(records, Mapping):
        listed = [{"key": key, "actual": actual} for key, actual in records.items()]
    else:
        listed = [dict(record) for record in records]
    path = Contract.parse(contract).path + "/feedback"
    return Call("POST", path, FeedbackAccepted.from_json, {"records": listed})


def prediction_log_stats() -> Call[PredictionLogStats]:
    """`GET /prediction-log/stats`."""
    return Call("GET", "/prediction-log/stats", PredictionLogStats.from_json)


def history(limit: int = 100, before: int | None = None) -> Call[list[HistoryEntry]]:
    """`GET /history`, newest first; `before` pages back."""
    params: dict[str, Any] = {"limit": limit}
    if before is not None:
        params["before"] = before

    def parse(answer: Any) -> list[HistoryEntry]:
        return [HistoryEntry.from_json(e) for e in unwrap(answer, "History")["entries"]]

    return Call("GET", "/history", parse, params=params)


def tokens() -> Call[list[Token]]:
    """`GET /admin/tokens`."""

    def parse(answer: Any) -> list[Token]:
        return [Token.from_json(t) for t in unwrap(answer, "Tokens")["tokens"]]

    return Call("GET", "/admin/tokens", parse)


def create_token(name: str, role: str) -> Call[CreatedToken]:
    """`POST /admin/tokens`: the answer holds the secret, shown this once."""

    def parse(answer: Any) -> CreatedToken:
        body = unwrap(answer, "TokenCreated")
        return CreatedToken(str(body["name"]), str(body["role"]), str(body["token"]))

    return Call("POST", "/admin/tokens", parse, {"name": name, "role": role})


def revoke_token(name: str) -> Call[str]:
    """`DELETE /admin/tokens/{name}`."""

    def parse(answer: Any) -> str:
        return str(unwrap(answer, "TokenRevoked")["name"])

    return Call("DELETE", f"/admin/tokens/{quote(name, safe='')}", parse)


def events_page(
    contract: ContractLike | None, servable: FQRVLike | None, after: int | None, last: int
) -> Call[EventsPage]:
    """`GET /prediction-log/events` without following: what the server holds now."""
    params = event_params(contract, servable, after, last, None)
    return Call("GET", EVENTS, EventsPage.from_json, params=params)


def event_params(
    contract: ContractLike | None,
    servable: FQRVLike | None,
    after: int | None,
    last: int,
    wait: float | None,
) -> dict[str, Any]:
    """The query of `GET /prediction-log/events`; `wait` None: no following."""
    params: dict[str, Any] = {"last": last}
    if contract is not None:
        params["contract"] = str(Contract.parse(contract))
    if servable is not None:
        params["servable"] = str(FQRV.parse(servable))
    if after is not None:
        params["after"] = after
    if wait is not None:
        params["follow"] = "true"
        params["wait"] = wait
    return params
