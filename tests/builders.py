"""Shared factories for tests: domain values with sensible defaults, varied by keyword.

Factories take keyword overrides for the fields that vary (applied with `dataclasses.replace`
or the constructor), so a test states only what matters to it. The hypothesis strategies at the
end generate arbitrary valid settings for property and round-trip tests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import strategies as st

from forestflow.clock import SystemClock
from forestflow.control.tokens import TokenRegistry
from forestflow.domain.expiration import ExpirationPolicy, KeepLatest, KeepTopRanked
from forestflow.domain.fqrv import FQRV, Contract
from forestflow.domain.frame import Frame
from forestflow.domain.metrics import Ordering, ServableMetrics
from forestflow.domain.phase_in import ImmediatePhaseIn, LinearTimeBasedPhaseIn, PhaseInPolicy
from forestflow.domain.roles import Role
from forestflow.domain.routers import (
    BestPerformerRouter,
    EpsilonGreedyRouter,
    FairPhaseInPctBasedRouter,
    LatestPhaseInPctBasedRouter,
    Router,
    ThompsonSamplingRouter,
)
from forestflow.domain.settings import (
    ContractSettings,
    LoggingSettings,
    LogLevel,
    PolicySettings,
    ServableSettings,
)
from forestflow.domain.validity import (
    ImmediatelyValid,
    MinServedEventsBasedValidity,
    NeverValid,
    PerformanceBasedValidity,
    TimeBasedValidity,
    ValidityRule,
)
from forestflow.store.sqlite import open_store

DEFAULT_CONTRACT = Contract("samples", "energy_output", 0)


def make_contract(**overrides: Any) -> Contract:
    """A `Contract` (`samples.energy_output.0` unless overridden)."""
    return dataclasses.replace(DEFAULT_CONTRACT, **overrides)


def make_fqrv(release: str = "v1", **contract_overrides: Any) -> FQRV:
    """An `FQRV` for `release` in `make_contract(**contract_overrides)`."""
    return FQRV(make_contract(**contract_overrides), release)


def make_metrics(release: str = "v1", **overrides: Any) -> ServableMetrics:
    """`ServableMetrics` of a freshly loaded servable: created at 0, never valid, no traffic.

    `release` names the servable in the default contract; an explicit `fqrv` wins.
    """
    base = ServableMetrics(fqrv=make_fqrv(release), created_at_ms=0)
    return dataclasses.replace(base, **overrides)


def make_policy(*validity: ValidityRule, phase_in: PhaseInPolicy | None = None) -> PolicySettings:
    """`PolicySettings` with the given rules (default `ImmediatelyValid`) and phase-in.

    The phase-in defaults to `ImmediatePhaseIn`. For an empty rule list build
    `PolicySettings(validity_policy=())` directly.
    """
    return PolicySettings(
        validity_policy=validity or (ImmediatelyValid(),),
        phase_in_policy=phase_in if phase_in is not None else ImmediatePhaseIn(),
    )


def make_frame(configs: Mapping[str, str] | None = None, **columns: Sequence[Any]) -> Frame:
    """A `Frame` from plain lists (`make_frame(a=[1.0, 2.0], name=["x", "y"])`).

    Strings, bytes and `None` make object columns, as the transports build them; write
    a missing float as `math.nan` to get a float column.
    """
    arrays = {name: _column(values) for name, values in columns.items()}
    return Frame(arrays, dict(configs or {}))


def _column(values: Sequence[Any]) -> np.ndarray[Any, Any]:
    as_object = any(value is None or isinstance(value, str | bytes) for value in values)
    return np.array(values, dtype=object if as_object else None)


# --- hypothesis strategies -------------------------------------------------------------

names = st.from_regex(r"[A-Za-z0-9_.-]{1,12}", fullmatch=True).filter(
    lambda n: n not in (".", "..")
)
"""Valid ForestFlow names (`[A-Za-z0-9_.-]+`)."""

finite_floats = st.floats(allow_nan=False, allow_infinity=False, width=64)
"""Any finite float."""

contracts = st.builds(Contract, names, names, st.integers(min_value=0, max_value=2**63 - 1))
fqrvs = st.builds(FQRV, contracts, names)

orderings = st.sampled_from(Ordering)

validity_rules: st.SearchStrategy[ValidityRule] = st.one_of(
    st.just(ImmediatelyValid()),
    st.just(NeverValid()),
    st.builds(TimeBasedValidity, st.integers(min_value=0, max_value=2**63 - 1)),
    st.builds(MinServedEventsBasedValidity, st.integers(min_value=0, max_value=2**40)),
    st.builds(PerformanceBasedValidity, finite_floats, names, orderings),
)

phase_in_policies: st.SearchStrategy[PhaseInPolicy] = st.one_of(
    st.just(ImmediatePhaseIn()),
    st.builds(
        LinearTimeBasedPhaseIn,
        st.one_of(
            st.integers(min_value=0, max_value=10**7),
            st.floats(min_value=0, max_value=1e7, allow_nan=False),
        ),
    ),
)

expiration_policies: st.SearchStrategy[ExpirationPolicy] = st.one_of(
    st.builds(KeepLatest, st.integers(min_value=1, max_value=100)),
    st.builds(KeepTopRanked, st.integers(min_value=1, max_value=100), names, orderings),
)

routers: st.SearchStrategy[Router] = st.one_of(
    st.sampled_from([FairPhaseInPctBasedRouter(), LatestPhaseInPctBasedRouter()]),
    st.builds(BestPerformerRouter, names, orderings),
    st.builds(EpsilonGreedyRouter, names, st.floats(min_value=0, max_value=1), orderings),
    st.builds(
        ThompsonSamplingRouter,
        st.floats(min_value=1e-6, max_value=1e6),
        st.floats(min_value=1e-6, max_value=1e6),
    ),
)

contract_settings = st.builds(ContractSettings, expiration_policies, routers)

policy_settings = st.builds(
    PolicySettings,
    st.lists(validity_rules, max_size=4).map(tuple),
    phase_in_policies,
)

logging_settings = st.builds(
    LoggingSettings,
    st.sampled_from(LogLevel),
    st.lists(names, max_size=3).map(tuple),
    st.text(max_size=3),
    st.floats(min_value=0, max_value=1),
)

servable_settings = st.builds(ServableSettings, policy_settings, logging_settings)

servable_metrics = st.builds(
    ServableMetrics,
    fqrvs,
    st.integers(min_value=0, max_value=2**53),
    st.one_of(st.none(), st.integers(min_value=0, max_value=2**53)),
    st.integers(min_value=0, max_value=2**53),
    st.integers(min_value=0, max_value=2**53),
    st.integers(min_value=0, max_value=100),
    st.dictionaries(names, finite_floats, max_size=3),
)
"""Arbitrary `ServableMetrics` (each value independent: not necessarily consistent)."""


def make_tokens(data_dir: Path) -> dict[str, str]:
    """One token per role, named after it, made in a data directory (before a server starts
    on it): role name → secret."""
    store = open_store(data_dir)
    try:
        registry = TokenRegistry(store, SystemClock())
        return {role.value: registry.create(role.value, role) for role in Role}
    finally:
        store.close()
