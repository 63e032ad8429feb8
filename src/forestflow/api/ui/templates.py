"""The dashboard's HTML: a page shell and the fragments htmx swaps into it.

Plain Python string building, no template engine: every value that comes from the server's
state or from a request goes through `esc` (names, metric names, keys, error messages,
predicted values), and the markup holds no inline script, no inline style and no event
handler attribute, so the page works under a Content-Security-Policy of `'self'` only
(`routes.CSP`). Hooks for the tests and for people scripting the page are `data-*`
attributes and class names: `tr[data-release]`, `td.phase-in[data-value]`, `td.score-count`.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from forestflow.api.ui.panels import SHADOW_ONLY, ContractPanel, Latency, ServablePanel
from forestflow.api.ui.predictions import RecentPrediction
from forestflow.api.ui.sampler import Sample
from forestflow.control.lineage import ServableHistory
from forestflow.control.plane import HistoryEntry
from forestflow.control.tokens import Principal
from forestflow.domain.codec import encode
from forestflow.domain.fqrv import Contract
from forestflow.errors import ForestFlowError

STATIC = "/ui/static"
HTMX_CONFIG = {
    # no <style> element injected (CSP style-src 'self'), nothing evaluated, no scripts
    # from swapped content, no page content kept in localStorage
    "includeIndicatorStyles": False,
    "allowEval": False,
    "allowScriptTags": False,
    "selfRequestsOnly": True,
    "historyEnabled": False,
    # swap the notices of 403, 404 and 503 into place; a 401 asks for a token instead
    "responseHandling": [
        {"code": "204", "swap": False},
        {"code": "[23]..", "swap": True},
        {"code": "401", "swap": False, "error": True},
        {"code": "[45]..", "swap": True, "error": True},
    ],
}
SPARK_WIDTH = 120
SPARK_HEIGHT = 24


def esc(value: object) -> str:
    """`value` as HTML text, quotes included (safe in element content and attributes)."""
    return html.escape(str(value), quote=True)


def contract_path(contract: Contract) -> str:
    """`org/project/n`, as the dashboard's paths name a contract (names need no quoting)."""
    return f"{contract.organization}/{contract.project}/{contract.contract_number}"


def page(*, auth: bool, contract: Contract | None, refresh_s: int, version: str) -> str:
    """The page shell: header, token form and the two polled regions (no data in it)."""
    title = f"{contract} — ForestFlow" if contract else "ForestFlow dashboard"
    main = (
        _polled("contract", f"/ui/fragments/contracts/{contract_path(contract)}", refresh_s)
        if contract
        else '<section id="contract"><p class="hint">Choose a contract.</p></section>'
    )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<meta name="htmx-config" content="{esc(json.dumps(HTMX_CONFIG))}">
<title>{esc(title)}</title>
<link rel="icon" href="{STATIC}/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="{STATIC}/dashboard.css">
<script src="{STATIC}/htmx.min.js"></script>
<script src="{STATIC}/dashboard.js"></script>
</head>
<body data-auth="{"required" if auth else "off"}">
<header>
<h1><a href="/ui">ForestFlow</a> <span class="subtitle">dashboard</span></h1>
<span class="version">v{esc(version)}</span>
<button type="button" id="sign-out" hidden>Forget token</button>
</header>
<form id="token-form" hidden>
<p>This server requires a bearer token (see docs/security.md). It is kept in this tab's
session storage only, and sent with each of the dashboard's requests.</p>
<label for="token">Token</label>
<input id="token" name="token" type="password" autocomplete="off" spellcheck="false" required>
<button type="submit">Use token</button>
<p id="token-message" class="error" role="alert"></p>
</form>
<div class="layout">
{_polled("contracts", "/ui/fragments/contracts", max(refresh_s, 5), tag="nav")}
<main>{main}</main>
</div>
</body>
</html>
"""


def _polled(element_id: str, url: str, every_s: int, *, tag: str = "section") -> str:
    """A region htmx fills from `url` at once, every `every_s` seconds, and on `ff-auth`
    (a token was given)."""
    return (
        f'<{tag} id="{element_id}" hx-get="{esc(url)}" '
        f'hx-trigger="load, every {every_s}s, ff-auth from:body" hx-swap="innerHTML">'
        f'<p class="hint">Loading…</p></{tag}>'
    )


def notice(error: ForestFlowError) -> str:
    """A refusal or failure, in place of a fragment."""
    return (
        f'<div class="notice" data-error="{esc(error.wire_name)}">'
        f"<strong>{esc(error.wire_name)}</strong> {esc(error.describe())}</div>"
    )


def principal_line(principal: Principal, auth: bool) -> str:
    """Who is looking: the token's name and role (nothing when auth is off)."""
    if not auth:
        return '<p class="who">Authentication is off.</p>'
    return (
        f'<p class="who" data-role="{esc(principal.role.value)}">Token '
        f"<strong>{esc(principal.name)}</strong>, role <strong>{esc(principal.role.value)}"
        "</strong></p>"
    )


