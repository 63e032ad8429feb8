"""Contract and servable settings (SPEC §1, §2): which policies apply, and what is logged."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from forestflow.domain.expiration import ExpirationPolicy, KeepLatest
from forestflow.domain.phase_in import ImmediatePhaseIn, PhaseInPolicy
from forestflow.domain.routers import LatestPhaseInPctBasedRouter, Router
from forestflow.domain.validity import ImmediatelyValid, ValidityRule
from forestflow.errors import InvalidField

DEFAULT_SAMPLE_RATE = 0.01


class LogLevel(enum.Enum):
    """How much of a servable's traffic is logged (and, if not NONE, shadowed)."""

    NONE = "NONE"
    FULL = "FULL"
    SAMPLE = "SAMPLE"


@dataclass(frozen=True, slots=True)
class LoggingSettings:
    """Prediction logging for one servable; any level but NONE also makes it shadow traffic."""

    log_level: LogLevel = LogLevel.FULL
    key_features: tuple[str, ...] = ()
    key_features_separator: str = "."
    sample_rate: float = DEFAULT_SAMPLE_RATE

    def __post_init__(self) -> None:
        if not 0.0 <= self.sample_rate <= 1.0:
            raise InvalidField("must be between 0 and 1", field="sampleRate")


@dataclass(frozen=True, slots=True)
class PolicySettings:
    """When a servable is valid, and how it phases in once it is."""

    validity_policy: tuple[ValidityRule, ...] = (ImmediatelyValid(),)
    phase_in_policy: PhaseInPolicy = field(default_factory=ImmediatePhaseIn)


MAX_BATCH_SIZE_LIMIT = 1024


@dataclass(frozen=True, slots=True)
class BatchingSettings:
    """How one servable's served requests may share model calls (micro-batching).

    `max_batch_size`: requests scored in one model call at most, when they arrive while
    the servable's calls are running; 1 turns batching off for the servable; None (the
    default) takes the server's `scheduling.max_batch_size`.
    """

    max_batch_size: int | None = None

    def __post_init__(self) -> None:
        size = self.max_batch_size
        if size is not None and not 1 <= size <= MAX_BATCH_SIZE_LIMIT:
            raise InvalidField(
                f"must be between 1 and {MAX_BATCH_SIZE_LIMIT} (or left out)",
                field="maxBatchSize",
            )


@dataclass(frozen=True, slots=True)
class ServableSettings:
    """Everything configurable about one servable."""

    policy_settings: PolicySettings = field(default_factory=PolicySettings)
    logging_settings: LoggingSettings = field(default_factory=LoggingSettings)
    batching_settings: BatchingSettings = field(default_factory=BatchingSettings)


class MissingValues(enum.Enum):
    """What a contract does with a missing value (a `null`, or an input left out) for an
    input whose model has a notion of missing (NaN for floats)."""

    ACCEPT = "accept"
    """Score it as missing, as the model would."""
    REFUSE = "refuse"
    """Refuse the request (422), naming the input."""


@dataclass(frozen=True, slots=True)
class ContractSettings:
    """Everything configurable about one contract.

    The defaults (`KeepLatest(2)` + `LatestPhaseInPctBasedRouter`) make the newest
    release serve while the previous one shadows, ready for rollback.
    """

    expiration_policy: ExpirationPolicy = field(default_factory=lambda: KeepLatest(2))
    router: Router = field(default_factory=LatestPhaseInPctBasedRouter)
    missing_values: MissingValues = MissingValues.ACCEPT


SettingsT = TypeVar(
    "SettingsT", ContractSettings, PolicySettings, LoggingSettings, BatchingSettings
)


def with_changes(current: SettingsT, changes: Mapping[str, Any]) -> SettingsT:
    """`current` with the fields `changes` names (by attribute name) replaced: what a settings
    update does (SPEC §2.4, issue 11).

    Only top-level fields are replaced, each as a whole: a policy named replaces the current
    policy, a list named replaces the list. A field left out keeps its value; a field is
    reset only by naming it with its default. The value's own rules (`__post_init__`) run
    on the result, so an error names the field at fault.
    """
    return dataclasses.replace(current, **changes)
