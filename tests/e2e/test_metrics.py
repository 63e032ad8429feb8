"""`/metrics` of a real server under load (issue 12): every series docs/metrics.md documents
is exported (and nothing undocumented), counters moved by exactly what was sent, histogram
counts equal the requests, the pending-predictions gauge goes down as feedback joins, a
deleted servable's series go, and the Grafana dashboard queries only these metrics."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.e2e.conftest import ServerProcess
from tests.payloads import POWERPLANT_ROWS, contract_settings, score_body, serve_body

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "metrics.md"
DASHBOARD = ROOT / "docs" / "grafana" / "forestflow.json"

BASE = "/samples/energy_output/0"
CONTRACT = "samples.energy_output.0"
CONTRACT_ROUTE = "/{organization}/{project}/{contract_number:int}/score"
RELEASE_ROUTE = "/{organization}/{project}/{contract_number:int}/{release_version}/score"
FEEDBACK_ROUTE = "/{organization}/{project}/{contract_number:int}/feedback"
ENV = {
    # nothing may be dropped, so that every count below is exact
    "FORESTFLOW_SCHEDULING__SHADOW_QUEUE_SIZE": "100000",
}

N_OK = 300  # routed to v1, answered; v2 shadows each
N_BAD = 40  # routed to v1, refused by its input check: 422 InferenceRequestInvalidError
N_MALFORMED = 20  # refused before routing (malformed JSON): 400, on no servable
N_DIRECT = 30  # sent to v2 by name
JOINED = 100  # keys given their truth
REFUSED = 5  # records whose actual does not fit a regression
UNKNOWN = 3  # records under keys never logged


@dataclass(frozen=True)
class Documented:
    """One metric of docs/metrics.md."""

    name: str
    """As queried: with `_total` for a counter."""
    kind: str
    labels: frozenset[str]

    @property
    def family(self) -> str:
        """The family name the parser gives."""
        return self.name.removesuffix("_total") if self.kind == "counter" else self.name


def documented() -> dict[str, Documented]:
    """The metrics in the tables of docs/metrics.md, by family name."""
    found: dict[str, Documented] = {}
    for name, kind, labels in re.findall(
        r"^\| `([a-z_]+)` \| (counter|gauge|histogram) \|([^|]*)\|", DOCS.read_text(), re.M
    ):
        metric = Documented(name, kind, frozenset(re.findall(r"`([a-z_]+)`", labels)))
        found[metric.family] = metric
    return found


class Scrape:
    """One parsed `/metrics` answer."""

    def __init__(self, text: str) -> None:
        self.families = {f.name: f for f in text_string_to_metric_families(text)}

    def samples(self, name: str, **labels: str) -> list[Sample]:
        family = self.families[_family_of(name)]
        return [
            s
            for s in family.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]

    def value(self, name: str, **labels: str) -> float:
        """The one sample of `name` with (at least) `labels`."""
        found = self.samples(name, **labels)
        assert len(found) == 1, (name, labels, found)
        return found[0].value

    def total(self, name: str, **labels: str) -> float:
        """The sum of the samples of `name` with (at least) `labels`."""
        return sum(s.value for s in self.samples(name, **labels))


def _family_of(name: str) -> str:
    for suffix in ("_total", "_bucket", "_count", "_sum"):
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def scrape(client: httpx.Client) -> Scrape:
    answer = client.get("/metrics")
    assert answer.status_code == 200, answer.text
    return Scrape(answer.text)


def servable(release: str, **labels: str) -> dict[str, str]:
    return {"contract": CONTRACT, "release": release, **labels}


def settled(client: httpx.Client, shadows: int) -> Scrape:
    """The first scrape after every shadow request was scored and every prediction event
    written: both finish after the answers."""
    for _ in range(5000):
        metrics = scrape(client)
        shadowed = metrics.total("forestflow_requests_total", **servable("v2", mode="shadow"))
        emitted = metrics.value(
            "forestflow_prediction_events_total", sink="files", outcome="emitted"
        )
        written = metrics.value(
            "forestflow_prediction_events_total", sink="files", outcome="written"
        )
        backlog = metrics.value("forestflow_prediction_backlog_events", sink="emitter")
        if shadowed == shadows and emitted == written == N_OK + shadows and backlog == 0:
            return metrics
    raise AssertionError("shadow scoring or the prediction log did not settle")


@dataclass(frozen=True)
class Request:
    path: str
    body: dict[str, Any] | bytes
    status: int
    """The status it must be answered with."""


def load() -> list[Request]:
    """The score requests of the run, shuffled."""
    row = POWERPLANT_ROWS[0]
    requests = [
        Request(f"{BASE}/score", score_body([row], configs={"reqid": f"r-{i}"}), 200)
        for i in range(N_OK)
    ]
    requests += [Request(f"{BASE}/score", score_body([row], features=list("abcd")), 422)] * N_BAD
    requests += [Request(f"{BASE}/score", b"{not json", 400)] * N_MALFORMED
    requests += [Request(f"{BASE}/v2/score", score_body([row]), 200)] * N_DIRECT
    random.Random(7).shuffle(requests)
    return requests


def send(base_url: str, requests: list[Request]) -> None:
    """Send `requests` from 8 threads at once; each must get its status."""
    headers = {"content-type": "application/json"}

    def one(client: httpx.Client, request: Request) -> tuple[Request, int, str]:
        body = request.body
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        answer = client.post(request.path, content=content, headers=headers)
        return request, answer.status_code, answer.text

    with httpx.Client(base_url=base_url, timeout=30.0) as client, ThreadPoolExecutor(8) as pool:
        for request, status, text in pool.map(lambda r: one(client, r), requests):
            assert status == request.status, (request.path, text)


@dataclass
class Run:
    server: ServerProcess
    before: Scrape
    loaded: Scrape
    after_feedback: Scrape
    feedback: dict[str, Any]
    after_delete: Scrape


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    server = ServerProcess(tmp_path_factory.mktemp("metrics") / "data", ENV).start()
    try:
        yield _drive(server)
    finally:
        server.close()


def _drive(server: ServerProcess) -> Run:
    client = server.client
    assert client.post(f"/contract{BASE}", json=contract_settings()).status_code == 201
    keyed = {"logLevel": "FULL", "keyFeatures": ["reqid"]}
    for release, validity in (("v1", "ImmediatelyValid"), ("v2", "NeverValid")):
        body = serve_body(release, validity=[{validity: {}}])
        body["servableSettings"]["loggingSettings"] = keyed
        assert client.post("/servable", json=body).status_code == 201
    before = scrape(client)

    send(server.base_url, load())
    loaded = settled(client, shadows=N_OK)

    truth = [{"key": f"r-{i}", "actual": 450.0} for i in range(JOINED)]
    truth += [{"key": f"r-{JOINED + i}", "actual": "ten"} for i in range(REFUSED)]
    truth += [{"key": f"never-{i}", "actual": 1.0} for i in range(UNKNOWN)]
    answer = client.post(f"{BASE}/feedback", json={"records": truth})
    assert answer.status_code == 200, answer.text
    after_feedback = scrape(client)

    assert client.delete(f"{BASE}/v2").status_code == 200
    after_delete = scrape(client)
    return Run(server, before, loaded, after_feedback, answer.json(), after_delete)


class TestDocumented:
    def test_every_documented_metric_is_exported_with_its_labels(self, run: Run) -> None:
        # after the feedback, before the delete: every kind of series exists then
        for family, metric in documented().items():
            exported = run.after_feedback.families.get(family)
            assert exported is not None, f"{metric.name} is documented but not exported"
            assert exported.type == metric.kind, metric.name
            assert exported.samples, f"{metric.name} has no series"
            for sample in exported.samples:
                assert set(sample.labels) - {"le"} == metric.labels, (metric.name, sample)

    def test_every_exported_metric_is_documented(self, run: Run) -> None:
        undocumented = set(run.after_feedback.families) - set(documented())
        assert not undocumented, f"exported but not in docs/metrics.md: {sorted(undocumented)}"

    def test_the_dashboard_queries_only_documented_exported_metrics(self, run: Run) -> None:
        dashboard = json.loads(DASHBOARD.read_text())
        queried = set(re.findall(r"\b((?:forestflow|process)_[a-z0-9_]+)", DASHBOARD.read_text()))
        assert queried, "the dashboard queries no metric"
        for name in queried:
            metric = documented().get(_family_of(name))
            assert metric is not None, f"the dashboard queries {name}, which is not documented"
            queryable = (
                {f"{metric.name}_{part}" for part in ("bucket", "sum", "count")}
                if metric.kind == "histogram"
                else {metric.name}
            )
            assert name in queryable, f"the dashboard queries {name}; documented: {metric.name}"
            assert metric.family in run.after_feedback.families, f"{name} is not exported"
        assert dashboard["panels"], "the dashboard has no panels"


class TestRequests:
    def test_requests_by_outcome_per_servable_and_mode(self, run: Run) -> None:
        m = run.loaded
        total = "forestflow_requests_total"
        ok = {"status": "2xx", "error": "none"}
        assert m.value(total, **servable("v1", mode="served", **ok)) == N_OK
        bad = {"status": "4xx", "error": "InferenceRequestInvalidError"}
        assert m.value(total, **servable("v1", mode="served", **bad)) == N_BAD
        assert m.value(total, **servable("v2", mode="direct", **ok)) == N_DIRECT
        assert m.value(total, **servable("v2", mode="shadow", **ok)) == N_OK
        assert m.total(total, **servable("v2", mode="served")) == 0
        assert m.total(total, **servable("v1", mode="shadow")) == 0
        assert m.value("forestflow_scored_requests_total", **servable("v1")) == N_OK
        assert m.value("forestflow_shadowed_requests_total", **servable("v2")) == N_OK
        assert m.value("forestflow_shadow_dropped_requests_total", **servable("v2")) == 0
        assert m.value("forestflow_shadow_failed_requests_total", **servable("v2")) == 0

    def test_request_latency_counts_every_request_a_servable_took(self, run: Run) -> None:
        m = run.loaded
        count = "forestflow_request_duration_seconds_count"
        assert m.value(count, **servable("v1", mode="served")) == N_OK + N_BAD
        assert m.value(count, **servable("v2", mode="direct")) == N_DIRECT
        assert m.value(count, **servable("v2", mode="shadow")) == N_OK
        inf = m.value(
            "forestflow_request_duration_seconds_bucket", le="+Inf", **servable("v1", mode="served")
        )
        assert inf == N_OK + N_BAD
        assert (
            m.value("forestflow_request_duration_seconds_sum", **servable("v1", mode="served")) > 0
        )

    def test_http_requests_by_route_and_status_class(self, run: Run) -> None:
        m = run.loaded
        http = "forestflow_http_requests_total"
        route = {"route": CONTRACT_ROUTE, "method": "POST"}
        assert m.value(http, status="2xx", **route) == N_OK
        assert m.value(http, status="4xx", **route) == N_BAD + N_MALFORMED
        assert m.value(http, route=RELEASE_ROUTE, method="POST", status="2xx") == N_DIRECT
        count = "forestflow_http_request_duration_seconds_count"
        assert m.value(count, **route) == N_OK + N_BAD + N_MALFORMED
        # framework routes are counted under their templates: two deploys before the load
        assert run.before.value(http, route="/servable", method="POST", status="2xx") == 2
        paths = {s.labels["route"] for s in m.samples(http)}
        assert all(p.startswith("/") or p == "unmatched" for p in paths), paths
        assert not any("samples" in p for p in paths), "a raw path became a label"


class TestModelCalls:
    def test_batch_sizes_add_up_to_the_requests_that_reached_each_model(self, run: Run) -> None:
        m = run.loaded
        sizes = "forestflow_batch_size"
        for release, mode, requests in (
            ("v1", "served", N_OK + N_BAD),  # the input check runs in the model call
            ("v2", "served", N_DIRECT),  # direct requests share the served batcher
            ("v2", "shadow", N_OK),
            ("v1", "shadow", 0),
        ):
            labels = servable(release, mode=mode)
            calls = m.value(f"{sizes}_count", **labels)
            assert m.value(f"{sizes}_sum", **labels) == requests, labels
            assert calls <= requests, labels
            assert calls >= (1 if requests else 0), labels
            assert m.value("forestflow_model_duration_seconds_count", **labels) == calls

    def test_nothing_waits_once_the_load_is_over(self, run: Run) -> None:
        depths = run.loaded.samples("forestflow_queue_depth")
        assert len(depths) == 4  # 2 servables x served, shadow
        assert all(s.value == 0 for s in depths)
        busy = run.loaded.samples("forestflow_model_workers_busy")
        assert {s.labels["mode"] for s in busy} == {"served", "shadow"}
        assert run.loaded.value("forestflow_model_workers") >= 1
        assert run.loaded.value("forestflow_shadow_queue_capacity") == 100000


class TestPolicies:
    def test_phase_in_traffic_share_validity_and_loading(self, run: Run) -> None:
        m = run.loaded
        assert m.value("forestflow_phase_in_percent", **servable("v1")) == 100
        assert m.value("forestflow_traffic_share", **servable("v1")) == 1.0
        assert m.value("forestflow_traffic_share", **servable("v2")) == 0.0
        assert m.value("forestflow_servable_valid", **servable("v1")) == 1
        assert m.value("forestflow_servable_valid", **servable("v2")) == 0
        assert m.value("forestflow_servable_loaded", **servable("v1")) == 1
        assert m.value("forestflow_servable_loaded", **servable("v2")) == 1


class TestPredictionLogAndFeedback:
    def test_every_logged_prediction_was_written(self, run: Run) -> None:
        m = run.loaded
        events = "forestflow_prediction_events_total"
        # served requests of v1 and shadow requests of v2; direct requests are not logged
        assert m.value(events, sink="files", outcome="written") == 2 * N_OK
        assert m.value(events, sink="files", outcome="dropped") == 0
        assert m.value("forestflow_prediction_backlog_events", sink="files") == 0

    def test_joins_and_refusals_are_counted_and_pending_goes_down(self, run: Run) -> None:
        accepted = run.feedback["FeedbackAccepted"]
        assert (accepted["matched"], len(accepted["refused"])) == (JOINED, REFUSED)
        pending = "forestflow_feedback_pending_predictions"
        assert run.loaded.value(pending) == 2 * N_OK  # one per servable and key
        m = run.after_feedback
        assert m.value(pending) == 2 * N_OK - 2 * JOINED
        records = "forestflow_feedback_records_total"
        for outcome, count in (
            ("matched", JOINED),
            ("refused", REFUSED),
            ("unknown", UNKNOWN),
            ("mismatched", 0),
        ):
            assert m.value(records, contract=CONTRACT, outcome=outcome) == count, outcome
        joined = "forestflow_feedback_joined_predictions_total"
        assert m.value(joined, **servable("v1")) == JOINED
        assert m.value(joined, **servable("v2")) == JOINED
        assert m.value("forestflow_feedback_predictions_total", outcome="joined") == 2 * JOINED
        feedback = {"route": FEEDBACK_ROUTE, "method": "POST", "status": "2xx"}
        assert m.value("forestflow_http_requests_total", **feedback) == 1


class TestServer:
    def test_store_writes_process_and_build(self, run: Run) -> None:
        m = run.loaded
        # the contract and the two deploys were acknowledged after their appends
        assert m.value("forestflow_store_write_duration_seconds_count", operation="append") >= 3
        assert m.value("process_resident_memory_bytes") > 0
        assert m.value("process_cpu_seconds_total") > 0
        (info,) = m.samples("forestflow_build_info")
        assert info.value == 1

    def test_a_deleted_servable_has_no_series_left(self, run: Run) -> None:
        def releases(metrics: Scrape) -> set[str]:
            return {
                s.labels["release"]
                for family in metrics.families.values()
                for s in family.samples
                if s.labels.get("contract") == CONTRACT and "release" in s.labels
            }

        assert releases(run.after_feedback) == {"v1", "v2"}
        assert releases(run.after_delete) == {"v1"}
        requests = run.after_delete.value(
            "forestflow_requests_total", **servable("v1", mode="served", status="2xx", error="none")
        )
        assert requests == N_OK
