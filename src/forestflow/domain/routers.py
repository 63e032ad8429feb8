"""Routers (SPEC §1.4): which servable answers each request of a contract.

A router turns the contract's valid servables into a `RoutePlan` once per evaluation
pass; the plan then picks one servable per request with an injected RNG. Weights are
phase-in percents; a servable with weight 0 never gets traffic, and a plan with no
positive weight answers None (the caller reports `NoActiveServablesForContract`).

The performance-driven routers (SPEC §6: `BestPerformerRouter`, `EpsilonGreedyRouter`,
`ThompsonSamplingRouter`) use phase-in only as a gate: a servable at 0% is never chosen,
any other competes on its `performanceMetrics`. A metric competes only once it is known
(`ServableMetrics.known_metric`: present, not NaN, on at least the router's `minSamples`
joined samples, SPEC §6); until then the servable is unknown: it is never the best, and
the bandit routers keep exploring it. The control plane rebuilds plans on every
evaluation pass and after every metrics change, so each plan is an immutable snapshot of
the metrics it was built from.
"""

from __future__ import annotations

import bisect
import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from forestflow.domain.fqrv import FQRV
from forestflow.domain.metrics import (
    DEFAULT_MIN_SAMPLES,
    REWARD_FAILURES,
    REWARD_SUCCESSES,
    Ordering,
    ServableMetrics,
    check_min_samples,
)
from forestflow.domain.registry import Registry
from forestflow.errors import InvalidField


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


# --- performance-driven routers (SPEC §6) ------------------------------------------------

THOMPSON_SHARE_SAMPLES = 10_000
"""Monte Carlo rounds behind `ThompsonPlan.shares()`: standard error at most 0.005 a share."""
THOMPSON_SHARE_SEED = 20_240_601
"""Seed of the estimate's own RNG: `shares()` is deterministic and never draws from the
request RNG, so asking for it does not change which servables answer requests."""


def _candidates(valid: Sequence[ServableMetrics]) -> list[ServableMetrics]:
    """The servables that may take traffic (phase-in above 0%), newest first."""
    return [s for s in newest_first(valid) if s.current_phase_in_pct > 0]


def _best_of(
    candidates: Sequence[ServableMetrics], metric: str, ordering: Ordering, min_samples: int
) -> ServableMetrics | None:
    """The best of `candidates` (newest first) whose `metric` is known; None while none is."""
    known = [
        (s, value) for s in candidates if (value := s.known_metric(metric, min_samples)) is not None
    ]
    if not known:
        return None
    # min() keeps the first of equal keys and candidates come newest first: ties → newer
    best, _value = min(
        known, key=lambda pair: (ordering.rank_key(pair[1]), -pair[0].current_phase_in_pct)
    )
    return best


def _phase_in_weighted(candidates: Sequence[ServableMetrics]) -> RoutePlan:
    """The `FairPhaseInPctBasedRouter` plan: the fallback while no candidate's metric is known."""
    return WeightedPlan.of([(s.fqrv, s.current_phase_in_pct) for s in candidates])


def _check_metric(metric: str) -> None:
    if not metric:
        raise InvalidField("must name a performance metric", field="metric")


@Router.registry.register("BestPerformerRouter")
@dataclass(frozen=True, slots=True)
class BestPerformerRouter(Router):
    """All traffic to the best servable by `performanceMetrics[metric]`, among known ones.

    Only known metrics compete (present, not NaN, on at least `min_samples` joined
    samples): with DESC (default) higher is better, with ASC lower. Ties go to the more
    phased-in servable, then to the newer one (`newest_first`). Phase-in gates only: a
    servable at 0% gets nothing, any other may take everything. Until some candidate's
    metric is known, traffic is shared by phase-in percent as `FairPhaseInPctBasedRouter`
    does, so a new contract serves before its first feedback; an unknown newcomer beside a
    known servable gets no served traffic and earns its samples from shadow traffic
    (feedback joins shadow predictions too).
    """

    metric: str
    ordering: Ordering = Ordering.DESC
    min_samples: int = DEFAULT_MIN_SAMPLES

    def __post_init__(self) -> None:
        _check_metric(self.metric)
        check_min_samples(self.min_samples)

    def plan(self, valid: Sequence[ServableMetrics]) -> RoutePlan:
        """The best known candidate alone; phase-in weighted while no candidate is known."""
        candidates = _candidates(valid)
        best = _best_of(candidates, self.metric, self.ordering, self.min_samples)
        if best is None:
            return _phase_in_weighted(candidates)
        return WeightedPlan.of([(best.fqrv, 1.0)])


@Router.registry.register("EpsilonGreedyRouter")
@dataclass(frozen=True, slots=True)
class EpsilonGreedyRouter(Router):
    """The best servable (as `BestPerformerRouter` ranks) with probability 1 − ε, else any one.

    Exploration picks uniformly among the k candidates (phase-in above 0%), known or not,
    so the best gets 1 − ε + ε/k of the traffic and every other candidate ε/k: a servable
    whose metric is not known yet (fewer than `min_samples` joined samples) is never the
    best but keeps being explored. `epsilon` is in [0, 1]: 0 is `BestPerformerRouter`, 1 a
    uniform choice. Until some candidate's metric is known, traffic is shared by phase-in
    percent as `FairPhaseInPctBasedRouter` does.
    """

    metric: str
    epsilon: float = 0.1
    ordering: Ordering = Ordering.DESC
    min_samples: int = DEFAULT_MIN_SAMPLES

    def __post_init__(self) -> None:
        _check_metric(self.metric)
        if not 0.0 <= self.epsilon <= 1.0:  # also refuses NaN
            raise InvalidField("must be between 0 and 1", field="epsilon")
        check_min_samples(self.min_samples)

    def plan(self, valid: Sequence[ServableMetrics]) -> RoutePlan:
        """Weights 1 − ε + ε/k for the best and ε/k for each other candidate."""
        candidates = _candidates(valid)
        best = _best_of(candidates, self.metric, self.ordering, self.min_samples)
        if best is None:
            return _phase_in_weighted(candidates)
        explore = self.epsilon / len(candidates)
        exploit = 1.0 - self.epsilon
        return WeightedPlan.of(
            [(s.fqrv, explore + (exploit if s is best else 0.0)) for s in candidates]
        )


