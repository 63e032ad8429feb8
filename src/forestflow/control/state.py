"""The control plane's in-memory state: contracts and their servables, rebuilt from events."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

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
)
from forestflow.domain.codec import decode, encode, wire
from forestflow.domain.fqrv import FQRV, Contract
from forestflow.domain.settings import ContractSettings, ServableSettings

SNAPSHOT_FORMAT = 1


@dataclass(frozen=True, slots=True)
class ServableRecord:
    """Everything durable about one servable."""

    fqrv: FQRV
    source: str
    flavor: Mapping[str, Any]
    settings: ServableSettings
    created_at_ms: int = wire("createdAtMS")
    artifact_path: str | None = wire("artifactPath", default=None)
    became_valid_at_ms: int | None = wire("becameValidAtMS", default=None)
    performance_metrics: Mapping[str, float] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    digest: str | None = None
    deployed_by: str | None = wire("deployedBy", default=None)
    path: str | None = None
    """The serve request's `path` as given (`source` is what it resolved to)."""


@dataclass(frozen=True, slots=True)
class ContractRecord:
    """A contract, its settings and its servables in deployment order."""

    contract: Contract
    settings: ContractSettings
    servables: tuple[ServableRecord, ...] = ()

    def servable(self, release_version: str) -> ServableRecord | None:
        """The servable with that release, if deployed."""
        return next((s for s in self.servables if s.fqrv.release_version == release_version), None)


@dataclass(frozen=True, slots=True)
class _Snapshot:
    format: int
    contracts: tuple[ContractRecord, ...]


class RegistryState:
    """Contracts and servables. Changes only through `apply(event)`."""

    def __init__(self, contracts: Iterable[ContractRecord] = ()) -> None:
        self._contracts: dict[Contract, ContractRecord] = {c.contract: c for c in contracts}
        self._handlers: dict[type[Event], Callable[[Any], None]] = {
            ContractCreated: self._on_contract_set,
            ContractUpdated: self._on_contract_set,
            ContractDeleted: self._on_contract_deleted,
            ServableDeployed: self._on_deployed,
            PolicySettingsUpdated: self._on_policy,
            LoggingSettingsUpdated: self._on_logging,
            PerformanceMetricsUpdated: self._on_metrics,
            ServableBecameValid: self._on_became_valid,
            ServableExpired: self._on_removed,
            ServableDeleted: self._on_removed,
        }

    def copy(self) -> RegistryState:
        """An independent state with the same records (records are immutable)."""
        return RegistryState(self._contracts.values())

    def apply(self, event: Event) -> None:
        """Apply one event. Events naming something absent change nothing."""
        self._handlers[type(event)](event)

    def contract(self, contract: Contract) -> ContractRecord | None:
        """The record of `contract`, if it exists."""
        return self._contracts.get(contract)

    def servable(self, fqrv: FQRV) -> ServableRecord | None:
        """The record of the servable `fqrv`, if it exists."""
        record = self._contracts.get(fqrv.contract)
        return record.servable(fqrv.release_version) if record else None

    def contracts(self) -> list[ContractRecord]:
        """Every contract, sorted by id."""
        return [self._contracts[c] for c in sorted(self._contracts)]

    def servables(self) -> list[ServableRecord]:
        """Every servable of every contract."""
        return [s for record in self.contracts() for s in record.servables]

    def to_snapshot(self) -> dict[str, Any]:
        """The whole state as a JSON object."""
        body: dict[str, Any] = encode(_Snapshot(SNAPSHOT_FORMAT, tuple(self.contracts())))
        return body

    @classmethod
    def from_snapshot(cls, payload: Mapping[str, Any]) -> RegistryState:
        """Rebuild a state from `to_snapshot()` output."""
        snapshot = decode(_Snapshot, payload, path="snapshot")
        if snapshot.format != SNAPSHOT_FORMAT:
            raise ValueError(f"unsupported snapshot format {snapshot.format}")
        return cls(snapshot.contracts)

    def _on_contract_set(self, event: ContractCreated | ContractUpdated) -> None:
        current = self._contracts.get(event.contract)
        servables = current.servables if current else ()
        self._contracts[event.contract] = ContractRecord(event.contract, event.settings, servables)

    def _on_contract_deleted(self, event: ContractDeleted) -> None:
        self._contracts.pop(event.contract, None)

    def _on_deployed(self, event: ServableDeployed) -> None:
        record = ServableRecord(
            fqrv=event.fqrv,
            source=event.source,
            flavor=event.flavor,
            settings=event.settings,
            created_at_ms=event.created_at_ms,
            artifact_path=event.artifact_path,
            tags=event.tags,
            digest=event.digest,
            deployed_by=event.deployed_by,
            path=event.path,
        )
        contract = self._contracts.get(event.fqrv.contract)
        if contract is None or contract.servable(event.fqrv.release_version) is not None:
            return
        self._contracts[event.fqrv.contract] = dataclasses.replace(
            contract, servables=(*contract.servables, record)
        )

    def _on_policy(self, event: PolicySettingsUpdated) -> None:
        self._update(
            event.fqrv,
            lambda s: dataclasses.replace(
                s, settings=dataclasses.replace(s.settings, policy_settings=event.policy_settings)
            ),
        )

    def _on_logging(self, event: LoggingSettingsUpdated) -> None:
        self._update(
            event.fqrv,
            lambda s: dataclasses.replace(
                s, settings=dataclasses.replace(s.settings, logging_settings=event.logging_settings)
            ),
        )

    def _on_metrics(self, event: PerformanceMetricsUpdated) -> None:
        def merge(servable: ServableRecord) -> ServableRecord:
            metrics = {**servable.performance_metrics, **event.metrics}
            for name, increment in event.increments.items():
                metrics[name] = metrics.get(name, 0.0) + increment
            return dataclasses.replace(servable, performance_metrics=metrics)

        self._update(event.fqrv, merge)

    def _on_became_valid(self, event: ServableBecameValid) -> None:
        def set_once(servable: ServableRecord) -> ServableRecord:
            if servable.became_valid_at_ms is not None:
                return servable
            return dataclasses.replace(servable, became_valid_at_ms=event.at_ms)

        self._update(event.fqrv, set_once)

    def _on_removed(self, event: ServableExpired | ServableDeleted) -> None:
        record = self._contracts.get(event.fqrv.contract)
        if record is not None:
            kept = tuple(s for s in record.servables if s.fqrv != event.fqrv)
            self._contracts[event.fqrv.contract] = dataclasses.replace(record, servables=kept)

    def _update(self, fqrv: FQRV, change: Callable[[ServableRecord], ServableRecord]) -> None:
        record = self._contracts.get(fqrv.contract)
        if record is None:
            return
        servables = tuple(change(s) if s.fqrv == fqrv else s for s in record.servables)
        self._contracts[fqrv.contract] = dataclasses.replace(record, servables=servables)
