"""The control plane: commands and queries over contracts and servables.

It composes three parts, each in its own module: the `CommandLog` (events made durable,
then applied to the state), the `Deployer` (artifact copies fetched, verified, loaded
and unloaded) and the `PolicyEvaluator` (validity, phase-in, expiration and routes).
What the server holds for a servable beyond its durable record — counters, the loaded
signature, a load failure, its phase-in — is one `LiveServable` per FQRV.

Every command is validated and recorded, together with what it changes in the policies
of the contract it touches, in one store transaction; only then is it applied, so an
acknowledged change is never lost. Deploys fetch and load the model *before* their event
is written: a deploy that fails or crashes half-way leaves nothing behind but files the
next recovery removes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from forestflow.artifacts.base import StorageOptions
from forestflow.artifacts.cache import ArtifactCache
from forestflow.clock import Clock
from forestflow.control.command_log import CommandLog
from forestflow.control.counters import ServableCounters
from forestflow.control.deploy_warnings import deploy_warnings
from forestflow.control.deployer import Deployer, Loaded
from forestflow.control.evaluator import LiveServable, PolicyEvaluator, derived_events
from forestflow.control.events import (
    ContractCreated,
    ContractDeleted,
    ContractUpdated,
    Event,
    LoggingSettingsUpdated,
    PerformanceMetricsUpdated,
    PolicySettingsUpdated,
    ServableDeleted,
    ServableDeployed,
)
from forestflow.control.lineage import Lineage, ServableHistory, lineage_of, servable_history
from forestflow.control.routes import ContractRoute, ServableRoute
from forestflow.control.runner import ServableRunner
from forestflow.control.serve_request import ServeRequest
from forestflow.control.state import ContractRecord, RegistryState, ServableRecord
from forestflow.control.telemetry import Histogram
from forestflow.domain.codec import encode
from forestflow.domain.fqrv import FQRV, Contract
from forestflow.domain.metrics import ServableMetrics
from forestflow.domain.settings import (
    ContractSettings,
    LoggingSettings,
    PolicySettings,
    ServableSettings,
)
from forestflow.domain.signature import ModelSignature
from forestflow.errors import (
    ContractAlreadyExistsError,
    ContractNotEmptyError,
    CreateServableRequestInvalidError,
    ForestFlowError,
    ServableAlreadyExistsError,
    UnknownContract,
    UnknownServable,
)
from forestflow.store.base import Counters, HistoryEntry, Store

__all__ = ["ControlPlane", "Edit", "HistoryEntry", "MetricsChange"]

log = logging.getLogger(__name__)
T = TypeVar("T")


Edit = Callable[[T], T]
"""A settings update: from the current settings to the new ones. The control plane calls
it under its lock, between reading the current value and recording the new one, so two
concurrent updates never lose each other's changes; what it raises refuses the update."""


class MetricsChange(Protocol):
    """What feedback changed for one servable: values to set, counters to add to."""

    @property
    def values(self) -> Mapping[str, float]:
        """Metrics to set (merged over the existing ones)."""
        ...

    @property
    def increments(self) -> Mapping[str, float]:
        """Amounts to add to the existing values (missing counts as 0)."""
        ...