def contracts_list(contracts: Sequence[Contract], who: str, selected: str | None) -> str:
    """The contracts fragment: who is looking, and a link per contract."""
    if not contracts:
        items = '<li class="hint">No contract yet: deploy a servable (README).</li>'
    else:
        items = "".join(
            f'<li><a href="/ui/contracts/{esc(contract_path(c))}" data-contract="{esc(c)}"'
            f"{' aria-current=page' if contract_path(c) == selected else ''}>{esc(c)}</a></li>"
            for c in contracts
        )
    return f'{who}<h2>Contracts</h2><ul class="contracts">{items}</ul>'


def contract_view(panel: ContractPanel, sections: Iterable[str], now_ms: int) -> str:
    """The contract fragment: settings, servables, servables that went, then `sections`."""
    settings: Mapping[str, Any] = encode(panel.settings)
    rows = "".join(_servable_row(s, panel.window_s) for s in panel.servables) or (
        '<tr><td colspan="12" class="hint">No servable.</td></tr>'
    )
    observed = (
        f"{panel.observed_requests} requests served over the last {panel.window_s:g} s"
        if panel.observed_requests
        else f"no request served over the last {panel.window_s:g} s"
    )
    return f"""<h2 data-contract="{esc(panel.contract)}">{esc(panel.contract)}</h2>
<p class="settings">Router <code>{esc(_policy(settings.get("router")))}</code>, expiration
<code>{esc(_policy(settings.get("expirationPolicy")))}</code>. Traffic: {esc(observed)}.</p>
<table class="servables">
<thead><tr><th>release</th><th>state</th><th>phase-in</th><th>traffic: intended / observed</th>
<th>scoreCount</th><th>shadeCount</th><th>shadow failed</th><th>shadow dropped</th>
<th>errors</th><th>latency (ms): p50 / p95 / p99</th><th>performance</th><th>since</th></tr>
</thead>
<tbody>{rows}{"".join(_gone_row(g, now_ms) for g in panel.gone)}</tbody>
</table>
<p class="footnote">Errors: served requests that failed since start-up (red when some did
over the last {panel.window_s:g} s; the kinds in the tooltip). Latency: served requests,
shadow ones below, over the last {panel.window_s:g} s (since start-up when none came in it),
from the histograms <code>/metrics</code> exports.</p>
{"".join(sections)}"""


def _servable_row(servable: ServablePanel, window_s: float) -> str:
    m = servable.metrics
    failure = (
        f'<div class="failure">{esc(m.failure)}</div>' if m.failure else ""
    )  # why a `failed` servable could not be loaded
    return f"""<tr data-release="{esc(servable.release)}" data-state="{esc(servable.state)}">
<td class="release">{esc(servable.release)}{failure}</td>
<td class="state"><span class="badge state-{esc(servable.state)}">{esc(servable.state)}</span>
{
        '<span class="badge shadows" title="scores every request in shadow mode">shadows</span>'
        if servable.shadows
        else ""
    }</td>
<td class="phase-in" data-value="{m.current_phase_in_pct}"><span class="pct">\
{m.current_phase_in_pct}%</span>{sparkline(servable.history)}</td>
<td class="traffic">{_split(servable.intended_share, servable.observed_share)}</td>
<td class="score-count num">{m.score_count}</td>
<td class="shade-count num">{m.shade_count}</td>
<td class="shadow-failed num{" alert" if m.shadow_failed_count else ""}">\
{m.shadow_failed_count}</td>
<td class="shadow-dropped num{" alert" if m.shadow_dropped_count else ""}">\
{m.shadow_dropped_count}</td>
{_errors(servable)}
<td class="latency">{_latency(servable.latency, window_s)}\
<div class="shadow-latency">shadow: {_latency(servable.shadow_latency, window_s)}</div></td>
<td class="performance">{_performance(m.performance_metrics)}</td>
<td class="since">{_since(m.created_at_ms, m.became_valid_at_ms)}</td>
</tr>"""


