"""Control-plane events: every durable state change, as recorded in the store.

Commands are validated, turned into events, appended durably, then applied to the
in-memory state (`RegistryState.apply`). Replaying the events rebuilds the state.
"""

from __future__ import annotations

from abc import ABC
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from forestflow.domain.codec import decode, encode, wire
from forestflow.domain.expiration import ExpirationPolicy
from forestflow.domain.fqrv import FQRV, Contract
from forestflow.domain.registry import Registry
from forestflow.domain.settings import (
    ContractSettings,
    LoggingSettings,
    PolicySettings,
    ServableSettings,
)


class Event(ABC):
    """One recorded state change."""

    __slots__ = ()
    registry: ClassVar[Registry[Event]]
    wire_name: ClassVar[str]


Event.registry = Registry("event")


@Event.registry.register("ContractCreated")
@dataclass(frozen=True, slots=True)
class ContractCreated(Event):
    """A contract was created with these settings."""

    contract: Contract
    settings: ContractSettings


@Event.registry.register("ContractUpdated")
@dataclass(frozen=True, slots=True)
class ContractUpdated(Event):
    """A contract's settings were replaced."""

    contract: Contract
    settings: ContractSettings


@Event.registry.register("ContractDeleted")
@dataclass(frozen=True, slots=True)
class ContractDeleted(Event):
    """An empty contract was removed."""

    contract: Contract


@Event.registry.register("ServableDeployed")
@dataclass(frozen=True, slots=True)
class ServableDeployed(Event):
    """A servable was fetched, loaded and acknowledged.

    `source` names exactly what was fetched, and `digest` the content of the copy: a copy
    lost later is fetched again from `source` and must hash to `digest` to be served.

    `flavor` is kept as the JSON the client sent, so that state replays even when a
    third-party flavor package is missing after an upgrade (the servable then fails to
    load, visibly, instead of the whole recovery failing).

    `path` is the serve request's location as the client gave it (`models:/m@champion`),
    where `source` is the one it resolved to (`models:/m/1`); None for older records.
    """

    fqrv: FQRV
    source: str
    flavor: Mapping[str, Any]
    settings: ServableSettings
    created_at_ms: int = wire("createdAtMS")
    artifact_path: str | None = wire("artifactPath", default=None)
    tags: Mapping[str, str] = field(default_factory=dict)
    digest: str | None = None
    """Content hash of the artifact copy (`artifacts.digest`); None for older records."""
    deployed_by: str | None = wire("deployedBy", default=None)
    """Name of the token that deployed it; None when authentication was off."""
    path: str | None = None
    """The serve request's `path` as given; None for records older than lineage (#11)."""


@Event.registry.register("PolicySettingsUpdated")
@dataclass(frozen=True, slots=True)
class PolicySettingsUpdated(Event):
    """A servable's validity and phase-in policies were replaced."""

    fqrv: FQRV
    policy_settings: PolicySettings


@Event.registry.register("LoggingSettingsUpdated")
@dataclass(frozen=True, slots=True)
class LoggingSettingsUpdated(Event):
    """A servable's logging settings were replaced."""

    fqrv: FQRV
    logging_settings: LoggingSettings


@Event.registry.register("PerformanceMetricsUpdated")
@dataclass(frozen=True, slots=True)
class PerformanceMetricsUpdated(Event):
    """A servable's performance metrics changed: `metrics` are set (merged over the
    existing ones), `increments` are added to the existing values (all-time counters)."""

    fqrv: FQRV
    metrics: Mapping[str, float] = field(default_factory=dict)
    increments: Mapping[str, float] = field(default_factory=dict)


@Event.registry.register("ServableBecameValid")
@dataclass(frozen=True, slots=True)
class ServableBecameValid(Event):
    """A servable was valid for the first time; its phase-in starts at `at_ms`."""

    fqrv: FQRV
    at_ms: int = wire("atMS")


@Event.registry.register("ServableExpired")
@dataclass(frozen=True, slots=True)
class ServableExpired(Event):
    """The contract's expiration policy retired a servable."""

    fqrv: FQRV
    at_ms: int = wire("atMS")
    policy: ExpirationPolicy | None = None
    """The expiration policy that retired it, with its parameters; None for older records."""


@Event.registry.register("ServableDeleted")
@dataclass(frozen=True, slots=True)
class ServableDeleted(Event):
    """A client deleted a servable."""

    fqrv: FQRV


def to_record(event: Event) -> tuple[str, dict[str, Any]]:
    """The `(kind, payload)` pair the store records for `event`."""
    wrapped: dict[str, dict[str, Any]] = encode(event)
    return event.wire_name, wrapped[event.wire_name]


def from_record(kind: str, payload: Mapping[str, Any]) -> Event:
    """The event a stored `(kind, payload)` pair describes."""
    return decode(Event.registry.get(kind), payload, path=kind)
