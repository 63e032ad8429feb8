"""One evaluation pass over a contract: validity, phase-in, expiration, routing (SPEC §1.1–1.5).

Pure: the caller passes the servables' current metrics and policies and the time, and
applies the result (records newly valid servables, expires, publishes the route plan).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from forestflow.domain.fqrv import FQRV
from forestflow.domain.metrics import ServableMetrics
from forestflow.domain.routers import RoutePlan
from forestflow.domain.settings import ContractSettings, PolicySettings
from forestflow.domain.validity import all_valid


@dataclass(frozen=True, slots=True)
class ContractEvaluation:
    """The outcome of one pass over one contract."""

    metrics: tuple[ServableMetrics, ...]
    """Every servable's metrics, `becameValidAtMS`, `currentPhaseInPct` and `last_valid` up
    to date: what the next pass must be given back (validity rules may read `last_valid`)."""
    valid: frozenset[FQRV]
    """Servables valid at this pass (expired ones included)."""
    became_valid: frozenset[FQRV]
    """Servables valid for the first time at this pass (their `becameValidAtMS` is now)."""
    expired: frozenset[FQRV]
    """Valid servables the expiration policy retires."""
    plan: RoutePlan
    """The router's plan over the valid, unexpired servables."""


def evaluate_contract(
    settings: ContractSettings,
    servables: Sequence[tuple[ServableMetrics, PolicySettings]],
    now_ms: int,
) -> ContractEvaluation:
    """Evaluate a contract's servables at `now_ms`.

    `becameValidAtMS` is set the first time a servable is valid and never reset; an
    invalid servable's phase-in is 0; expiration looks only at valid servables; the
    router sees the valid servables that are not expired. Each servable's `last_valid`
    is what the previous pass found (None before the first); the result carries this one's.
    """
    updated: list[ServableMetrics] = []
    valid: set[FQRV] = set()
    became_valid: set[FQRV] = set()
    for metrics, policy in servables:
        is_valid = all_valid(policy.validity_policy, metrics, now_ms)
        became_at = metrics.became_valid_at_ms
        if is_valid:
            valid.add(metrics.fqrv)
            if became_at is None:
                became_at = now_ms
                became_valid.add(metrics.fqrv)
        pct = policy.phase_in_policy.phase_in_pct(became_at, now_ms) if is_valid else 0
        updated.append(
            dataclasses.replace(
                metrics, became_valid_at_ms=became_at, current_phase_in_pct=pct, last_valid=is_valid
            )
        )
    valid_metrics = [m for m in updated if m.fqrv in valid]
    expired = settings.expiration_policy.expired(valid_metrics)
    plan = settings.router.plan([m for m in valid_metrics if m.fqrv not in expired])
    return ContractEvaluation(
        metrics=tuple(updated),
        valid=frozenset(valid),
        became_valid=frozenset(became_valid),
        expired=expired,
        plan=plan,
    )