class ControlPlane:
    """Contracts and servables: commands, queries, evaluation and recovery."""

    def __init__(
        self,
        *,
        store: Store,
        runner: ServableRunner,
        cache: ArtifactCache,
        clock: Clock,
        storage: StorageOptions | None = None,
        snapshot_every: int = 1000,
        fetch_workers: int = 16,
        on_retire: Sequence[Callable[[FQRV], object]] = (),
    ) -> None:
        self._clock = clock
        # what else holds per-servable state (the feedback loop's rolling metrics): told
        # when a servable is deleted or expired, so a redeploy of its FQRV starts fresh
        self._on_retire = tuple(on_retire)
        self._log = CommandLog(store, clock, snapshot_every=snapshot_every)
        self.deployer = Deployer(
            runner, cache, storage or StorageOptions(), fetch_workers=fetch_workers
        )
        self._live: dict[FQRV, LiveServable] = {}
        self._evaluator = PolicyEvaluator(self._live)
        self._lock = asyncio.Lock()
        self._deploying: set[FQRV] = set()

    @property
    def _state(self) -> RegistryState:
        return self._log.state

    # ----------------------------------------------------------------- commands

    async def create_contract(
        self, contract: Contract, settings: ContractSettings, *, actor: str | None = None
    ) -> None:
        """Create an empty contract; 409 when it exists."""
        async with self._lock:
            if self._state.contract(contract) is not None:
                raise ContractAlreadyExistsError(contract)
            await self._command([ContractCreated(contract, settings)], [contract], actor)

    async def update_contract(
        self, contract: Contract, edit: Edit[ContractSettings], *, actor: str | None = None
    ) -> None:
        """Change a contract's router and expiration policy: `edit` turns the current
        settings into the new ones (SPEC §2.4: an update changes only what it names)."""
        async with self._lock:
            settings = edit(self._contract_record(contract).settings)
            await self._command([ContractUpdated(contract, settings)], [contract], actor)

    async def delete_contract(self, contract: Contract, *, actor: str | None = None) -> None:
        """Remove a contract that has no servables (and none being deployed)."""
        async with self._lock:
            record = self._contract_record(contract)
            pending = sum(1 for fqrv in self._deploying if fqrv.contract == contract)
            if record.servables or pending:
                raise ContractNotEmptyError(contract, len(record.servables) + pending)
            await self._log.append([ContractDeleted(contract)], actor)
            self._evaluator.forget(contract)

    async def update_policy(
        self, fqrv: FQRV, edit: Edit[PolicySettings], *, actor: str | None = None
    ) -> None:
        """Change a servable's validity rules and phase-in policy: `edit` turns the current
        policy settings into the new ones."""
        async with self._lock:
            policy = edit(self._servable_record(fqrv).settings.policy_settings)
            await self._command([PolicySettingsUpdated(fqrv, policy)], [fqrv.contract], actor)

    async def update_logging(
        self, fqrv: FQRV, edit: Edit[LoggingSettings], *, actor: str | None = None
    ) -> None:
        """Change a servable's logging settings (and so whether it shadows): `edit` turns
        the current logging settings into the new ones."""
        async with self._lock:
            settings = edit(self._servable_record(fqrv).settings.logging_settings)
            await self._command([LoggingSettingsUpdated(fqrv, settings)], [fqrv.contract], actor)

    async def update_metrics(
        self, fqrv: FQRV, metrics: Mapping[str, float], *, actor: str | None = None
    ) -> None:
        """Merge performance metrics set by an external evaluator (SPEC §6)."""
        await self._servable_command(PerformanceMetricsUpdated(fqrv, dict(metrics)), actor)

    async def record_feedback(
        self, updates: Mapping[FQRV, MetricsChange], *, actor: str | None = None
    ) -> None:
        """Persist what the feedback loop learned; servables gone since are skipped."""
        async with self._lock:
            events: list[Event] = [
                PerformanceMetricsUpdated(fqrv, dict(change.values), dict(change.increments))
                for fqrv, change in sorted(updates.items())
                if self._state.servable(fqrv) is not None
            ]
            if events:
                await self._command(events, {fqrv.contract for fqrv in updates}, actor)

    async def delete_servable(self, fqrv: FQRV, *, actor: str | None = None) -> None:
        """Unload a servable and forget it."""
        async with self._lock:
            self._servable_record(fqrv)
            # routes without it are published before it is unloaded, so no request picks it
            await self._command([ServableDeleted(fqrv)], [fqrv.contract], actor, retire=[fqrv])

    async def deploy(self, request: ServeRequest, *, actor: str | None = None) -> FQRV:
        """Fetch, load and register a servable; return its FQRV once the deploy is durable."""
        fqrv = request.fqrv or self.deployer.fqrv_hint(request.path)
        if fqrv is None:
            raise CreateServableRequestInvalidError(
                "no fqrv: give it in the body, in the path "
                "/servable/{org}/{project}/{n}/{release}, or deploy from a Git location "
                "tagged v<contract_number>.<release_version>",
                field="fqrv",
            )
        async with self._lock:
            if self._state.servable(fqrv) is not None or fqrv in self._deploying:
                raise ServableAlreadyExistsError(fqrv)
            self._deploying.add(fqrv)
        try:
            await self._deploy_reserved(fqrv, request, actor)
        finally:
            self._deploying.discard(fqrv)
        return fqrv

    async def _deploy_reserved(self, fqrv: FQRV, request: ServeRequest, actor: str | None) -> None:
        started = time.perf_counter()
        log.info("deploying %s from %s", fqrv, request.path)
        loaded = await self.deployer.load(fqrv, request)
        try:
            # counters left by an earlier servable of the same FQRV; before the deploy is
            # recorded, so that a failure here leaves nothing acknowledged
            await self._log.forget_counters(fqrv)
            async with self._lock:
                self._live[fqrv] = LiveServable(signature=loaded.signature)
                events = self._deploy_events(fqrv, request, loaded, actor)
                await self._command(events, [fqrv.contract], actor)
        except BaseException:
            if self._state.servable(fqrv) is None:  # the event never became durable
                self._live.pop(fqrv, None)
                await self.deployer.unload(fqrv)
            raise
        log.info("deployed %s in %.2f s", fqrv, time.perf_counter() - started)
        for warning in deploy_warnings(fqrv, request.servable_settings):
            log.warning(warning)

    def _deploy_events(
        self, fqrv: FQRV, request: ServeRequest, loaded: Loaded, actor: str | None
    ) -> list[Event]:
        events: list[Event] = []
        if self._state.contract(fqrv.contract) is None:
            settings = request.contract_settings or ContractSettings()
            events.append(ContractCreated(fqrv.contract, settings))
        flavor_json: dict[str, Any] = encode(loaded.flavor)
        events.append(
            ServableDeployed(
                fqrv=fqrv,
                source=loaded.fetched.source,
                flavor=flavor_json,
                settings=request.servable_settings,
                created_at_ms=self._clock.now_ms(),
                artifact_path=request.artifact_path,
                tags=dict(request.tags),
                digest=loaded.fetched.digest,
                deployed_by=actor,
                path=request.path,
            )
        )
        return events

    async def _servable_command(self, event: Event, actor: str | None) -> None:
        fqrv: FQRV = getattr(event, "fqrv")  # noqa: B009 - every servable event names one
        async with self._lock:
            self._servable_record(fqrv)
            await self._command([event], [fqrv.contract], actor)

    # ------------------------------------------------------------------ queries

    def owner(self, fqrv: FQRV) -> str | None:
        """The name of the token that deployed `fqrv` (None: auth was off); 404 if unknown."""
        return self._servable_record(fqrv).deployed_by

    def contracts(self) -> list[Contract]:
        """Every contract id, sorted."""
        return [record.contract for record in self._state.contracts()]

    def contract_settings(self, contract: Contract) -> ContractSettings:
        """A contract's settings; 404 when unknown."""
        return self._contract_record(contract).settings

    def releases(self, contract: Contract) -> list[FQRV]:
        """The FQRVs of a contract's servables in deployment order; 404 when unknown."""
        return [s.fqrv for s in self._contract_record(contract).servables]

    def servable_settings(self, fqrv: FQRV) -> ServableSettings:
        """A servable's settings; 404 when unknown."""
        return self._servable_record(fqrv).settings

    def lineage(self, fqrv: FQRV) -> Lineage:
        """Where a servable came from, and who deployed it when; 404 when unknown."""
        return lineage_of(self._servable_record(fqrv))

    def servables_settings(self, contract: Contract) -> list[tuple[FQRV, ServableSettings]]:
        """Settings of every servable of a contract."""
        return [(s.fqrv, s.settings) for s in self._contract_record(contract).servables]

    def metrics(self, contract: Contract) -> list[ServableMetrics]:
        """Current metrics of every servable of a contract; 404 when unknown."""
        records = self._contract_record(contract).servables
        return [self._evaluator.metrics_of(s) for s in records]

    def performance_metrics(self, fqrv: FQRV) -> dict[str, float]:
        """The servable's current performance metrics."""
        return dict(self._servable_record(fqrv).performance_metrics)

    def signature(self, fqrv: FQRV) -> ModelSignature:
        """The model signature of a loaded servable; 404 when unknown or not loaded."""
        self._servable_record(fqrv)
        live = self._live.get(fqrv)
        if live is None or live.signature is None:
            reason = (live.load_error if live else None) or "it is not loaded"
            raise UnknownServable(fqrv, f"could not be loaded: {reason}")
        return live.signature

    def route(self, contract: Contract) -> ContractRoute:
        """The serving view of a contract as of the last evaluation; 404 when unknown."""
        route = self._evaluator.route(contract)
        if route is None:
            raise UnknownContract(contract)
        return route

    def servable_route(self, fqrv: FQRV) -> ServableRoute:
        """The serving view of one loaded servable; 404 when unknown or not loaded."""
        route = self._evaluator.route(fqrv.contract)
        servable = route.servables.get(fqrv) if route else None
        if servable is None:
            self.signature(fqrv)  # raises the most precise 404
            raise UnknownServable(fqrv)
        return servable

    def history(self, *, before_seq: int | None = None, limit: int = 100) -> list[HistoryEntry]:
        """Recorded commands and automatic changes, newest first, with who made them."""
        return self._log.history(before_seq=before_seq, limit=limit)

    async def contract_history(
        self, contract: Contract, *, before_seq: int | None = None, limit: int = 100
    ) -> list[ServableHistory]:
        """Every servable the contract ever had, newest deploy first, with how each left;
        404 for a contract that neither exists nor ever had a servable."""
        # the state before the history: a removal recorded meanwhile is in the history
        record, errors = self._state.contract(contract), self.load_errors()
        lifetimes = await self._log.lifetimes(contract, before_seq=before_seq, limit=limit)
        if not lifetimes and record is None and not await self._log.lifetimes(contract, limit=1):
            raise UnknownContract(contract)
        return [servable_history(lifetime, record, errors.get) for lifetime in lifetimes]

    def store_write_seconds(self) -> Mapping[str, Histogram]:
        """How long each state-store write took so far, by operation (for `/metrics`)."""
        return self._log.write_seconds

    def load_errors(self) -> dict[FQRV, str]:
        """Servables that are recorded but could not be loaded, with the reason."""
        return {f: live.load_error for f, live in self._live.items() if live.load_error}

    # --------------------------------------------------------------- evaluation

    async def evaluate(self) -> None:
        """One evaluation pass over every contract (SPEC §1.1): validity, phase-in,
        expiration, routing. Newly valid and expired servables are recorded durably."""
        async with self._lock:
            await self._command([], self.contracts())

    async def _command(
        self,
        events: Sequence[Event],
        contracts: Iterable[Contract],
        actor: str | None = None,
        *,
        retire: Sequence[FQRV] = (),
    ) -> None:
        """Record `events` and what they change in the policies of `contracts`, in one
        transaction; then publish those contracts' routes and unload what left them.
        The caller holds the lock."""
        after = self._state.copy()
        for event in events:
            after.apply(event)
        records = [r for c in sorted(set(contracts)) if (r := after.contract(c)) is not None]
        now = self._clock.now_ms()
        results = self._evaluator.evaluate(records, now)
        derived = derived_events(records, results, now)
        if events or derived:
            await self._log.append([*events, *derived], actor)
        # publish routes without the removed servables before unloading them
        self._evaluator.publish([self._contract_record(r.contract) for r in records], results)
        expired = sorted(f for result in results.values() for f in result.expired)
        for fqrv in expired:
            log.info("expired %s", fqrv)
        for fqrv in [*retire, *expired]:
            await self._retire(fqrv)

    # ----------------------------------------------------------------- counters

    async def flush_counters(self) -> None:
        """Write changed scoring counters to the store (a crash may lose the last few seconds)."""
        async with self._lock:
            dirty = {f: live.counters for f, live in self._live.items() if live.counters.dirty}
            if not dirty:
                return
            rows = {f: Counters(c.score_count, c.shade_count) for f, c in dirty.items()}
            for counters in dirty.values():
                counters.dirty = False
            await self._log.write_counters(rows)

    # ----------------------------------------------------------------- recovery

    async def recover(self) -> None:
        """Rebuild state from the store, reload every servable, then evaluate once."""
        state = await self._log.replay()
        for fqrv, row in (await self._log.read_counters()).items():
            self._live[fqrv] = LiveServable(ServableCounters(row.score_count, row.shade_count))
        servables = state.servables()
        await self.deployer.remove_orphans(s.fqrv for s in servables)
        log.info("recovered %d contract(s), %d servable(s)", len(state.contracts()), len(servables))
        for servable in servables:
            await self._reload(servable)
        await self.evaluate()

    async def _reload(self, servable: ServableRecord) -> None:
        live = self._live.setdefault(servable.fqrv, LiveServable())
        try:
            live.signature = await self.deployer.reload(servable)
            live.load_error = None
        except Exception as error:
            reason = error.describe() if isinstance(error, ForestFlowError) else repr(error)
            live.load_error = reason
            log.error("could not reload servable %s: %s", servable.fqrv, reason)

    def close(self) -> None:
        """Stop the fetch and store threads once their current work is done."""
        self.deployer.close()
        self._log.close()

    # ---------------------------------------------------------------- internals

    async def _retire(self, fqrv: FQRV) -> None:
        """Unload a servable whose removal is durable, and clean up after it."""
        await self.deployer.unload(fqrv)
        try:
            await self._log.forget_counters(fqrv)
        except Exception as error:  # the removal is durable; a redeploy clears them too
            log.warning("could not delete the counters of %s: %s", fqrv, error)
        self._live.pop(fqrv, None)
        for forget in self._on_retire:
            try:
                forget(fqrv)
            except Exception:  # the removal is durable: report, do not fail the command
                log.exception("could not forget the state of %s", fqrv)

    def _contract_record(self, contract: Contract) -> ContractRecord:
        record = self._state.contract(contract)
        if record is None:
            raise UnknownContract(contract)
        return record

    def _servable_record(self, fqrv: FQRV) -> ServableRecord:
        if self._state.contract(fqrv.contract) is None:
            raise UnknownContract(fqrv.contract)
        record = self._state.servable(fqrv)
        if record is None:
            raise UnknownServable(fqrv)
        return record
