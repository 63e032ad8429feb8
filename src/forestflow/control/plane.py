"""The control plane: commands → durable events → state, and the evaluation pass.

Every command is validated, appended to the store as events and only then applied to
the in-memory state, so an acknowledged change is never lost. Deploys fetch and load
the model *before* their event is written: a deploy that fails or crashes half-way
leaves nothing behind but files the next recovery removes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from forestflow.artifacts.base import StorageOptions, fetcher_for
from forestflow.artifacts.cache import ArtifactCache
from forestflow.clock import Clock
from forestflow.control.counters import ServableCounters
from forestflow.control.events import (
    ContractCreated,
    ContractDeleted,
    ContractUpdated,
    Event,
    LoggingSettingsUpdated,
    PerformanceMetricsUpdated,
    PolicySettingsUpdated,
    ServableBecameValid,
    ServableDeleted,
    ServableDeployed,
    ServableExpired,
    from_record,
    to_record,
)
from forestflow.control.routes import ContractRoute, ServableRoute
from forestflow.control.runner import ServableRunner
from forestflow.control.serve_request import ServeRequest
from forestflow.control.state import ContractRecord, RegistryState, ServableRecord
from forestflow.domain.codec import encode
from forestflow.domain.evaluation import ContractEvaluation, evaluate_contract
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
from forestflow.flavors.base import Flavor, parse_flavor
from forestflow.store.base import Counters, Snapshot, Store

log = logging.getLogger(__name__)


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


def servable_key(fqrv: FQRV) -> str:
    """A stable string key for `fqrv` (names cannot contain '/')."""
    c = fqrv.contract
    return f"{c.organization}/{c.project}/{c.contract_number}/{fqrv.release_version}"


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
    ) -> None:
        self._store = store
        self._runner = runner
        self._cache = cache
        self._clock = clock
        self._storage = storage or StorageOptions()
        self._snapshot_every = snapshot_every
        self._state = RegistryState()
        self._lock = asyncio.Lock()
        self._deploying: set[FQRV] = set()
        self._counters: dict[FQRV, ServableCounters] = {}
        self._signatures: dict[FQRV, ModelSignature] = {}
        self._load_errors: dict[FQRV, str] = {}
        self._phase_in: dict[FQRV, int] = {}
        self._routes: dict[Contract, ContractRoute] = {}
        self._events_since_snapshot = 0

    # ----------------------------------------------------------------- commands

    async def create_contract(self, contract: Contract, settings: ContractSettings) -> None:
        """Create an empty contract; 409 when it exists."""
        async with self._lock:
            if self._state.contract(contract) is not None:
                raise ContractAlreadyExistsError(contract)
            await self._commit([ContractCreated(contract, settings)])
        await self.evaluate()

    async def update_contract(self, contract: Contract, settings: ContractSettings) -> None:
        """Replace a contract's router and expiration policy."""
        async with self._lock:
            self._contract_record(contract)
            await self._commit([ContractUpdated(contract, settings)])
        await self.evaluate()

    async def delete_contract(self, contract: Contract) -> None:
        """Remove a contract that has no servables (and none being deployed)."""
        async with self._lock:
            record = self._contract_record(contract)
            pending = sum(1 for fqrv in self._deploying if fqrv.contract == contract)
            if record.servables or pending:
                raise ContractNotEmptyError(contract, len(record.servables) + pending)
            await self._commit([ContractDeleted(contract)])
            self._routes.pop(contract, None)

    async def update_policy(self, fqrv: FQRV, policy: PolicySettings) -> None:
        """Replace a servable's validity rules and phase-in policy."""
        async with self._lock:
            self._servable_record(fqrv)
            await self._commit([PolicySettingsUpdated(fqrv, policy)])
        await self.evaluate()

    async def update_logging(self, fqrv: FQRV, logging_settings: LoggingSettings) -> None:
        """Replace a servable's logging settings (and so whether it shadows)."""
        async with self._lock:
            self._servable_record(fqrv)
            await self._commit([LoggingSettingsUpdated(fqrv, logging_settings)])
        await self.evaluate()

    async def update_metrics(self, fqrv: FQRV, metrics: Mapping[str, float]) -> None:
        """Merge performance metrics set by an external evaluator (SPEC §6)."""
        async with self._lock:
            self._servable_record(fqrv)
            await self._commit([PerformanceMetricsUpdated(fqrv, dict(metrics))])
        await self.evaluate()

    async def record_feedback(self, updates: Mapping[FQRV, MetricsChange]) -> None:
        """Persist what the feedback loop learned; servables gone since are skipped."""
        async with self._lock:
            events: list[Event] = [
                PerformanceMetricsUpdated(fqrv, dict(change.values), dict(change.increments))
                for fqrv, change in sorted(updates.items())
                if self._state.servable(fqrv) is not None
            ]
            if not events:
                return
            await self._commit(events)
        await self.evaluate()

    async def delete_servable(self, fqrv: FQRV) -> None:
        """Unload a servable and forget it."""
        async with self._lock:
            self._servable_record(fqrv)
            await self._commit([ServableDeleted(fqrv)])
            await self._evaluate_locked()  # routes without it first, so no request picks it
            await self._retire(fqrv)

    async def deploy(self, request: ServeRequest) -> FQRV:
        """Fetch, load and register a servable; return its FQRV once the deploy is durable."""
        fqrv = request.fqrv or fetcher_for(request.path, self._storage).fqrv_hint(request.path)
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
            await self._deploy_reserved(fqrv, request)
        finally:
            self._deploying.discard(fqrv)
        await self.evaluate()
        return fqrv

    async def _deploy_reserved(self, fqrv: FQRV, request: ServeRequest) -> None:
        started = time.perf_counter()
        log.info("deploying %s from %s", fqrv, request.path)
        source = await self._fetch(fqrv, request.path, request.artifact_path)
        if source != request.path:
            log.info("%s resolved to %s", request.path, source)
        directory = self._cache.directory(fqrv)
        try:
            flavor = await asyncio.to_thread(request.resolve_flavor, directory)
            log.info("loading %s with flavor %s", fqrv, flavor.wire_name)
            signature = await self._runner.start(fqrv, flavor, directory)
        except BaseException:
            await asyncio.to_thread(self._cache.remove, fqrv)
            raise
        try:
            async with self._lock:
                await self._commit(self._deploy_events(fqrv, request, flavor, source))
                self._signatures[fqrv] = signature
                self._counters[fqrv] = ServableCounters()
                await asyncio.to_thread(self._store.delete_counters, servable_key(fqrv))
        except BaseException:
            if self._state.servable(fqrv) is None:  # the event never became durable
                await self._runner.stop(fqrv)
                await asyncio.to_thread(self._cache.remove, fqrv)
            raise
        log.info("deployed %s in %.2f s", fqrv, time.perf_counter() - started)

    def _deploy_events(
        self, fqrv: FQRV, request: ServeRequest, flavor: Flavor, source: str
    ) -> list[Event]:
        events: list[Event] = []
        if self._state.contract(fqrv.contract) is None:
            settings = request.contract_settings or ContractSettings()
            events.append(ContractCreated(fqrv.contract, settings))
        flavor_json: dict[str, Any] = encode(flavor)
        events.append(
            ServableDeployed(
                fqrv=fqrv,
                source=source,
                flavor=flavor_json,
                settings=request.servable_settings,
                created_at_ms=self._clock.now_ms(),
                artifact_path=request.artifact_path,
                tags=dict(request.tags),
            )
        )
        return events

    # ------------------------------------------------------------------ queries

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

    def servables_settings(self, contract: Contract) -> list[tuple[FQRV, ServableSettings]]:
        """Settings of every servable of a contract."""
        return [(s.fqrv, s.settings) for s in self._contract_record(contract).servables]

    def metrics(self, contract: Contract) -> list[ServableMetrics]:
        """Current metrics of every servable of a contract; 404 when unknown."""
        return [self._metrics_of(s) for s in self._contract_record(contract).servables]

    def performance_metrics(self, fqrv: FQRV) -> dict[str, float]:
        """The servable's current performance metrics."""
        return dict(self._servable_record(fqrv).performance_metrics)

    def signature(self, fqrv: FQRV) -> ModelSignature:
        """The model signature of a loaded servable; 404 when unknown or not loaded."""
        self._servable_record(fqrv)
        if fqrv not in self._signatures:
            reason = self._load_errors.get(fqrv, "it is not loaded")
            raise UnknownServable(fqrv, f"could not be loaded: {reason}")
        return self._signatures[fqrv]

    def route(self, contract: Contract) -> ContractRoute:
        """The serving view of a contract as of the last evaluation; 404 when unknown."""
        route = self._routes.get(contract)
        if route is None:
            raise UnknownContract(contract)
        return route

    def servable_route(self, fqrv: FQRV) -> ServableRoute:
        """The serving view of one loaded servable; 404 when unknown or not loaded."""
        route = self._routes.get(fqrv.contract)
        servable = route.servables.get(fqrv) if route else None
        if servable is None:
            self.signature(fqrv)  # raises the most precise 404
            raise UnknownServable(fqrv)
        return servable

    def load_errors(self) -> dict[FQRV, str]:
        """Servables that are recorded but could not be loaded, with the reason."""
        return dict(self._load_errors)

    # --------------------------------------------------------------- evaluation

    async def evaluate(self) -> None:
        """One evaluation pass over every contract (SPEC §1.1): validity, phase-in,
        expiration, routing. Newly valid and expired servables are recorded durably."""
        async with self._lock:
            await self._evaluate_locked()

    async def _evaluate_locked(self) -> None:
        now = self._clock.now_ms()
        results: dict[Contract, ContractEvaluation] = {}
        events: list[Event] = []
        for record in self._state.contracts():
            result = self._evaluate(record, now)
            results[record.contract] = result
            events += [ServableBecameValid(f, now) for f in sorted(result.became_valid)]
            events += [ServableExpired(f, now) for f in sorted(result.expired)]
        if events:
            await self._commit(events)
        for result in results.values():
            self._phase_in.update({m.fqrv: m.current_phase_in_pct for m in result.metrics})
        # publish routes without the expired servables before unloading them
        self._publish(results)
        for fqrv in sorted(f for result in results.values() for f in result.expired):
            log.info("expired %s", fqrv)
            await self._retire(fqrv)

    def _evaluate(self, record: ContractRecord, now: int) -> ContractEvaluation:
        loaded = [s for s in record.servables if s.fqrv in self._signatures]
        inputs = [(self._metrics_of(s), s.settings.policy_settings) for s in loaded]
        return evaluate_contract(record.settings, inputs, now)

    def _publish(self, results: dict[Contract, ContractEvaluation]) -> None:
        routes: dict[Contract, ContractRoute] = {}
        for contract, result in results.items():
            record = self._contract_record(contract)
            servables = {
                s.fqrv: ServableRoute(s.fqrv, s.settings.logging_settings, self._counter(s.fqrv))
                for s in record.servables
                if s.fqrv in self._signatures
            }
            shadows = tuple(r for r in servables.values() if r.shadows)
            routes[contract] = ContractRoute(contract, result.plan, servables, shadows)
        self._routes = routes

    # ----------------------------------------------------------------- counters

    async def flush_counters(self) -> None:
        """Write changed scoring counters to the store (a crash may lose the last few seconds)."""
        async with self._lock:
            dirty = {f: c for f, c in self._counters.items() if c.dirty}
            if not dirty:
                return
            rows = {
                servable_key(f): Counters(c.score_count, c.shade_count) for f, c in dirty.items()
            }
            for counters in dirty.values():
                counters.dirty = False
            await asyncio.to_thread(self._store.write_counters, rows)

    # ----------------------------------------------------------------- recovery

    async def recover(self) -> None:
        """Rebuild state from the store, reload every servable, then evaluate once."""
        snapshot = await asyncio.to_thread(self._store.latest_snapshot)
        state = RegistryState.from_snapshot(snapshot.payload) if snapshot else RegistryState()
        after = snapshot.seq if snapshot else 0
        stored = await asyncio.to_thread(lambda: list(self._store.events(after)))
        for event in stored:
            state.apply(from_record(event.kind, event.payload))
        self._state = state
        counters = await asyncio.to_thread(self._store.read_counters)
        servables = state.servables()
        for servable in servables:
            row = counters.get(servable_key(servable.fqrv))
            if row is not None:
                self._counters[servable.fqrv] = ServableCounters(row.score_count, row.shade_count)
        await asyncio.to_thread(self._cache.remove_orphans, [s.fqrv for s in servables])
        log.info("recovered %d contract(s), %d servable(s)", len(state.contracts()), len(servables))
        for servable in servables:
            await self._reload(servable)
        await self.evaluate()

    async def _reload(self, servable: ServableRecord) -> None:
        fqrv = servable.fqrv
        try:
            flavor = parse_flavor(servable.flavor)
            if not self._cache.has(fqrv):
                log.warning(
                    "artifact copy of %s is missing; fetching %s again", fqrv, servable.source
                )
                await self._fetch(fqrv, servable.source, servable.artifact_path)
            directory = self._cache.directory(fqrv)
            self._signatures[fqrv] = await self._runner.start(fqrv, flavor, directory)
            self._load_errors.pop(fqrv, None)
        except Exception as error:
            reason = error.describe() if isinstance(error, ForestFlowError) else repr(error)
            self._load_errors[fqrv] = reason
            log.error("could not reload servable %s: %s", fqrv, reason)

    # ---------------------------------------------------------------- internals

    async def _commit(self, events: Sequence[Event]) -> None:
        """Append `events` durably, then apply them. The caller holds the lock."""
        records = [to_record(event) for event in events]
        seq = await asyncio.to_thread(self._store.append, records, self._clock.now_ms())
        for event in events:
            self._state.apply(event)
        self._events_since_snapshot += len(events)
        if self._events_since_snapshot >= self._snapshot_every:
            snapshot = Snapshot(seq, self._state.to_snapshot())
            await asyncio.to_thread(self._store.write_snapshot, snapshot)
            self._events_since_snapshot = 0

    async def _fetch(self, fqrv: FQRV, source: str, artifact_path: str | None) -> str:
        """Copy the artifact at `source` into the cache, atomically; return the location
        that names exactly what was copied (`source` unless it was an alias)."""
        fetcher = fetcher_for(source, self._storage)
        pinned: list[str | None] = []

        def fill(target: Path) -> None:
            pinned.append(fetcher.fetch(source, artifact_path, target))

        await asyncio.to_thread(self._cache.install, fqrv, fill)
        return pinned[0] or source

    async def _retire(self, fqrv: FQRV) -> None:
        """Unload a servable whose removal is durable, and clean up after it."""
        await self._runner.stop(fqrv)
        await asyncio.to_thread(self._cache.remove, fqrv)
        await asyncio.to_thread(self._store.delete_counters, servable_key(fqrv))
        self._signatures.pop(fqrv, None)
        self._counters.pop(fqrv, None)
        self._phase_in.pop(fqrv, None)
        self._load_errors.pop(fqrv, None)

    def _counter(self, fqrv: FQRV) -> ServableCounters:
        return self._counters.setdefault(fqrv, ServableCounters())

    def _metrics_of(self, servable: ServableRecord) -> ServableMetrics:
        counters = self._counter(servable.fqrv)
        return ServableMetrics(
            fqrv=servable.fqrv,
            created_at_ms=servable.created_at_ms,
            became_valid_at_ms=servable.became_valid_at_ms,
            score_count=counters.score_count,
            shade_count=counters.shade_count,
            current_phase_in_pct=self._phase_in.get(servable.fqrv, 0),
            performance_metrics=dict(servable.performance_metrics),
            shadow_dropped_count=counters.shadow_dropped,
            shadow_failed_count=counters.shadow_failed,
        )

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
