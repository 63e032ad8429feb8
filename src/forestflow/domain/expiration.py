"""Expiration policies (SPEC §1.5): which valid servables of a contract are retired."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from forestflow.domain.codec import wire
from forestflow.domain.fqrv import FQRV
from forestflow.domain.metrics import (
    DEFAULT_MIN_SAMPLES,
    Ordering,
    ServableMetrics,
    check_min_samples,
)
from forestflow.domain.registry import Registry
from forestflow.errors import InvalidField


class ExpirationPolicy(ABC):
    """Chooses, among a contract's valid servables, the ones to expire."""

    __slots__ = ()
    registry: ClassVar[Registry[ExpirationPolicy]]
    wire_name: ClassVar[str]

    @abstractmethod
    def expired(self, valid: Sequence[ServableMetrics]) -> frozenset[FQRV]:
        """The FQRVs among `valid` that must be expired now."""


ExpirationPolicy.registry = Registry("expiration policy")


def _check_keep(servables_to_keep: int) -> None:
    if servables_to_keep < 1:
        raise InvalidField("must be >= 1", field="servablesToKeep")


def _newest_first_key(servable: ServableMetrics) -> tuple[int, int, FQRV]:
    # became valid later → newer; ties → created later; the FQRV makes the order total
    return (servable.became_valid_at_ms or 0, servable.created_at_ms, servable.fqrv)


@ExpirationPolicy.registry.register("KeepLatest")
@dataclass(frozen=True, slots=True)
class KeepLatest(ExpirationPolicy):
    """Keeps the N most recently valid servables (by `becameValidAtMS`, ties → `createdAtMS`)."""

    servables_to_keep: int = wire("servablesToKeep")

    def __post_init__(self) -> None:
        _check_keep(self.servables_to_keep)

    def expired(self, valid: Sequence[ServableMetrics]) -> frozenset[FQRV]:
        """Every valid servable but the N newest."""
        ranked = sorted(valid, key=_newest_first_key, reverse=True)
        return frozenset(s.fqrv for s in ranked[self.servables_to_keep :])


@ExpirationPolicy.registry.register("KeepTopRanked")
@dataclass(frozen=True, slots=True)
class KeepTopRanked(ExpirationPolicy):
    """Keeps the N best by `performanceMetrics[metricToEvaluate]` among the known ones.

    Only servables whose metric is known (`ServableMetrics.known_metric`: present, not
    NaN, on at least `min_samples` joined samples) are ranked; the others are neither
    ranked out nor allowed to rank others out (SPEC §6): they are never expired and do not
    take any of the N places. So the N best known servables are kept, every other known
    one expires, and every unknown one stays. A missing metric is an unknown one (0 samples).
    With DESC (default) higher is better, with ASC lower. Ties go to the more phased-in
    servable, then to the newer one.
    """

    servables_to_keep: int = wire("servablesToKeep")
    metric_to_evaluate: str = wire("metricToEvaluate")
    ordering: Ordering = Ordering.DESC
    min_samples: int = DEFAULT_MIN_SAMPLES

    def __post_init__(self) -> None:
        _check_keep(self.servables_to_keep)
        check_min_samples(self.min_samples)

    def expired(self, valid: Sequence[ServableMetrics]) -> frozenset[FQRV]:
        """Every known servable but the N best ranked; no unknown one."""
        known = [
            (s, value)
            for s in valid
            if (value := s.known_metric(self.metric_to_evaluate, self.min_samples)) is not None
        ]

        def best_first(ranked: tuple[ServableMetrics, float]) -> tuple[float, int, int, int, FQRV]:
            s, value = ranked
            became, created, fqrv = _newest_first_key(s)
            return (self.ordering.rank_key(value), -s.current_phase_in_pct, -became, -created, fqrv)

        known.sort(key=best_first)
        return frozenset(s.fqrv for s, _value in known[self.servables_to_keep :])
