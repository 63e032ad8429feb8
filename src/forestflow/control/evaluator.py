"""Evaluating policies: validity, phase-in, expiration and routing of contracts.

The rules themselves are pure (`domain.evaluation`); this applies them to the recorded
servables that are loaded, turns what changed into events, and publishes the routes the
serving layer reads. A contract's route is replaced whole, never mutated, so a request
sees either the old or the new route.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from forestflow.control.counters import ServableCounters
from forestflow.control.events import Event, ServableBecameValid, ServableExpired
from forestflow.control.routes import ContractRoute, ServableRoute
from forestflow.control.state import ContractRecord, ServableRecord
from forestflow.domain.evaluation import ContractEvaluation, evaluate_contract
from forestflow.domain.fqrv import FQRV, Contract
from forestflow.domain.metrics import ServableMetrics
from forestflow.domain.settings import MissingValues
from forestflow.domain.signature import ModelSignature


@dataclass(slots=True)
class LiveServable:
    """What the server holds for one recorded servable beyond its durable record."""

    counters: ServableCounters = field(default_factory=ServableCounters)
    signature: ModelSignature | None = None
    """The loaded model's signature; None while it is not loaded."""
    load_error: str | None = None
    """Why it could not be loaded, when it could not."""
    phase_in_pct: int = 0
    """Its phase-in as of the last evaluation."""
    valid: bool | None = None
    """Whether it was valid at the last evaluation; None before the first one. In memory
    only: after a restart a rule that leaves validity as it was falls back on
    `becameValidAtMS` for the first pass (`PerformanceBasedValidity` below `minSamples`)."""


def derived_events(
    records: Iterable[ContractRecord],
    results: Mapping[Contract, ContractEvaluation],
    now_ms: int,
) -> list[Event]:
    """The durable consequences of an evaluation of `records`: servables newly valid, and
    expired (each with the expiration policy that expired it, for the history)."""
    policies = {record.contract: record.settings.expiration_policy for record in records}
    events: list[Event] = []
    for contract in sorted(results):
        result = results[contract]
        policy = policies.get(contract)
        events += [ServableBecameValid(f, now_ms) for f in sorted(result.became_valid)]
        events += [ServableExpired(f, now_ms, policy) for f in sorted(result.expired)]
    return events


class PolicyEvaluator:
    """Evaluates contracts over their loaded servables and keeps the published routes."""

    def __init__(self, live: Mapping[FQRV, LiveServable]) -> None:
        self._live = live
        self._routes: dict[Contract, ContractRoute] = {}

    def evaluate(
        self, records: Iterable[ContractRecord], now_ms: int
    ) -> dict[Contract, ContractEvaluation]:
        """Validity, phase-in, expiration and the route plan of each contract in `records`."""
        results: dict[Contract, ContractEvaluation] = {}
        for record in records:
            inputs = [
                (self.metrics_of(s), s.settings.policy_settings)
                for s in record.servables
                if self._loaded(s.fqrv)
            ]
            results[record.contract] = evaluate_contract(record.settings, inputs, now_ms)
        return results

    def publish(
        self, records: Iterable[ContractRecord], results: Mapping[Contract, ContractEvaluation]
    ) -> None:
        """Make the evaluated routes of `records` the ones requests read."""
        routes = dict(self._routes)
        for record in records:
            result = results[record.contract]
            for metrics in result.metrics:
                live = self._live[metrics.fqrv]
                live.phase_in_pct = metrics.current_phase_in_pct
                live.valid = metrics.last_valid
            servables = {
                s.fqrv: self._servable_route(s) for s in record.servables if self._loaded(s.fqrv)
            }
            shadows = tuple(r for r in servables.values() if r.shadows)
            refuse = record.settings.missing_values is MissingValues.REFUSE
            routes[record.contract] = ContractRoute(
                record.contract, result.plan, servables, shadows, refuse_missing=refuse
            )
        self._routes = routes

    def _servable_route(self, servable: ServableRecord) -> ServableRoute:
        live = self._live[servable.fqrv]
        inputs = tuple(live.signature.input_names) if live.signature is not None else ()
        return ServableRoute(
            servable.fqrv, servable.settings.logging_settings, live.counters, inputs
        )

    def route(self, contract: Contract) -> ContractRoute | None:
        """The published route of `contract`, if it was evaluated."""
        return self._routes.get(contract)

    def forget(self, contract: Contract) -> None:
        """Stop routing a deleted contract."""
        self._routes = {c: r for c, r in self._routes.items() if c != contract}

    def metrics_of(self, servable: ServableRecord) -> ServableMetrics:
        """The servable's metrics: its record plus what the server holds for it."""
        live = self._live.get(servable.fqrv) or LiveServable()
        counters = live.counters
        return ServableMetrics(
            fqrv=servable.fqrv,
            created_at_ms=servable.created_at_ms,
            became_valid_at_ms=servable.became_valid_at_ms,
            score_count=counters.score_count,
            shade_count=counters.shade_count,
            current_phase_in_pct=live.phase_in_pct,
            performance_metrics=dict(servable.performance_metrics),
            shadow_dropped_count=counters.shadow_dropped,
            shadow_failed_count=counters.shadow_failed,
            state="failed" if live.load_error is not None else "loaded",
            failure=live.load_error,
            last_valid=live.valid,
        )

    def _loaded(self, fqrv: FQRV) -> bool:
        live = self._live.get(fqrv)
        return live is not None and live.signature is not None
