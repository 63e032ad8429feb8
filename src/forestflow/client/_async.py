"""`AsyncClient`: the ForestFlow API from asyncio code (the same methods as `Client`)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import httpx

from forestflow.client import _calls as calls
from forestflow.client._answers import (
    ContractSettings,
    CreatedToken,
    Deployed,
    EventsEnd,
    EventsMissed,
    EventsPage,
    FeedbackAccepted,
    HistoryEntry,
    Metadata,
    Prediction,
    PredictionEvent,
    PredictionLogStats,
    Release,
    ServableMetrics,
    ServableSettings,
    Token,
    event_item,
)
from forestflow.client._calls import Call, ContractLike, FQRVLike
from forestflow.client._names import FQRV, Contract
from forestflow.client._requests import ServeRequest, score_body
from forestflow.client._transport import (
    DEFAULT_DEPLOY_TIMEOUT_S,
    DEFAULT_TIMEOUT_S,
    NoAnswer,
    client_options,
    no_answer,
    read_answer,
)

T = TypeVar("T")


class AsyncClient:
    """`Client` for asyncio: a ForestFlow server at `url` (default `$FORESTFLOW_URL`, else http://127.0.0.1:8090),
    called with `token` (default `$FORESTFLOW_TOKEN`, else none).

    Every method answers a typed value or raises the server's error as its own class
    (`forestflow.errors`: `UnknownServable`, `PermissionDenied`, …); a call that gets no
    ForestFlow answer raises `NoAnswer` or `UnexpectedAnswer`. `timeout` bounds each call
    but a deploy, which `deploy_timeout` bounds (the server fetches and loads the model
    before it answers). Use it as an async context manager, or `aclose()` it.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        deploy_timeout: float | None = DEFAULT_DEPLOY_TIMEOUT_S,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        options = client_options(url, token, timeout, headers)
        self.url: str = options["base_url"]
        self.timeout = timeout
        self.deploy_timeout = deploy_timeout
        self._http = httpx.AsyncClient(**options)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    # --- sending ---------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the HTTP call's, as httpx's
    ) -> Any:
        """Any route: the answer's JSON, or its error raised (for routes without a method)."""
        try:
            response = await self._http.request(
                method,
                path,
                json=json,
                params=params,
                content=content,
                headers=headers,
                timeout=timeout if timeout is not None else self.timeout,
            )
        except httpx.TransportError as error:
            raise no_answer(error, self.url) from error
        return read_answer(response)

    async def send(self, call: Call[Any]) -> Any:
        """`call`'s raw answer (its JSON), or its error raised."""
        timeout = self.deploy_timeout if call.long else self.timeout
        return await self.request(
            call.method, call.path, json=call.json, params=call.params, timeout=timeout
        )

    async def _run(self, call: Call[T]) -> T:
        return call.parse(await self.send(call))

    # --- contracts -------------------------------------------------------------------

    async def contracts(self) -> list[Contract]:
        """Every contract."""
        return await self._run(calls.contracts())

    async def create_contract(
        self, contract: ContractLike, settings: Mapping[str, Any] | None = None
    ) -> Contract:
        """Create a contract with `{"expirationPolicy", "router"}` (or the defaults)."""
        return await self._run(calls.create_contract(contract, settings))

    async def update_contract(self, contract: ContractLike, changes: Mapping[str, Any]) -> Contract:
        """Change the contract settings `changes` names; the others keep their value."""
        return await self._run(calls.update_contract(contract, changes))

    async def delete_contract(self, contract: ContractLike) -> Contract:
        """Delete a contract that has no servables."""
        return await self._run(calls.delete_contract(contract))

    async def contract_settings(self, contract: ContractLike) -> ContractSettings:
        """A contract's router and expiration policy."""
        return await self._run(calls.contract_settings(contract))

    # --- servables -------------------------------------------------------------------

    async def deploy(
        self, request: ServeRequest | Mapping[str, Any], fqrv: FQRVLike | None = None
    ) -> Deployed:
        """Deploy a servable; answers once its model is loaded and the deploy durable.
        `fqrv`, when given, wins over the request's."""
        return await self._run(calls.deploy(request, fqrv))

    async def releases(self, contract: ContractLike) -> list[Release]:
        """A contract's servables in deployment order, loaded or failed."""
        return await self._run(calls.releases(contract))

    async def servables_settings(self, contract: ContractLike) -> list[ServableSettings]:
        """The settings of every servable of a contract."""
        return await self._run(calls.servables_settings(contract))

    async def servable_settings(self, fqrv: FQRVLike) -> ServableSettings:
        """One servable's settings."""
        return await self._run(calls.servable_settings(fqrv))

    async def update_policy(self, fqrv: FQRVLike, changes: Mapping[str, Any]) -> FQRV:
        """Change the policy settings `changes` names (`validityPolicy`, `phaseInPolicy`)."""
        return await self._run(calls.update_policy(fqrv, changes))

    async def update_logging(self, fqrv: FQRVLike, changes: Mapping[str, Any]) -> FQRV:
        """Change the logging settings `changes` names (`logLevel`, `keyFeatures`, …)."""
        return await self._run(calls.update_logging(fqrv, changes))

    async def delete_servable(self, fqrv: FQRVLike) -> list[FQRV]:
        """Delete (unload) a servable."""
        return await self._run(calls.delete_servable(fqrv))

    async def metadata(self, fqrv: FQRVLike) -> Metadata:
        """What a servable's model takes and answers."""
        return await self._run(calls.metadata(fqrv))

    async def contract_metadata(self, contract: ContractLike) -> list[Metadata]:
        """What the model of each loaded servable of a contract takes and answers."""
        return await self._run(calls.contract_metadata(contract))

    async def stats(self, contract: ContractLike) -> list[ServableMetrics]:
        """The metrics of every servable of a contract."""
        return await self._run(calls.stats(contract))

    # --- scoring and feedback --------------------------------------------------------

    async def score(
        self,
        contract: ContractLike,
        rows: Sequence[Mapping[str, Any]] | Sequence[Sequence[Any]],
        *,
        features: Sequence[str] | None = None,
        schema: Sequence[Mapping[str, Any]] | None = None,
        configs: Mapping[str, str] | None = None,
        release: str | None = None,
    ) -> Prediction:
        """Score `rows` (dicts, or lists named by `features`) through the contract's router,
        or on `release` directly (bypassing the router; not counted)."""
        body = score_body(rows, features=features, schema=schema, configs=configs)
        return await self.score_request(contract, body, release=release)

    async def score_request(
        self, contract: ContractLike, body: Mapping[str, Any], *, release: str | None = None
    ) -> Prediction:
        """Score a BASIC request body as it is (`{"schema", "datum", "configs"?}`)."""
        target = Contract.parse(contract)
        where = target.release(release) if release is not None else target
        return await self._run(calls.score(where, body))

    async def update_metrics(
        self, fqrv: FQRVLike, metrics: Mapping[str, float]
    ) -> dict[str, float]:
        """Merge an external evaluator's metrics into a servable's performance metrics."""
        return await self._run(calls.update_metrics(fqrv, metrics))

    async def feedback(
        self, contract: ContractLike, records: Sequence[Mapping[str, Any]] | Mapping[str, Any]
    ) -> FeedbackAccepted:
        """Ground truth for logged predictions: `[{"key", "actual"}]` or `{key: actual}`."""
        return await self._run(calls.feedback(contract, records))

    # --- prediction log --------------------------------------------------------------

    async def prediction_log_stats(self) -> PredictionLogStats:
        """The prediction sinks' counters and the feedback join's."""
        return await self._run(calls.prediction_log_stats())

    async def events_page(
        self,
        contract: ContractLike | None = None,
        servable: FQRVLike | None = None,
        *,
        after: int | None = None,
        last: int = 0,
    ) -> EventsPage:
        """The prediction events held now: see `Client.events_page`."""
        return await self._run(calls.events_page(contract, servable, after, last))

    async def follow_events(
        self,
        contract: ContractLike | None = None,
        servable: FQRVLike | None = None,
        *,
        after: int | None = None,
        last: int = 0,
        wait: float = 60.0,
    ) -> AsyncIterator[PredictionEvent | EventsMissed]:
        """Prediction events as they happen: see `Client.follow_events`."""
        cursor = after
        while True:
            params = calls.event_params(contract, servable, cursor, last, wait)
            async for item in self._event_stream(params, wait):
                if not isinstance(item, EventsEnd):
                    yield item
                elif item.server_closing:
                    raise NoAnswer(f"{self.url} is shutting down")
                else:
                    cursor = item.resume_after

    async def _event_stream(
        self, params: dict[str, Any], wait: float
    ) -> AsyncIterator[PredictionEvent | EventsMissed | EventsEnd]:
        """One stream's events, and last its end (where to resume)."""
        read = None if self.timeout is None else self.timeout + wait
        timeout = httpx.Timeout(self.timeout, read=read)
        try:
            async with self._http.stream(
                "GET", calls.EVENTS, params=params, timeout=timeout
            ) as response:
                if not response.is_success:
                    await response.aread()
                    read_answer(response)
                async for line in response.aiter_lines():
                    if line.strip():
                        item = event_item(json.loads(line))
                        yield item
                        if isinstance(item, EventsEnd):
                            return
        except httpx.TransportError as error:
            raise no_answer(error, self.url) from error
        raise no_answer(httpx.RemoteProtocolError("the stream ended early"), self.url)

    # --- history and tokens ----------------------------------------------------------

    async def history(self, limit: int = 100, before: int | None = None) -> list[HistoryEntry]:
        """Control commands and automatic changes, newest first."""
        return await self._run(calls.history(limit, before))

    async def tokens(self) -> list[Token]:
        """The bearer tokens (admin)."""
        return await self._run(calls.tokens())

    async def create_token(self, name: str, role: str) -> CreatedToken:
        """Make a token (admin); its secret is in the answer, and only there."""
        return await self._run(calls.create_token(name, role))

    async def revoke_token(self, name: str) -> str:
        """Revoke a token (admin)."""
        return await self._run(calls.revoke_token(name))
