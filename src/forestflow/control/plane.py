"""The control plane: commands → durable events → state, and the evaluation pass.

Every command is validated, appended to the store as events and only then applied to
the in-memory state, so an acknowledged change is never lost. Deploys fetch and load
the model *before* their event is written: a deploy that fails or crashes half-way
leaves nothing behind but files the next recovery removes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

from forestflow.artifacts.base import StorageOptions, fetcher_for
from forestflow.artifacts.cache import ArtifactCache
from forestflow.artifacts.digest import artifact_digest
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
    ArtifactChangedError,
    ContractAlreadyExistsError,
    ContractNotEmptyError,
    CreateServableRequestInvalidError,
    ForestFlowError,
    ServableAlreadyExistsError,
    UnknownContract,
    UnknownServable,
)
from forestflow.flavors.base import Flavor, parse_flavor
from forestflow.store.base import Counters, HistoryEntry, Snapshot, Store

__all__ = ["ControlPlane", "HistoryEntry", "MetricsChange", "servable_key"]

log = logging.getLogger(__name__)

T = TypeVar("T")


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
        fetch_workers: int = 16,
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
        # Fetches may take minutes (a slow remote); they get threads of their own so that
        # they never hold up the store, model loads or each other beyond `fetch_workers`.
        self._fetch_pool = ThreadPoolExecutor(fetch_workers, thread_name_prefix="forestflow-fetch")
        # One thread for the store: it serialises access anyway, and is never queued
        # behind a fetch.
        self._store_pool = ThreadPoolExecutor(1, thread_name_prefix="forestflow-store")

    # ----------------------------------------------------------------- commands

    async def create_contract(
        self, contract: Contract, settings: ContractSettings, *, actor: str | None = None
    ) -> None:
        """Create an empty contract; 409 when it exists."""
        async with self._lock:
            if self._state.contract(contract) is not None:
                raise ContractAlreadyExistsError(contract)
            await self._command([ContractCreated(contract, settings)], contract, actor)

    async def update_contract(
        self, contract: Contract, settings: ContractSettings, *, actor: str | None = None
    ) -> None:
        """Replace a contract's router and expiration policy."""
        async with self._lock:
            self._contract_record(contract)
            await self._command([ContractUpdated(contract, settings)], contract, actor)

    async def delete_contract(self, contract: Contract, *, actor: str | None = None) -> None:
        """Remove a contract that has no servables (and none being deployed)."""
        async with self._lock:
            record = self._contract_record(contract)
            pending = sum(1 for fqrv in self._deploying if fqrv.contract == contract)
            if record.servables or pending:
                raise ContractNotEmptyError(contract, len(record.servables) + pending)
            await self._append([ContractDeleted(contract)], actor)
            self._routes = {c: r for c, r in self._routes.items() if c != contract}

    async def update_policy(
        self, fqrv: FQRV, policy: PolicySettings, *, actor: str | None = None
    ) -> None:
        """Replace a servable's validity rules and phase-in policy."""
        async with self._lock:
            self._servable_record(fqrv)
            await self._command([PolicySettingsUpdated(fqrv, policy)], fqrv.contract, actor)

    async def update_logging(
        self, fqrv: FQRV, logging_settings: LoggingSettings, *, actor: str | None = None
    ) -> None:
        """Replace a servable's logging settings (and so whether it shadows)."""
        async with self._lock:
            self._servable_record(fqrv)
            event = LoggingSettingsUpdated(fqrv, logging_settings)
            await self._command([event], fqrv.contract, actor)

    async def update_metrics(
        self, fqrv: FQRV, metrics: Mapping[str, float], *, actor: str | None = None
    ) -> None:
        """Merge performance metrics set by an external evaluator (SPEC §6)."""
        async with self._lock:
            self._servable_record(fqrv)
            event = PerformanceMetricsUpdated(fqrv, dict(metrics))
            await self._command([event], fqrv.contract, actor)

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
            if not events:
                return
            contracts = {fqrv.contract for fqrv in updates}
            await self._command(events, contracts, actor)

    async def delete_servable(self, fqrv: FQRV, *, actor: str | None = None) -> None:
        """Unload a servable and forget it."""
        async with self._lock:
            self._servable_record(fqrv)
            # routes without it are published before it is unloaded, so no request picks it
            await self._command([ServableDeleted(fqrv)], fqrv.contract, actor, retire=[fqrv])

    def owner(self, fqrv: FQRV) -> str | None:
        """The name of the token that deployed `fqrv` (None: auth was off); 404 if unknown."""
        return self._servable_record(fqrv).deployed_by

    async def deploy(self, request: ServeRequest, *, actor: str | None = None) -> FQRV:
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
            await self._deploy_reserved(fqrv, request, actor)
        finally:
            self._deploying.discard(fqrv)
        return fqrv

    async def _deploy_reserved(self, fqrv: FQRV, request: ServeRequest, actor: str | None) -> None:
        started = time.perf_counter()
        log.info("deploying %s from %s", fqrv, request.path)
        source, digest = await self._fetch(fqrv, request.path, request.artifact_path)
        if source != request.path:
            log.info("%s resolved to %s", request.path, source)
        directory = self._cache.directory(fqrv)
        try:
            flavor = await asyncio.to_thread(request.resolve_flavor, directory)
            log.info("loading %s with flavor %s", fqrv, flavor.wire_name)
            signature = await self._runner.start(fqrv, flavor, directory)
        except BaseException:
            await self._in_pool(self._fetch_pool, self._cache.remove, fqrv)
            raise
        try:
            # counters left by an earlier servable of the same FQRV; before the deploy is
            # recorded, so that a failure here leaves nothing acknowledged
            await self._in_store(self._store.delete_counters, servable_key(fqrv))
            async with self._lock:
                events = self._deploy_events(fqrv, request, flavor, (source, digest), actor)
                self._signatures[fqrv] = signature
                self._counters[fqrv] = ServableCounters()
                try:
                    await self._command(events, fqrv.contract, actor)
                except BaseException:
                    if self._state.servable(fqrv) is None:
                        self._signatures.pop(fqrv, None)
                        self._counters.pop(fqrv, None)
                    raise
        except BaseException:
            if self._state.servable(fqrv) is None:  # the event never became durable
                await self._runner.stop(fqrv)
                await self._in_pool(self._fetch_pool, self._cache.remove, fqrv)
            raise
        log.info("deployed %s in %.2f s", fqrv, time.perf_counter() - started)

    def _deploy_events(
        self,
        fqrv: FQRV,
        request: ServeRequest,
        flavor: Flavor,
        fetched: tuple[str, str],
        actor: str | None,
    ) -> list[Event]:
        source, digest = fetched
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
                digest=digest,
                deployed_by=actor,
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

    def history(self, *, before_seq: int | None = None, limit: int = 100) -> list[HistoryEntry]:
        """Recorded commands and automatic changes, newest first, with who made them."""
        return self._store.history(before_seq=before_seq, limit=limit)

    def load_errors(self) -> dict[FQRV, str]:
        """Servables that are recorded but could not be loaded, with the reason."""
        return dict(self._load_errors)

    # --------------------------------------------------------------- evaluation

    async def evaluate(self) -> None:
        """One evaluation pass over every contract (SPEC §1.1): validity, phase-in,
        expiration, routing. Newly valid and expired servables are recorded durably."""
        async with self._lock:
            await self._command([], [record.contract for record in self._state.contracts()])

    async def _command(
        self,
        events: Sequence[Event],
        contracts: Contract | Iterable[Contract],
        actor: str | None = None,
        *,
        retire: Sequence[FQRV] = (),
    ) -> None:
        """Record `events` and what they change in the policies of `contracts`, in one
        transaction; then publish those contracts' routes and unload what left them.
        The caller holds the lock."""
        touched = {contracts} if isinstance(contracts, Contract) else set(contracts)
        after = self._state.copy()
        for event in events:
            after.apply(event)
        now = self._clock.now_ms()
        results: dict[Contract, ContractEvaluation] = {}
        derived: list[Event] = []
        for contract in sorted(touched):
            record = after.contract(contract)
            if record is None:
                continue
            result = self._evaluate(record, now)
            results[contract] = result
            derived += [ServableBecameValid(f, now) for f in sorted(result.became_valid)]
            derived += [ServableExpired(f, now) for f in sorted(result.expired)]
        if events or derived:
            await self._append([*events, *derived], actor)
        for result in results.values():
            self._phase_in.update({m.fqrv: m.current_phase_in_pct for m in result.metrics})
        # publish routes without the removed servables before unloading them
        self._publish(results)
        expired = sorted(f for result in results.values() for f in result.expired)
        for fqrv in expired:
            log.info("expired %s", fqrv)
        for fqrv in [*retire, *expired]:
            await self._retire(fqrv)

    def _evaluate(self, record: ContractRecord, now: int) -> ContractEvaluation:
        loaded = [s for s in record.servables if s.fqrv in self._signatures]
        inputs = [(self._metrics_of(s), s.settings.policy_settings) for s in loaded]
        return evaluate_contract(record.settings, inputs, now)

    def _publish(self, results: dict[Contract, ContractEvaluation]) -> None:
        routes = dict(self._routes)
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
            await self._in_store(self._store.write_counters, rows)

    # ----------------------------------------------------------------- recovery

    async def recover(self) -> None:
        """Rebuild state from the store, reload every servable, then evaluate once."""
        snapshot = await self._in_store(self._store.latest_snapshot)
        state = RegistryState.from_snapshot(snapshot.payload) if snapshot else RegistryState()
        after = snapshot.seq if snapshot else 0
        stored = await self._in_store(lambda: list(self._store.events(after)))
        for event in stored:
            state.apply(from_record(event.kind, event.payload))
        self._state = state
        counters = await self._in_store(self._store.read_counters)
        servables = state.servables()
        for servable in servables:
            row = counters.get(servable_key(servable.fqrv))
            if row is not None:
                self._counters[servable.fqrv] = ServableCounters(row.score_count, row.shade_count)
        await self._in_pool(
            self._fetch_pool, self._cache.remove_orphans, [s.fqrv for s in servables]
        )
        log.info("recovered %d contract(s), %d servable(s)", len(state.contracts()), len(servables))
        for servable in servables:
            await self._reload(servable)
        await self.evaluate()

    async def _reload(self, servable: ServableRecord) -> None:
        fqrv = servable.fqrv
        try:
            flavor = parse_flavor(servable.flavor)
            await self._verified_copy(servable)
            directory = self._cache.directory(fqrv)
            self._signatures[fqrv] = await self._runner.start(fqrv, flavor, directory)
            self._load_errors.pop(fqrv, None)
        except Exception as error:
            reason = error.describe() if isinstance(error, ForestFlowError) else repr(error)
            self._load_errors[fqrv] = reason
            log.error("could not reload servable %s: %s", fqrv, reason)

    async def _verified_copy(self, servable: ServableRecord) -> None:
        """Make sure the local copy holds what was deployed: fetch it again from its
        source when it is missing or damaged, and refuse a source that changed."""
        fqrv = servable.fqrv
        if self._cache.has(fqrv):
            if servable.digest is None:  # recorded before digests existed
                return
            directory = self._cache.directory(fqrv)
            found = await self._in_pool(self._fetch_pool, artifact_digest, directory)
            if found == servable.digest:
                return
            log.warning("artifact copy of %s is damaged; fetching %s again", fqrv, servable.source)
        else:
            log.warning("artifact copy of %s is missing; fetching %s again", fqrv, servable.source)
        _, fetched = await self._fetch(fqrv, servable.source, servable.artifact_path)
        if servable.digest is not None and fetched != servable.digest:
            await self._in_pool(self._fetch_pool, self._cache.remove, fqrv)
            raise ArtifactChangedError(servable.source, servable.digest, fetched)

    # ---------------------------------------------------------------- internals

    async def _in_store(self, call: Callable[..., T], *args: Any) -> T:
        return await self._in_pool(self._store_pool, call, *args)

    @staticmethod
    async def _in_pool(pool: ThreadPoolExecutor, call: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(pool, functools.partial(call, *args))

    def close(self) -> None:
        """Stop the fetch and store threads once their current work is done."""
        self._fetch_pool.shutdown(wait=False, cancel_futures=True)
        self._store_pool.shutdown(wait=True)

    async def _append(self, events: Sequence[Event], actor: str | None) -> None:
        """Append `events` durably, then apply them. The caller holds the lock."""
        records = [to_record(event) for event in events]
        seq = await self._in_store(self._store.append, records, self._clock.now_ms(), actor)
        for event in events:
            self._state.apply(event)
        self._events_since_snapshot += len(events)
        if self._events_since_snapshot >= self._snapshot_every:
            snapshot = Snapshot(seq, self._state.to_snapshot())
            try:
                await self._in_store(self._store.write_snapshot, snapshot)
            except Exception as error:  # the events are durable: the command succeeded
                log.warning("could not write a state snapshot (retried later): %s", error)
            else:
                self._events_since_snapshot = 0

    async def _fetch(self, fqrv: FQRV, source: str, artifact_path: str | None) -> tuple[str, str]:
        """Copy the artifact at `source` into the cache, atomically; return the location
        that names exactly what was copied (`source` unless it was an alias) and the
        copy's content digest."""
        fetcher = fetcher_for(source, self._storage)
        fetched: list[tuple[str | None, str]] = []

        def fill(target: Path) -> None:
            pinned = fetcher.fetch(source, artifact_path, target)
            fetched.append((pinned, artifact_digest(target)))

        await self._in_pool(self._fetch_pool, self._cache.install, fqrv, fill)
        pinned, digest = fetched[0]
        return pinned or source, digest

    async def _retire(self, fqrv: FQRV) -> None:
        """Unload a servable whose removal is durable, and clean up after it."""
        await self._runner.stop(fqrv)
        await self._in_pool(self._fetch_pool, self._cache.remove, fqrv)
        try:
            await self._in_store(self._store.delete_counters, servable_key(fqrv))
        except Exception as error:  # the removal is durable; a redeploy clears them too
            log.warning("could not delete the counters of %s: %s", fqrv, error)
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
            state="failed" if servable.fqrv in self._load_errors else "loaded",
            failure=self._load_errors.get(servable.fqrv),
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
