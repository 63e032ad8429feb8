"""Lineage and history of servables (issue 11, scope 5).

A servable's `Lineage` is what its deploy recorded: the location it was asked for and the
one that resolved to, the content digest of the copy, the flavor, the tags, and who
deployed it when. A contract's history lists every servable it ever had, newest deploy
first, with how each one left: expired (by which policy), deleted (by whom), or still
there (loaded, or failed to load). Both come from the durable record, so they survive
restarts; the history is read from the store a page at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from forestflow.control.events import ServableDeployed, ServableExpired, from_record
from forestflow.control.state import ContractRecord, ServableRecord
from forestflow.domain.codec import wire
from forestflow.domain.expiration import ExpirationPolicy
from forestflow.domain.fqrv import FQRV
from forestflow.store.base import HistoryEntry, Lifetime

E = TypeVar("E")


@dataclass(frozen=True, slots=True)
class Lineage:
    """Where a servable came from, and who deployed it when."""

    source: str
    """The serve request's `path` as given (for a servable deployed before it was
    recorded: the resolved location)."""
    resolved_source: str
    """The location the fetch pinned `source` to (`models:/m@champion` → `models:/m/1`);
    a lost copy is fetched again from here."""
    artifact_path: str | None
    digest: str | None
    """The content hash of the artifact copy; None for servables recorded before digests."""
    flavor: Mapping[str, Any]
    """The flavor it was loaded with, in wire form."""
    tags: Mapping[str, str]
    deployed_by: str | None
    """The name of the token that deployed it; None when authentication was off."""
    deployed_at_ms: int = wire("deployedAtMS")


def lineage_of(deployed: ServableDeployed | ServableRecord) -> Lineage:
    """The lineage a deploy recorded."""
    return Lineage(
        source=deployed.path or deployed.source,
        resolved_source=deployed.source,
        artifact_path=deployed.artifact_path,
        digest=deployed.digest,
        flavor=dict(deployed.flavor),
        tags=dict(deployed.tags),
        deployed_by=deployed.deployed_by,
        deployed_at_ms=deployed.created_at_ms,
    )


class ServableState(StrEnum):
    """Where a servable of a contract's history is now."""

    LOADED = "loaded"
    FAILED = "failed"
    """Recorded, but it could not be loaded (see `failure`)."""
    EXPIRED = "expired"
    DELETED = "deleted"
    REMOVED = "removed"
    """Gone with no record of why (a state older than the history, or edited by hand)."""


@dataclass(frozen=True, slots=True)
class Removal:
    """How a servable left its contract."""

    reason: ServableState
    """`expired` or `deleted`."""
    by: str | None
    """The token whose command removed it: the deleter, or the command whose evaluation
    expired it (a deploy of a newer release); None for the server's own evaluation pass
    or when authentication was off."""
    policy: ExpirationPolicy | None
    """For an expiry, the contract's expiration policy that made it, with its parameters
    (None when recorded before ForestFlow kept it)."""
    at_ms: int = wire("atMS")


@dataclass(frozen=True, slots=True)
class ServableHistory:
    """One servable a contract had."""

    seq: int
    """The history seq of its deploy: where the next page of the history starts."""
    fqrv: FQRV
    lineage: Lineage
    state: ServableState
    failure: str | None = None
    """Why it could not be loaded, for a `failed` one."""
    removal: Removal | None = None
    """How it left; None while it is there."""


def servable_history(
    lifetime: Lifetime,
    contract: ContractRecord | None,
    failure_of: Callable[[FQRV], str | None],
) -> ServableHistory:
    """The history of one deploy: its lineage, and where it is now given the current
    `contract` record and why a servable could not be loaded."""
    began = _event(lifetime.began, ServableDeployed)
    removal = _removal(lifetime.ended) if lifetime.ended is not None else None
    failure: str | None = None
    if removal is not None:
        now = removal.reason
    elif contract is None or contract.servable(began.fqrv.release_version) is None:
        now = ServableState.REMOVED
    else:
        failure = failure_of(began.fqrv)
        now = ServableState.FAILED if failure is not None else ServableState.LOADED
    return ServableHistory(
        seq=lifetime.began.seq,
        fqrv=began.fqrv,
        lineage=lineage_of(began),
        state=now,
        failure=failure,
        removal=removal,
    )


def _removal(entry: HistoryEntry) -> Removal:
    if entry.kind == ServableExpired.wire_name:
        expired = _event(entry, ServableExpired)
        return Removal(ServableState.EXPIRED, entry.actor, expired.policy, expired.at_ms)
    return Removal(ServableState.DELETED, entry.actor, None, entry.recorded_at_ms)


def _event(entry: HistoryEntry, kind: type[E]) -> E:
    event = from_record(entry.kind, entry.payload)
    if not isinstance(event, kind):  # the store answered another kind than asked for
        raise TypeError(f"history entry {entry.seq} is a {entry.kind}, not a {kind.__name__}")
    return event
