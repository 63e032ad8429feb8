"""What the dashboard shows of a contract, gathered from the server's own state.

A `ContractPanel` is assembled from the same queries the REST routes answer from (the
control plane's metrics, settings and route plan), the `MetricsSampler`'s series and the
`RecentPredictions` ring; `templates.py` renders it. Nothing here changes anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from forestflow.api.ui.sampler import Gone, MetricsSampler, Sample
from forestflow.control.plane import ControlPlane
from forestflow.domain.fqrv import FQRV, Contract
from forestflow.domain.metrics import ServableMetrics
from forestflow.domain.roles import never_serves
from forestflow.domain.settings import ContractSettings, ServableSettings
from forestflow.errors import UnknownContract
from forestflow.predictionlog.recent import LatencySummary, RecentPredictions

LOADING = "loading"
INVALID = "invalid"
VALID = "valid"
SHADOW_ONLY = "shadow-only"
FAILED = "failed"
STATES = (LOADING, INVALID, VALID, SHADOW_ONLY, "expired", "deleted", FAILED)
"""Every state a servable is shown in (`Gone` ones are `expired` or `deleted`)."""


def servable_state(
    metrics: ServableMetrics, settings: ServableSettings, *, share: float, shadows: bool
) -> str:
    """The state a servable is shown in.

    - `failed`: recorded, but its model could not be loaded (`failure` says why);
    - `loading`: deployed, not yet through an evaluation pass;
    - `shadow-only`: its policy holds `NeverValid`, or it is valid and fully phased in but
      the router gives it no traffic while it scores every request in shadow mode (the
      previous release under `LatestPhaseInPctBasedRouter`);
    - `invalid`: its validity rules do not hold (yet);
    - `valid`: it may answer requests (its share may still be 0 at the start of a phase-in).
    """
    if metrics.state == FAILED:
        return FAILED
    if metrics.last_valid is None:
        return LOADING
    if never_serves(settings.policy_settings):
        return SHADOW_ONLY
    if not metrics.last_valid:
        return INVALID
    if share <= 0 and shadows and metrics.current_phase_in_pct >= 100:
        return SHADOW_ONLY
    return VALID


@dataclass(frozen=True, slots=True)
class ServablePanel:
    """One servable as the dashboard shows it."""

    metrics: ServableMetrics
    state: str
    intended_share: float
    """The router plan's share of traffic (0–1)."""
    observed_share: float | None
    """Its share of the requests served over the sampler's window; None: not known yet."""
    shadows: bool
    """Whether it scores the contract's requests in shadow mode (log level is not NONE)."""
    history: tuple[Sample, ...]
    latency: LatencySummary | None
    """Served requests, from the last logged events."""
    shadow_latency: LatencySummary | None
    """Shadow requests, from the last logged events."""

    @property
    def release(self) -> str:
        """The servable's release version."""
        return self.metrics.fqrv.release_version


@dataclass(frozen=True, slots=True)
class ContractPanel:
    """A contract, its servables and those that went."""

    contract: Contract
    settings: ContractSettings
    servables: tuple[ServablePanel, ...]
    gone: tuple[Gone, ...]
    observed_requests: int
    """Requests served over the window the observed shares are taken from."""
    window_s: float


def contract_panel(
    control: ControlPlane,
    sampler: MetricsSampler,
    recent: RecentPredictions,
    contract: Contract,
    *,
    window_ms: int,
) -> ContractPanel:
    """The panel of `contract` as of now; 404 (`UnknownContract`) when there is none."""
    settings = control.contract_settings(contract)
    metrics = control.metrics(contract)
    servable_settings = dict(control.servables_settings(contract))
    shares, shadowing = _route_view(control, contract)
    observed = sampler.observed_shares(contract, window_ms)
    observed_shares: Mapping[FQRV, float] = observed[0] if observed else {}
    panels = []
    for servable in metrics:
        fqrv = servable.fqrv
        share = shares.get(fqrv, 0.0)
        shadows = fqrv in shadowing
        panels.append(
            ServablePanel(
                metrics=servable,
                state=servable_state(
                    servable, servable_settings[fqrv], share=share, shadows=shadows
                ),
                intended_share=share,
                observed_share=observed_shares.get(fqrv) if observed else None,
                shadows=shadows,
                history=tuple(sampler.history(fqrv)),
                latency=recent.latency(fqrv, served=True),
                shadow_latency=recent.latency(fqrv, served=False),
            )
        )
    return ContractPanel(
        contract=contract,
        settings=settings,
        servables=tuple(panels),
        gone=tuple(sampler.gone(contract)),
        observed_requests=observed[1] if observed else 0,
        window_s=window_ms / 1000,
    )


def _route_view(control: ControlPlane, contract: Contract) -> tuple[dict[FQRV, float], set[FQRV]]:
    """The plan's shares and the servables that shadow, as of the last evaluation pass
    (none before the contract's first one)."""
    try:
        route = control.route(contract)
    except UnknownContract:
        return {}, set()
    return route.plan.shares(), {r.fqrv for r in route.shadow_candidates}