@dataclass(frozen=True, slots=True)
class ThompsonPlan(RoutePlan):
    """One Beta(alpha, beta) posterior per candidate; a request goes to the largest draw.

    Each `choose` draws once from every posterior with the request RNG. `shares()` is a
    Monte Carlo estimate with its own fixed-seed RNG, computed once per plan.
    """

    fqrvs: tuple[FQRV, ...]
    alphas: tuple[float, ...]
    betas: tuple[float, ...]
    _memo: dict[str, dict[FQRV, float]] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    def choose(self, rng: random.Random) -> FQRV | None:
        """The candidate whose posterior draw is the largest (ties → the earlier candidate)."""
        if len(self.fqrvs) <= 1:
            return self.fqrvs[0] if self.fqrvs else None
        return self.fqrvs[self._draw(rng)]

    def shares(self) -> dict[FQRV, float]:
        """The estimated probability of each candidate having the largest draw."""
        if len(self.fqrvs) <= 1:
            return {self.fqrvs[0]: 1.0} if self.fqrvs else {}
        estimate = self._memo.get("shares")
        if estimate is None:
            # computed whole, then stored with one assignment: a concurrent reader sees
            # either nothing (and computes the same values) or the complete estimate
            estimate = self._estimate()
            self._memo["shares"] = estimate
        return dict(estimate)

    def _draw(self, rng: random.Random) -> int:
        draws = [rng.betavariate(a, b) for a, b in zip(self.alphas, self.betas, strict=True)]
        # max() keeps the first of equal draws (only possible when draws underflow to 0 or 1)
        return max(range(len(draws)), key=draws.__getitem__)

    def _estimate(self) -> dict[FQRV, float]:
        rng = random.Random(THOMPSON_SHARE_SEED)  # noqa: S311 - an estimate, not cryptography
        wins = [0] * len(self.fqrvs)
        for _ in range(THOMPSON_SHARE_SAMPLES):
            wins[self._draw(rng)] += 1
        return {
            fqrv: count / THOMPSON_SHARE_SAMPLES
            for fqrv, count in zip(self.fqrvs, wins, strict=True)
            if count
        }


def _reward_count(servable: ServableMetrics, name: str) -> float:
    """A reward counter; missing, NaN or negative (set by hand through `PUT …/metrics`) → 0."""
    value = servable.performance_metrics.get(name, 0.0)
    return value if value > 0 else 0.0  # NaN > 0 is False


def _rewards(servable: ServableMetrics, min_samples: int) -> tuple[float, float]:
    """(successes, failures) once they add up to `min_samples`; before that (0, 0): unknown."""
    successes = _reward_count(servable, REWARD_SUCCESSES)
    failures = _reward_count(servable, REWARD_FAILURES)
    if successes + failures < min_samples:
        return (0.0, 0.0)
    return (successes, failures)


def _check_prior(value: float, wire_name: str) -> None:
    if not value > 0:  # also refuses NaN
        raise InvalidField("must be > 0", field=wire_name)


@Router.registry.register("ThompsonSamplingRouter")
@dataclass(frozen=True, slots=True)
class ThompsonSamplingRouter(Router):
    """Thompson sampling over the candidates' `rewardSuccesses` / `rewardFailures`.

    Each candidate (phase-in above 0%) has the posterior Beta(priorSuccesses +
    rewardSuccesses, priorFailures + rewardFailures); every request draws once from each
    and goes to the largest draw, so a servable gets traffic in proportion to the chance
    that it is the best. Missing counters count as 0. The rewards are the joined samples:
    until they add up to `min_samples` a candidate is unknown and has the prior alone
    (uniform by default), so it keeps being explored and a few lucky rewards do not
    decide. Ties between equal draws go to the more phased-in, then the newer servable.
    """

    prior_successes: float = 1.0
    prior_failures: float = 1.0
    min_samples: int = DEFAULT_MIN_SAMPLES

    def __post_init__(self) -> None:
        _check_prior(self.prior_successes, "priorSuccesses")
        _check_prior(self.prior_failures, "priorFailures")
        check_min_samples(self.min_samples)

    def plan(self, valid: Sequence[ServableMetrics]) -> RoutePlan:
        """A `ThompsonPlan` over the candidates' posteriors at this moment."""
        # sorted() is stable: equal phase-in keeps the newest-first order
        candidates = sorted(_candidates(valid), key=lambda s: -s.current_phase_in_pct)
        if not candidates:
            return NO_ROUTE
        rewards = [_rewards(s, self.min_samples) for s in candidates]
        return ThompsonPlan(
            fqrvs=tuple(s.fqrv for s in candidates),
            alphas=tuple(self.prior_successes + successes for successes, _ in rewards),
            betas=tuple(self.prior_failures + failures for _, failures in rewards),
        )
