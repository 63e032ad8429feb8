"""Validity rules (SPEC §1.2): when a servable may take traffic.

A servable is valid only when all of its rules hold, with two overrides: a list that
contains `NeverValid` is never valid, and otherwise a list that contains
`ImmediatelyValid` is always valid. An empty list is vacuously valid.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from forestflow.domain.codec import wire
from forestflow.domain.metrics import (
    DEFAULT_MIN_SAMPLES,
    DEFAULT_PERFORMANCE_METRIC,
    Ordering,
    ServableMetrics,
    check_min_samples,
)
from forestflow.domain.registry import Registry
from forestflow.errors import InvalidField


class ValidityRule(ABC):
    """One condition a servable must meet to be valid."""

    __slots__ = ()
    registry: ClassVar[Registry[ValidityRule]]
    wire_name: ClassVar[str]

    @abstractmethod
    def is_valid(self, metrics: ServableMetrics, now_ms: int) -> bool:
        """Whether the rule holds for `metrics` at `now_ms`."""


ValidityRule.registry = Registry("validity policy")


@ValidityRule.registry.register("ImmediatelyValid")
@dataclass(frozen=True, slots=True)
class ImmediatelyValid(ValidityRule):
    """Always holds, and makes the whole list valid unless it also holds `NeverValid`."""

    def is_valid(self, metrics: ServableMetrics, now_ms: int) -> bool:
        """Always true."""
        return True


@ValidityRule.registry.register("NeverValid")
@dataclass(frozen=True, slots=True)
class NeverValid(ValidityRule):
    """Never holds: a shadow-only servable, promoted by updating its policy."""

    def is_valid(self, metrics: ServableMetrics, now_ms: int) -> bool:
        """Always false."""
        return False


@ValidityRule.registry.register("TimeBasedValidity")
@dataclass(frozen=True, slots=True)
class TimeBasedValidity(ValidityRule):
    """Holds from `valid_after_ms` (epoch milliseconds) on."""

    valid_after_ms: int = wire("validAfterMS")

    def is_valid(self, metrics: ServableMetrics, now_ms: int) -> bool:
        """True once `now_ms` reaches `validAfterMS`."""
        return now_ms >= self.valid_after_ms


@ValidityRule.registry.register("MinServedEventsBasedValidity")
@dataclass(frozen=True, slots=True)
class MinServedEventsBasedValidity(ValidityRule):
    """Holds once the servable has scored that many requests in shadow mode (`shadeCount`)."""

    valid_after_min_served_events: int = wire("validAfterMinServedEvents")

    def __post_init__(self) -> None:
        if self.valid_after_min_served_events < 0:
            raise InvalidField("must be >= 0", field="validAfterMinServedEvents")

    def is_valid(self, metrics: ServableMetrics, now_ms: int) -> bool:
        """True once `shadeCount` reaches the minimum."""
        return metrics.shade_count >= self.valid_after_min_served_events


@ValidityRule.registry.register("PerformanceBasedValidity")
@dataclass(frozen=True, slots=True)
class PerformanceBasedValidity(ValidityRule):
    """Holds while `performanceMetrics[metric]` meets `min_threshold`, once the metric is known.

    With `ordering` DESC (default) the metric must be >= the threshold; with ASC (for
    lower-is-better metrics such as MAE) it must be <= the threshold.

    The metric decides only once it is known (`ServableMetrics.known_metric`): present, not
    NaN, and resting on at least `min_samples` joined samples (SPEC §6: one lucky record
    must not promote a release). Until then the rule leaves the servable as it was: it
    holds for a servable that was valid at the last evaluation pass and not for one that
    was not — so a servable not yet valid stays out of traffic (no metric yet → not
    valid), and a valid one is not demoted by too little evidence either. Before the first
    pass after a restart "as it was" means "has ever been valid" (`becameValidAtMS` set).
    """

    min_threshold: float
    metric: str = DEFAULT_PERFORMANCE_METRIC
    ordering: Ordering = Ordering.DESC
    min_samples: int = DEFAULT_MIN_SAMPLES

    def __post_init__(self) -> None:
        check_min_samples(self.min_samples)

    def is_valid(self, metrics: ServableMetrics, now_ms: int) -> bool:
        """The threshold test on the known metric; while it is unknown, validity as before."""
        value = metrics.known_metric(self.metric, self.min_samples)
        if value is None:
            return _as_before(metrics)
        return self.ordering.meets(value, self.min_threshold)


def _as_before(metrics: ServableMetrics) -> bool:
    """Whether the servable was valid at the last pass (ever valid, before the first pass)."""
    if metrics.last_valid is not None:
        return metrics.last_valid
    return metrics.became_valid_at_ms is not None


def all_valid(rules: Sequence[ValidityRule], metrics: ServableMetrics, now_ms: int) -> bool:
    """Combine a servable's rules: `NeverValid` wins, then `ImmediatelyValid`, else all hold."""
    if any(isinstance(rule, NeverValid) for rule in rules):
        return False
    if any(isinstance(rule, ImmediatelyValid) for rule in rules):
        return True
    return all(rule.is_valid(metrics, now_ms) for rule in rules)
