"""Phase-in policies (SPEC §1.3): how a valid servable's traffic share grows over time."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from fractions import Fraction
from typing import ClassVar

from forestflow.domain.codec import wire
from forestflow.domain.registry import Registry
from forestflow.errors import InvalidField


class PhaseInPolicy(ABC):
    """Maps the time since a servable became valid to its phase-in percent (0–100)."""

    __slots__ = ()
    registry: ClassVar[Registry[PhaseInPolicy]]
    wire_name: ClassVar[str]

    @abstractmethod
    def phase_in_pct(self, became_valid_at_ms: int | None, now_ms: int) -> int:
        """Percent of full weight at `now_ms`; 0 for a servable that never became valid."""


PhaseInPolicy.registry = Registry("phase-in policy")


@PhaseInPolicy.registry.register("ImmediatePhaseIn")
@dataclass(frozen=True, slots=True)
class ImmediatePhaseIn(PhaseInPolicy):
    """Full weight as soon as the servable is valid."""

    def phase_in_pct(self, became_valid_at_ms: int | None, now_ms: int) -> int:
        """100 once valid, else 0."""
        return 0 if became_valid_at_ms is None else 100


@PhaseInPolicy.registry.register("LinearTimeBasedPhaseIn")
@dataclass(frozen=True, slots=True)
class LinearTimeBasedPhaseIn(PhaseInPolicy):
    """`min(100, floor(100 · elapsed / window))`: monotonic, 0 at validity, 100 after the window.

    A window of 0 seconds is the same as `ImmediatePhaseIn`.
    """

    phase_in_over_secs: float = wire("phaseInOverSecs")

    def __post_init__(self) -> None:
        # the chained comparison is also False for NaN (phase_in_pct would raise) and for inf
        if not 0 <= self.phase_in_over_secs < math.inf:
            raise InvalidField("must be a finite number >= 0", field="phaseInOverSecs")

    def phase_in_pct(self, became_valid_at_ms: int | None, now_ms: int) -> int:
        """The linear ramp; see the class docstring."""
        if became_valid_at_ms is None:
            return 0
        # exact decimal arithmetic keeps floor() exact at the boundaries: 2.015 s is 2015 ms,
        # whereas the float product 2.015 * 1000 is 2015.0000000000002 (one percent short)
        window_ms = Fraction(repr(self.phase_in_over_secs)) * 1000
        elapsed_ms = max(0, now_ms - became_valid_at_ms)
        if window_ms <= 0 or elapsed_ms >= window_ms:
            return 100
        return min(100, math.floor(100 * elapsed_ms / window_ms))
