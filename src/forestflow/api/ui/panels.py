"""What the dashboard shows of a contract, gathered from the server's own state.

A `ContractPanel` is assembled from the same queries the REST routes answer from (the
control plane's metrics, settings and route plan), the request telemetry the serving path
counts on each servable (what `/metrics` exports: outcomes and latency histograms) and the
`MetricsSampler`'s series; `templates.py` renders it. Nothing here changes anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from forestflow.api.ui.sampler import MetricsSampler, Sample, request_telemetry
from forestflow.control.lineage import ServableHistory
from forestflow.control.plane import ControlPlane
from forestflow.control.telemetry import LATENCY_BUCKETS_S, RequestTelemetry
from forestflow.domain.fqrv import FQRV, Contract
from forestflow.domain.metrics import ServableMetrics
from forestflow.domain.roles import never_serves
from forestflow.domain.settings import ContractSettings, ServableSettings
from forestflow.errors import UnknownContract

LOADING = "loading"
INVALID = "invalid"
VALID = "valid"
SHADOW_ONLY = "shadow-only"
FAILED = "failed"
STATES = (LOADING, INVALID, VALID, SHADOW_ONLY, "expired", "deleted", FAILED)
"""Every state a servable is shown in (those that went are `expired` or `deleted`)."""


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
class Latency:
    """Latency percentiles of a servable's requests, in milliseconds, estimated from the
    histogram's buckets as Prometheus' `histogram_quantile` does."""

    p50: float
    p95: float
    p99: float
    count: int
    """Requests they rest on."""
    recent: bool
    """Whether they are of the sampler's window (else of every request since start-up)."""


def histogram_quantile(q: float, counts: Sequence[int]) -> float | None:
    """The `q` quantile (0–1) in seconds of observations counted into `LATENCY_BUCKETS_S`
    (plus +Inf); linear within its bucket; the highest finite bound for the +Inf bucket."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    below = 0
    for index, count in enumerate(counts):
        if count and below + count >= rank:
            if index == len(LATENCY_BUCKETS_S):
                return LATENCY_BUCKETS_S[-1]
            lower = LATENCY_BUCKETS_S[index - 1] if index else 0.0
            upper = LATENCY_BUCKETS_S[index]
            return lower + (upper - lower) * (rank - below) / count
        below += count
    return LATENCY_BUCKETS_S[-1]  # pragma: no cover - rank <= total always lands above


def latency(now: Sequence[int], then: Sequence[int] | None) -> Latency | None:
    """Percentiles of the requests counted between `then` and `now` (bucket counts), or of
    all of `now` when `then` is None or nothing was counted in between."""
    recent = then is not None and len(then) == len(now) and sum(now) > sum(then)
    counts = [a - b for a, b in zip(now, then, strict=True)] if recent and then else list(now)
    p50, p95, p99 = (histogram_quantile(q, counts) for q in (0.50, 0.95, 0.99))
    if p50 is None or p95 is None or p99 is None:
        return None
    return Latency(p50 * 1000, p95 * 1000, p99 * 1000, sum(counts), recent)


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
    latency: Latency | None
    """Of its served requests (None: none yet)."""
    shadow_latency: Latency | None
    """Of its shadow requests (None: none yet)."""
    errors: Mapping[str, int]
    """Served requests that failed since the server started, by error kind."""
    recent_errors: int | None
    """Served requests that failed over the window; None: not known yet."""

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
    gone: tuple[ServableHistory, ...]
    """Its last servables that expired or were deleted (empty for a caller who may not
    read the history, which is where that is told)."""
    observed_requests: int
    """Requests served over the window the observed shares are taken from."""
    window_s: float


def contract_panel(
    control: ControlPlane,
    sampler: MetricsSampler,
    contract: Contract,
    *,
    window_ms: int,
    gone: tuple[ServableHistory, ...] = (),
) -> ContractPanel:
    """The panel of `contract` as of now; 404 (`UnknownContract`) when there is none."""
    settings = control.contract_settings(contract)
    metrics = control.metrics(contract)
    servable_settings = dict(control.servables_settings(contract))
    shares, shadowing = _route_view(control, contract)
    telemetry = request_telemetry(control, contract)
    observed = sampler.observed_shares(contract, window_ms)
    observed_shares: Mapping[FQRV, float] = observed[0] if observed else {}
    panels = []
    for servable in metrics:
        fqrv = servable.fqrv
        share = shares.get(fqrv, 0.0)
        shadows = fqrv in shadowing
        requests = telemetry.get(fqrv)
        span = sampler.window(fqrv, window_ms)
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
                **_requests_view(requests, span),
            )
        )
    return ContractPanel(
        contract=contract,
        settings=settings,
        servables=tuple(panels),
        gone=gone,
        observed_requests=observed[1] if observed else 0,
        window_s=window_ms / 1000,
    )


def _requests_view(
    requests: RequestTelemetry | None, span: tuple[Sample, Sample] | None
) -> dict[str, Any]:
    """Latency and errors of a servable's requests, over the window where it has one."""
    if requests is None:  # not loaded (failed) or not evaluated yet
        return {"latency": None, "shadow_latency": None, "errors": {}, "recent_errors": None}
    first = span[0] if span and span[0].served_seconds else None
    errors = sum(requests.served.failures.values())
    return {
        "latency": latency(requests.served.seconds.counts, first.served_seconds if first else None),
        "shadow_latency": latency(
            requests.shadow.seconds.counts, first.shadow_seconds if first else None
        ),
        "errors": {kind: n for (_, kind), n in sorted(requests.served.failures.items())},
        "recent_errors": errors - first.served_errors if first else None,
    }


def _route_view(control: ControlPlane, contract: Contract) -> tuple[dict[FQRV, float], set[FQRV]]:
    """The plan's shares and the servables that shadow, as of the last evaluation pass
    (none before the contract's first one)."""
    try:
        route = control.route(contract)
    except UnknownContract:
        return {}, set()
    return route.plan.shares(), {r.fqrv for r in route.shadow_candidates}