def _shadows_badge(servable: ServablePanel) -> str:
    """A badge for a servable that shadows besides answering (a shadow-only one says so)."""
    if not servable.shadows or servable.state == SHADOW_ONLY:
        return ""
    return (
        '<span class="badge shadows" title="scores the requests it does not answer">shadows</span>'
    )


def _gone_row(gone: ServableHistory, now_ms: int) -> str:
    release = gone.fqrv.release_version
    state = gone.state.value
    removal = gone.removal
    at_ms = removal.at_ms if removal else now_ms
    how = f"{max(0, (now_ms - at_ms) // 1000)} s ago"
    if removal and removal.by:
        how += f", by {removal.by}"
    if removal and removal.policy is not None:
        how += f", {_policy(encode(removal.policy))}"
    return (
        f'<tr class="gone" data-release="{esc(release)}" data-state="{esc(state)}">'
        f'<td class="release">{esc(release)}</td>'
        f'<td class="state"><span class="badge state-{esc(state)}">{esc(state)}</span></td>'
        f'<td colspan="8" class="hint">{esc(how)}</td><td></td><td class="since">'
        f"<div>deployed {_time_cell(gone.lineage.deployed_at_ms)}</div></td></tr>"
    )


def sparkline(samples: Sequence[Sample]) -> str:
    """Phase-in over the sampled time as a small SVG line (0–100 %, oldest at the left)."""
    if len(samples) < 2:
        return ""
    start, end = samples[0].at_ms, samples[-1].at_ms
    span = max(end - start, 1)
    points = " ".join(
        f"{(s.at_ms - start) * SPARK_WIDTH / span:.1f},"
        f"{SPARK_HEIGHT - 1 - s.phase_in_pct * (SPARK_HEIGHT - 2) / 100:.1f}"
        for s in samples
    )
    label = f"phase-in over the last {span / 1000:.0f} s"
    return (
        f'<svg class="spark" width="{SPARK_WIDTH}" height="{SPARK_HEIGHT}" '
        f'viewBox="0 0 {SPARK_WIDTH} {SPARK_HEIGHT}" role="img" aria-label="{esc(label)}">'
        f"<title>{esc(label)}</title>"
        f'<polyline points="{points}" fill="none" stroke-width="1.5"/></svg>'
    )


def _split(intended: float, observed: float | None) -> str:
    observed_text = "–" if observed is None else f"{observed * 100:.1f}%"
    observed_width = 0.0 if observed is None else observed * 100
    return (
        f'<span class="intended" data-value="{intended * 100:.1f}">{intended * 100:.1f}%</span>'
        f' / <span class="observed" data-value="{esc("" if observed is None else observed)}">'
        f"{observed_text}</span>"
        '<svg class="bars" width="100" height="10" viewBox="0 0 100 10" aria-hidden="true">'
        f'<rect class="bar-intended" x="0" y="0" height="4" width="{intended * 100:.1f}"/>'
        f'<rect class="bar-observed" x="0" y="6" height="4" width="{observed_width:.1f}"/></svg>'
    )


def _latency(summary: Latency | None, window_s: float) -> str:
    if summary is None:
        return '<span class="hint">–</span>'
    over = f"the last {window_s:g} s" if summary.recent else "every request since start-up"
    return (
        f'<span title="{summary.count} requests, {esc(over)}" data-recent='
        f'"{str(summary.recent).lower()}">{_ms(summary.p50)} / {_ms(summary.p95)} / '
        f"{_ms(summary.p99)}</span>"
    )


def _ms(value: float) -> str:
    """Milliseconds with two significant digits at least (0.12, 1.2, 12, 120)."""
    return f"{value:.2f}" if value < 1 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _errors(servable: ServablePanel) -> str:
    total = sum(servable.errors.values())
    kinds = ", ".join(f"{kind}: {n}" for kind, n in servable.errors.items())
    recent = servable.recent_errors
    alert = " alert" if recent else ""
    title = f' title="{esc(kinds)}"' if kinds else ""
    shown = "" if recent is None else str(recent)
    return f'<td class="errors num{alert}" data-recent="{shown}"{title}>{total}</td>'


def _performance(metrics: Mapping[str, float]) -> str:
    if not metrics:
        return '<span class="hint">–</span>'
    return (
        '<dl class="metrics">'
        + "".join(f"<dt>{esc(k)}</dt><dd>{v:.4g}</dd>" for k, v in sorted(metrics.items()))
        + "</dl>"
    )


