"""`Client`: the ForestFlow API from synchronous Python code."""

from __future__ import annotations

import json
from collections.abc import Generator, Iterator, Mapping, Sequence
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


class Client:
    """A ForestFlow server at `url` (default `$FORESTFLOW_URL`, else http://127.0.0.1:8090),
    called with `token` (default `$FORESTFLOW_TOKEN`, else none).

    Every method answers a typed value or raises the server's error as its own class
    (`forestflow.errors`: `UnknownServable`, `PermissionDenied`, …); a call that gets no
    ForestFlow answer raises `NoAnswer` or `UnexpectedAnswer`. `timeout` bounds each call
    but a deploy, which `deploy_timeout` bounds (the server fetches and loads the model
    before it answers). Use it as a context manager, or `close()` it.
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
        self._http = httpx.Client(**options)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    # --- sending ---------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Any route: the answer's JSON, or its error raised (for routes without a method)."""
        try:
            response = self._http.request(
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

    def send(self, call: Call[Any]) -> Any:
        """`call`'s raw answer (its JSON), or its error raised."""
        timeout = self.deploy_timeout if call.long else self.timeout
        return self.request(
            call.method, call.path, json=call.json, params=call.params, timeout=timeout
        )

    def _run(self, call: Call[T]) -> T:
        return call.parse(self.send(call))

    # --- contracts -------------------------------------------------------------------

    def contracts(self) -> list[Contract]:
        """Every contract."""
        return self._run(calls.contracts())

    def create_contract(
        self, contract: ContractLike, settings: Mapping[str, Any] | None = None
    ) -> Contract:
        """Create a contract with `{"expirationPolicy", "router"}` (or the defaults)."""
        return self._run(calls.create_contract(contract, settings))

    def update_contract(self, contract: ContractLike, changes: Mapping[str, Any]) -> Contract:
        """Change the contract settings `changes` names; the others keep their value."""
        return self._run(calls.update_contract(contract, changes))

    def delete_contract(self, contract: ContractLike) -> Contract:
        """Delete a contract that has no servables."""
        return self._run(calls.delete_contract(contract))

    def contract_settings(self, contract: ContractLike) -> ContractSettings:
        """A contract's router and expiration policy."""
        return self._run(calls.contract_settings(contract))

    # --- servables -------------------------------------------------------------------

    def deploy(
        self, request: ServeRequest | Mapping[str, Any], fqrv: FQRVLike | None = None
    ) -> Deployed:
        """Deploy a servable; answers once its model is loaded and the deploy durable.
        `fqrv`, when given, wins over the request's."""
        return self._run(calls.deploy(request, fqrv))

    def releases(self, contract: ContractLike) -> list[Release]:
        """A contract's servables in deployment order, loaded or failed."""
        return self._run(calls.releases(contract))

    def servables_settings(self, contract: ContractLike) -> list[ServableSettings]:
        """The settings of every servable of a contract."""
        return self._run(calls.servables_settings(contract))

    def servable_settings(self, fqrv: FQRVLike) -> ServableSettings:
        """One servable's settings."""
        return self._run(calls.servable_settings(fqrv))

    def update_policy(self, fqrv: FQRVLike, changes: Mapping[str, Any]) -> FQRV:
        """Change the policy settings `changes` names (`validityPolicy`, `phaseInPolicy`)."""
        return self._run(calls.update_policy(fqrv, changes))

    def update_logging(self, fqrv: FQRVLike, changes: Mapping[str, Any]) -> FQRV:
        """Change the logging settings `changes` names (`logLevel`, `keyFeatures`, …)."""
        return self._run(calls.update_logging(fqrv, changes))

    def delete_servable(self, fqrv: FQRVLike) -> list[FQRV]:
        """Delete (unload) a servable."""
        return self._run(calls.delete_servable(fqrv))

    def metadata(self, fqrv: FQRVLike) -> Metadata:
        """What a servable's model takes and answers."""
        return self._run(calls.metadata(fqrv))

    def contract_metadata(self, contract: ContractLike) -> list[Metadata]:
        """What the model of each loaded servable of a contract takes and answers."""
        return self._run(calls.contract_metadata(contract))

    def stats(self, contract: ContractLike) -> list[ServableMetrics]:
        """The metrics of every servable of a contract."""
        return self._run(calls.stats(contract))

    # --- scoring and feedback --------------------------------------------------------

    def score(
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
        return self.score_request(contract, body, release=release)

    def score_request(
        self, contract: ContractLike, body: Mapping[str, Any], *, release: str | None = None
    ) -> Prediction:
        """Score a BASIC request body as it is (`{"schema", "datum", "configs"?}`)."""
        target = Contract.parse(contract)
        where = target.release(release) if release is not None else target
        return self._run(calls.score(where, body))

    def update_metrics(self, fqrv: FQRVLike, metrics: Mapping[str, float]) -> dict[str, float]:
        """Merge an external evaluator's metrics into a servable's performance metrics."""
        return self._run(calls.update_metrics(fqrv, metrics))

    def feedback(
        self, contract: ContractLike, records: Sequence[Mapping[str, Any]] | Mapping[str, Any]
    ) -> FeedbackAccepted:
        """Ground truth for logged predictions: `[{"key", "actual"}]` or `{key: actual}`."""
        return self._run(calls.feedback(contract, records))

    # --- prediction log --------------------------------------------------------------

    def prediction_log_stats(self) -> PredictionLogStats:
        """The prediction sinks' counters and the feedback join's."""
        return self._run(calls.prediction_log_stats())

    def events_page(
        self,
        contract: ContractLike | None = None,
        servable: FQRVLike | None = None,
        *,
        after: int | None = None,
        last: int = 0,
    ) -> EventsPage:
        """The prediction events held now (of one contract, of one servable): those after
        sequence number `after`, or the `last` ones; `resume_after` is where to go on."""
        return self._run(calls.events_page(contract, servable, after, last))

    def follow_events(
        self,
        contract: ContractLike | None = None,
        servable: FQRVLike | None = None,
        *,
        after: int | None = None,
        last: int = 0,
        wait: float = 60.0,
    ) -> Iterator[PredictionEvent | EventsMissed]:
        """Prediction events as they happen (of one contract, of one servable), starting
        now, after sequence number `after`, or with the `last` ones held. It never ends by
        itself: each stream the server holds open for `wait` seconds is followed by the
        next, from where it ended. `EventsMissed` says the reader fell behind that much."""
        cursor = after
        while True:
            params = calls.event_params(contract, servable, cursor, last, wait)
            end = yield from self._event_stream(params, wait)
            if end.server_closing:
                raise NoAnswer(f"{self.url} is shutting down")
            cursor = end.resume_after

    def _event_stream(
        self, params: dict[str, Any], wait: float
    ) -> Generator[PredictionEvent | EventsMissed, None, EventsEnd]:
        """One stream's events; returns its end (where to resume)."""
        read = None if self.timeout is None else self.timeout + wait
        timeout = httpx.Timeout(self.timeout, read=read)
        try:
            with self._http.stream("GET", calls.EVENTS, params=params, timeout=timeout) as response:
                if not response.is_success:
                    response.read()
                    read_answer(response)
                for line in response.iter_lines():
                    if line.strip():
                        item = event_item(json.loads(line))
                        if isinstance(item, EventsEnd):
                            return item
                        yield item
        except httpx.TransportError as error:
            raise no_answer(error, self.url) from error
        raise no_answer(httpx.RemoteProtocolError("the stream ended early"), self.url)

    # --- history and tokens ----------------------------------------------------------

    def history(self, limit: int = 100, before: int | None = None) -> list[HistoryEntry]:
        """Control commands and automatic changes, newest first."""
        return self._run(calls.history(limit, before))

    def tokens(self) -> list[Token]:
        """The bearer tokens (admin)."""
        return self._run(calls.tokens())

    def create_token(self, name: str, role: str) -> CreatedToken:
        """Make a token (admin); its secret is in the answer, and only there."""
        return self._run(calls.create_token(name, role))

    def revoke_token(self, name: str) -> str:
        """Revoke a token (admin)."""
        return self._run(calls.revoke_token(name))
