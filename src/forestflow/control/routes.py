"""What the serving layer reads per contract: the route plan and who shadows."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from forestflow.control.counters import ServableCounters
from forestflow.domain.fqrv import FQRV, Contract
from forestflow.domain.routers import NO_ROUTE, RoutePlan
from forestflow.domain.settings import LoggingSettings, LogLevel


@dataclass(frozen=True, slots=True)
class ServableRoute:
    """A loaded servable as the serving layer sees it."""

    fqrv: FQRV
    logging: LoggingSettings
    counters: ServableCounters
    inputs: tuple[str, ...] = ()
    """The model's input names (none: it takes the request's fields in order)."""

    @property
    def shadows(self) -> bool:
        """Whether it scores the contract's traffic in shadow mode (log level is not NONE)."""
        return self.logging.log_level is not LogLevel.NONE


@dataclass(frozen=True, slots=True)
class ContractRoute:
    """A contract's routing as of the last evaluation pass. Replaced whole, never mutated."""

    contract: Contract
    plan: RoutePlan = NO_ROUTE
    servables: Mapping[FQRV, ServableRoute] = field(default_factory=dict)
    shadow_candidates: tuple[ServableRoute, ...] = ()
    refuse_missing: bool = False
    """Requests with a missing value are refused (`missingValues: refuse`)."""