def _since(created_ms: int, valid_ms: int | None) -> str:
    created = f"<div>deployed {_time_cell(created_ms)}</div>"
    if valid_ms is None:
        return created
    return created + f"<div>valid {_time_cell(valid_ms)}</div>"


def when(epoch_ms: int) -> str:
    """An epoch-milliseconds time as UTC `YYYY-MM-DD HH:MM:SSZ`."""
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(epoch_ms / 1000))


def _time_cell(epoch_ms: int) -> str:
    """The time of day (UTC), the full date in its title."""
    clock = time.strftime("%H:%M:%S", time.gmtime(epoch_ms / 1000))
    return f'<time title="{esc(when(epoch_ms))}">{clock}</time>'


def _policy(value: Any) -> str:
    """A wrapped policy as `Name(param=value, …)`."""
    if not isinstance(value, dict) or len(value) != 1:
        return json.dumps(value)
    ((name, params),) = value.items()
    if not params:
        return str(name)
    args = ", ".join(f"{k}={json.dumps(v)}" for k, v in params.items())
    return f"{name}({args})"


def section(title: str, section_id: str, body: str) -> str:
    """A titled part of the contract fragment."""
    return f'<section id="{esc(section_id)}" class="part"><h3>{esc(title)}</h3>{body}</section>'


def refused(error: ForestFlowError, what: str) -> str:
    """What a role may not read, said in place of it."""
    return (
        f'<p class="refused" data-error="{esc(error.wire_name)}">Your token may not read '
        f"{esc(what)}: {esc(error.describe())}.</p>"
    )


def predictions_table(predictions: Sequence[RecentPrediction]) -> str:
    """The recent prediction events of a contract, newest first."""
    if not predictions:
        return (
            '<p class="hint">No prediction logged since the server started (servables '
            "logging <code>NONE</code> are not shown).</p>"
        )
    rows = "".join(_prediction_row(p) for p in predictions)
    return (
        '<table class="predictions"><thead><tr><th>time</th><th>release</th><th>kind</th>'
        "<th>latency (ms)</th><th>rows</th><th>key</th><th>first row</th><th>prediction</th>"
        f"</tr></thead><tbody>{rows}</tbody></table>"
    )


def _prediction_row(p: RecentPrediction) -> str:
    kind = "served" if p.served_request else "shadow"
    return (
        f'<tr data-release="{esc(p.release)}" data-kind="{kind}" data-seq="{p.seq}">'
        f"<td>{_time_cell(p.timestamp_ms)}</td><td>{esc(p.release)}</td>"
        f'<td><span class="badge kind-{kind}">{kind}</span></td>'
        f'<td class="num">{p.latency_ms:.2f}</td><td class="num">{p.rows}</td>'
        f"<td>{esc(p.key) if p.key is not None else '–'}</td>"
        f"<td>{_values(p.features, more=p.more_features)}</td>"
        f"<td>{_values(p.prediction, more=p.more_outputs)}</td></tr>"
    )


def _values(values: Sequence[tuple[str, str]], *, more: bool) -> str:
    shown = ", ".join(f"{esc(name)}={esc(value)}" for name, value in values)
    return f'<span class="values">{shown}{", …" if more else ""}</span>'


def history_table(entries: Sequence[HistoryEntry]) -> str:
    """A contract's recorded commands and automatic changes, newest first."""
    if not entries:
        return '<p class="hint">Nothing recorded for this contract.</p>'
    rows = "".join(
        f'<tr data-kind="{esc(e.kind)}"><td class="num">{e.seq}</td>'
        f"<td>{_time_cell(e.recorded_at_ms)}</td><td>{esc(e.kind)}</td>"
        f"<td>{esc(_release_of(e.payload))}</td>"
        f"<td>{esc(e.actor) if e.actor is not None else '–'}</td>"
        f"<td><code>{esc(_short(e.payload))}</code></td></tr>"
        for e in entries
    )
    return (
        '<table class="history"><thead><tr><th>seq</th><th>recorded</th><th>event</th>'
        f"<th>release</th><th>actor</th><th>details</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _release_of(payload: Mapping[str, Any]) -> str:
    fqrv = payload.get("fqrv")
    return str(fqrv.get("releaseVersion", "")) if isinstance(fqrv, dict) else ""


def _short(payload: Mapping[str, Any], limit: int = 160) -> str:
    rest = {k: v for k, v in payload.items() if k not in ("fqrv", "contract")}
    text = json.dumps(rest, separators=(",", ":"), sort_keys=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"
