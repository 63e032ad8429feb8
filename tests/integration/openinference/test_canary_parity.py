"""A canary contract scored through gRPC behaves as through REST (issue 10 acceptance).

Two real servers with the same seed and the same deploys: a fair 50/50 split between two
releases and a third that only shadows. One is scored over the BASIC REST API, the other
with the stock `tritonclient.grpc` client. The routers draw from the same seeded random
stream, so the split must be the same request for request: the same `scoreCount` per
release, the same shadow counts, and the same prediction-log events.
"""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tests.integration.openinference.conftest import OipServer
from tests.payloads import POWERPLANT_FEATURES, POWERPLANT_ROWS, score_body, serve_body
from tritonclient.utils import np_to_triton_dtype

REQUESTS = 40
CONTRACT = "/samples/energy_output/0"


def deploy_canary(server: OipServer) -> None:
    client = server.client
    settings = {
        "expirationPolicy": {"KeepLatest": {"servablesToKeep": 3}},
        "router": {"FairPhaseInPctBasedRouter": {}},
    }
    assert client.post("/contract" + CONTRACT, json=settings).status_code == 201
    for release in ("v1", "v2"):
        assert client.post("/servable", json=serve_body(release)).status_code == 201
    shadow = serve_body("shadow", validity=[{"NeverValid": {}}])
    assert client.post("/servable", json=shadow).status_code == 201


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[OipServer, OipServer]]:
    rest, grpc = OipServer(tmp_path / "rest"), OipServer(tmp_path / "grpc")
    try:
        for server in (rest, grpc):
            deploy_canary(server.start())
        yield rest, grpc
    finally:
        rest.close()
        grpc.close()


def stats(server: OipServer) -> dict[str, tuple[int, int]]:
    answer = server.client.get(CONTRACT + "/stats").json()
    return {
        m["ServableMetrics"]["fqrv"]["releaseVersion"]: (
            m["ServableMetrics"]["scoreCount"],
            m["ServableMetrics"]["shadeCount"],
        )
        for m in answer
    }


def settled_stats(server: OipServer) -> dict[str, tuple[int, int]]:
    """`stats` once every shadow request has been scored: v1 and v2 shadow each other's
    requests, the third release every request (shadow calls wait to share a batch)."""
    deadline = time.monotonic() + 30
    while True:
        counts = stats(server)
        (v1_served, v1_shaded), (v2_served, v2_shaded) = counts["v1"], counts["v2"]
        if (v1_shaded, v2_shaded, counts["shadow"][1]) == (v2_served, v1_served, REQUESTS):
            return counts
        assert time.monotonic() < deadline, f"shadow requests still unscored: {counts}"


def written(server: OipServer) -> int:
    stats = server.client.get("/prediction-log/stats").json()["PredictionLogStats"]
    return int(stats["sinks"]["files"]["written"])


def logged(server: OipServer, expected: int) -> collections.Counter[tuple[str, bool]]:
    """(release, served) of every event in the prediction-log files, once all are written."""
    deadline = time.monotonic() + 30
    while written(server) < expected:
        assert time.monotonic() < deadline, "the prediction log did not catch up"
    events: collections.Counter[tuple[str, bool]] = collections.Counter()
    for path in sorted((server.data_dir / "predictions").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            event = json.loads(line)
            events[(event["fqrv"]["releaseVersion"], event["servedRequest"])] += 1
    return events


def test_grpc_splits_shadows_and_logs_as_rest_does(servers: tuple[OipServer, OipServer]) -> None:
    rest, grpc = servers
    row = POWERPLANT_ROWS[0]
    for _ in range(REQUESTS):
        answer = rest.client.post(CONTRACT + "/score", json=score_body([row]))
        assert answer.status_code == 200, answer.text
    client = grpcclient.InferenceServerClient(url=grpc.grpc_url)
    try:
        inputs = []
        for name, value in zip(POWERPLANT_FEATURES, row, strict=True):
            array = np.array([value], dtype=np.float64)
            tensor = grpcclient.InferInput(name, [1], np_to_triton_dtype(array.dtype))
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        for _ in range(REQUESTS):
            client.infer("samples.energy_output.0", inputs)
    finally:
        client.close()

    rest_stats, grpc_stats = settled_stats(rest), settled_stats(grpc)
    assert rest_stats == grpc_stats
    served = {release: counts[0] for release, counts in rest_stats.items()}
    assert served["v1"] + served["v2"] == REQUESTS
    assert served["shadow"] == 0
    assert 0 < served["v1"] < REQUESTS  # a real split, not all to one release
    assert rest_stats["shadow"][1] == REQUESTS  # the shadow saw every request

    # every request is logged by the release that served it and by the shadow
    rest_events, grpc_events = logged(rest, 2 * REQUESTS), logged(grpc, 2 * REQUESTS)
    assert rest_events == grpc_events
    assert rest_events[("shadow", False)] == REQUESTS
