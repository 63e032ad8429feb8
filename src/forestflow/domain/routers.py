"""Routers (SPEC §1.4): which servable answers each request of a contract.

A router turns the contract's valid servables into a `RoutePlan` once per evaluation
pass; the plan then picks one servable per request with an injected RNG. Weights are
phase-in percents; a servable with weight 0 never gets traffic, and a plan with no
positive weight answers None (the caller reports `NoActiveServablesForContract`).
"""

from __future__ import annotations

import bisect
import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from forestflow.domain.fqrv import FQRV
from forestflow.domain.metrics import ServableMetrics
from forestflow.domain.registry import Registry


class RoutePlan(ABC):
    """A ready-to-use routing decision for one contract."""

    __slots__ = ()

    @abstractmethod
    def choose(self, rng: random.Random) -> FQRV | None:
        """The servable that answers one request, or None when nothing can."""

    @abstractmethod
    def shares(self) -> dict[FQRV, float]:
        """The expected share (0–1) of traffic per servable with a positive share."""


@dataclass(frozen=True, slots=True)
class WeightedPlan(RoutePlan):
    """Weighted random choice; guarantees the observed shares converge to weight / total."""

    fqrvs: tuple[FQRV, ...]
    cumulative: tuple[float, ...]

    @classmethod
    def of(cls, weights: Sequence[tuple[FQRV, float]]) -> WeightedPlan:
        """A plan from (fqrv, weight) pairs; pairs with weight <= 0 are left out."""
        fqrvs: list[FQRV] = []
        cumulative: list[float] = []
        total = 0.0
        for fqrv, weight in weights:
            if weight > 0:
                total += weight
                fqrvs.append(fqrv)
                cumulative.append(total)
        return cls(tuple(fqrvs), tuple(cumulative))

    def choose(self, rng: random.Random) -> FQRV | None:
        """Pick by binary search over the cumulative weights."""
        if not self.fqrvs:
            return None
        if len(self.fqrvs) == 1:
            return self.fqrvs[0]
        point = rng.random() * self.cumulative[-1]
        return self.fqrvs[bisect.bisect_right(self.cumulative, point)]

    def shares(self) -> dict[FQRV, float]:
        """Each weight over the total."""
        if not self.fqrvs:
            return {}
        total = self.cumulative[-1]
        previous = 0.0
        result: dict[FQRV, float] = {}
        for fqrv, upto in zip(self.fqrvs, self.cumulative, strict=True):
            result[fqrv] = (upto - previous) / total
            previous = upto
        return result


NO_ROUTE = WeightedPlan((), ())
"""The plan of a contract with nothing to serve."""


class Router(ABC):
    """Builds a contract's `RoutePlan` from its valid servables."""

    __slots__ = ()
    registry: ClassVar[Registry[Router]]
    wire_name: ClassVar[str]

    @abstractmethod
    def plan(self, valid: Sequence[ServableMetrics]) -> RoutePlan:
        """The plan for `valid` (the contract's valid, unexpired servables)."""


Router.registry = Registry("router")


def newest_first(servables: Sequence[ServableMetrics]) -> list[ServableMetrics]:
    """Latest first: greatest `becameValidAtMS`, ties → greatest `createdAtMS`, then FQRV."""
    return sorted(
        servables,
        key=lambda s: (s.became_valid_at_ms or 0, s.created_at_ms, s.fqrv),
        reverse=True,
    )


@Router.registry.register("FairPhaseInPctBasedRouter")
@dataclass(frozen=True, slots=True)
class FairPhaseInPctBasedRouter(Router):
    """Weighted random choice among all valid servables, weight = `currentPhaseInPct`."""

    def plan(self, valid: Sequence[ServableMetrics]) -> RoutePlan:
        """Every valid servable, weighted by phase-in percent."""
        return WeightedPlan.of([(s.fqrv, s.current_phase_in_pct) for s in newest_first(valid)])


@Router.registry.register("LatestPhaseInPctBasedRouter")
@dataclass(frozen=True, slots=True)
class LatestPhaseInPctBasedRouter(Router):
    """The latest servable alone once it is at 100%; before that the latest two share traffic.

    Sharing is weighted by phase-in percent, so a latest servable at p% beside a previous
    one at 100% gets p / (100 + p) of the requests.
    """

    def plan(self, valid: Sequence[ServableMetrics]) -> RoutePlan:
        """The latest alone at 100%, else the latest two by phase-in percent."""
        ranked = newest_first(valid)
        if not ranked:
            return NO_ROUTE
        if ranked[0].current_phase_in_pct >= 100:
            return WeightedPlan.of([(ranked[0].fqrv, 100)])
        return WeightedPlan.of([(s.fqrv, s.current_phase_in_pct) for s in ranked[:2]])
