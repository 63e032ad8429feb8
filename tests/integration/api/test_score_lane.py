"""The score lane answers exactly as the framework's score routes do, case by case.

`App.asgi` serves the score routes itself (api/rest/score_lane.py); `App.api` is the
framework app behind it, whose own score routes are the reference. Each request is sent
to both and the answers compared: status, body and the headers a client relies on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from forestflow.api.rest.score_lane import score_path
from forestflow.domain.fqrv import FQRV
from forestflow.domain.frame import Frame
from forestflow.testing import FakeRunner
from tests.integration.api.conftest import Harness, HarnessFactory
from tests.integration.api.test_auth import bearer, secured
from tests.payloads import (
    POWERPLANT_FEATURES,
    POWERPLANT_ROWS,
    contract_settings,
    score_body,
    serve_body,
)

BASE = "/samples/energy_output/0"
JSON = {"Content-Type": "application/json"}


async def both(harness: Harness, path: str, **request: Any) -> tuple[httpx.Response, ...]:
    """The same POST answered by the lane and by the framework's route."""
    framework = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=harness.app.api), base_url="http://localhost"
    )
    async with framework:
        return (
            await harness.client.post(path, **request),
            await framework.post(path, **request),
        )


def assert_same(lane: httpx.Response, framework: httpx.Response, status: int) -> None:
    assert lane.status_code == framework.status_code == status, (lane.text, framework.text)
    assert lane.json() == framework.json()
    assert lane.headers["content-type"] == framework.headers["content-type"]
    assert lane.headers.get("www-authenticate") == framework.headers.get("www-authenticate")


@pytest.fixture
async def deployed(harness_factory: HarnessFactory) -> Harness:
    harness = await harness_factory()
    await harness.client.post("/contract" + BASE, json=contract_settings(keep=2))
    answer = await harness.client.post("/servable", json=serve_body("v1"))
    assert answer.status_code == 201, answer.text
    return harness


def row_body(values: list[Any], tensor_type: str = "Float64") -> dict[str, Any]:
    return score_body([values], tensor_type=tensor_type)


CASES: list[tuple[str, str, dict[str, Any], int]] = [
    ("scored", BASE + "/score", {"json": score_body()}, 200),
    ("scored by one release", BASE + "/v1/score", {"json": score_body()}, 200),
    (
        "two groups",
        BASE + "/score",
        {
            "json": {
                "schema": [
                    {"type": "Float64", "fields": POWERPLANT_FEATURES[:2]},
                    {"type": "Float32", "fields": POWERPLANT_FEATURES[2:]},
                ],
                "datum": [
                    {
                        "tensors": [
                            {"Float64": {"data": [14.96, 41.76]}},
                            {"Float32": {"data": [1024.07, 73.17]}},
                        ]
                    }
                ],
            }
        },
        200,
    ),
    (
        "integers for a float model",
        BASE + "/score",
        {"json": row_body([15, 42, 1024, 73], "Int64")},
        200,
    ),
    ("configs", BASE + "/score", {"json": {**score_body(), "configs": {"id": 7}}}, 200),
    (
        "a missing value (the forest takes it)",
        BASE + "/score",
        {"json": row_body([None, 41.76, 1024.07, 73.17])},
        200,
    ),
    (
        "a string among numbers",
        BASE + "/score",
        {"json": row_body(["x", 41.76, 1024.07, 73.17])},
        422,
    ),
    (
        "a boolean among numbers",
        BASE + "/score",
        {"json": row_body([True, 41.76, 1024.07, 73.17])},
        422,
    ),
    (
        "a number beyond Float32",
        BASE + "/score",
        {"json": row_body([1e39, 41.76, 1024.07, 73.17], "Float32")},
        422,
    ),
    (
        "an integer beyond Int64",
        BASE + "/score",
        {"json": row_body([2**63, 41, 1024, 73], "Int64")},
        422,
    ),
    (
        "a misspelt feature",
        BASE + "/score",
        {"json": score_body(features=["AT", "V", "AP", "RHH"])},
        422,
    ),
    ("ragged datum", BASE + "/score", {"json": row_body([14.96, 41.76])}, 422),
    ("malformed JSON", BASE + "/score", {"content": b"{", "headers": JSON}, 400),
    ("empty body", BASE + "/score", {"content": b"", "headers": JSON}, 400),
    (
        "not JSON",
        BASE + "/score",
        {"content": b"a,b", "headers": {"Content-Type": "text/csv"}},
        415,
    ),
    ("too large", BASE + "/score", {"content": b" " * (32 * 2**20 + 1), "headers": JSON}, 413),
    ("an unknown contract", "/samples/other/0/score", {"json": score_body()}, 404),
    ("an unknown release", BASE + "/v9/score", {"json": score_body()}, 404),
    ("an invalid name", "/a%20b/energy_output/0/score", {"json": score_body()}, 422),
    (
        "a contract number beyond int64",
        f"/samples/energy_output/{2**63}/score",
        {"json": score_body()},
        422,
    ),
    (
        "a foreign Host",
        BASE + "/score",
        {"json": score_body(), "headers": {"Host": "evil.example"}},
        400,
    ),
]


@pytest.mark.parametrize(("case", "path", "request_", "status"), CASES, ids=[c[0] for c in CASES])
async def test_the_lane_answers_as_the_route_does(
    deployed: Harness, case: str, path: str, request_: dict[str, Any], status: int
) -> None:
    lane, framework = await both(deployed, path, **request_)
    assert_same(lane, framework, status)


async def test_the_lane_scores_what_the_model_predicts(deployed: Harness) -> None:
    lane, framework = await both(deployed, BASE + "/score", json=score_body())
    prediction = lane.json()["Prediction"]
    assert prediction["servableFQRV"] == "samples.energy_output.0.v1"
    values = [row["tensors"][0]["Float32"]["data"][0] for row in prediction["datum"]]
    assert len(values) == 2
    assert all(400 < value < 500 for value in values)  # megawatts of a power plant
    assert lane.json() == framework.json()


async def test_scores_count_and_log_alike(deployed: Harness) -> None:
    await both(deployed, BASE + "/score", json=score_body())
    stats = (await deployed.client.get(BASE + "/stats")).json()
    assert stats[0]["ServableMetrics"]["scoreCount"] == 2


async def test_other_methods_and_paths_go_to_the_framework(deployed: Harness) -> None:
    assert (await deployed.client.get(BASE + "/score")).status_code == 405
    trailing = await deployed.client.post(BASE + "/score/", json=score_body())
    assert trailing.status_code != 200


async def test_not_ready_is_503_on_both(deployed: Harness) -> None:
    deployed.app.ready = False
    lane, framework = await both(deployed, BASE + "/score", json=score_body())
    assert_same(lane, framework, 503)


async def test_an_unexpected_failure_is_a_clean_500(harness_factory: HarnessFactory) -> None:
    def explode(_fqrv: FQRV, _frame: Frame) -> Frame:
        raise RuntimeError("not a ForestFlow error")

    harness = await harness_factory(runner=FakeRunner(respond=explode))
    await harness.client.post("/contract" + BASE, json=contract_settings(keep=2))
    await harness.client.post("/servable", json=serve_body("v1"))
    lane, framework = await both(harness, BASE + "/score", json=score_body())
    assert_same(lane, framework, 500)
    after = await harness.client.get("/health/live")
    assert after.status_code == 200


async def test_tokens_and_roles_are_checked_alike(
    harness_factory: HarnessFactory, tmp_path: Path
) -> None:
    harness, tokens = await secured(harness_factory, tmp_path)
    await harness.client.post(
        "/contract" + BASE, json=contract_settings(keep=2), headers=bearer(tokens["admin"])
    )
    await harness.client.post("/servable", json=serve_body("v1"), headers=bearer(tokens["admin"]))
    for headers, status in (
        ({}, 401),
        (bearer("not-a-token"), 401),
        ({"Authorization": "Basic abc"}, 401),
        (bearer(tokens["scorer"]), 200),
        (bearer(tokens["shadow-deployer"]), 200),
    ):
        lane, framework = await both(harness, BASE + "/score", json=score_body(), headers=headers)
        assert_same(lane, framework, status)


async def test_with_cors_a_browser_request_gets_the_cors_headers(
    harness_factory: HarnessFactory,
) -> None:
    harness = await harness_factory(security={"cors_origins": ["https://app.example"]})
    await harness.client.post("/contract" + BASE, json=contract_settings(keep=2))
    await harness.client.post("/servable", json=serve_body("v1"))
    answer = await harness.client.post(
        BASE + "/score", json=score_body(), headers={"Origin": "https://app.example"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["access-control-allow-origin"] == "https://app.example"


def test_score_paths_are_recognised_as_the_routes_match_them() -> None:
    assert score_path("/a/b/0/score") == ("a", "b", 0, None)
    assert score_path("/a/b/12/v1/score") == ("a", "b", 12, "v1")
    for other in (
        "/a/b/0/score/",
        "/a/b/x/score",
        "/a/b/-1/score",
        "/a/b/²/score",
        "//b/0/score",
        "/a/b/0//score",
        "/a/b/0/v1/x/score",
        "/a/0/score",
        "/a/b/0/feedback",
        "/contract/a/b/0",
    ):
        assert score_path(other) is None, other


V2 = "/v2/models/samples.energy_output.0"


def v2_inputs(rows: list[list[Any]] = POWERPLANT_ROWS, datatype: str = "FP64") -> dict[str, Any]:
    return {
        "inputs": [
            {"name": name, "datatype": datatype, "shape": [len(rows)], "data": [r[j] for r in rows]}
            for j, name in enumerate(POWERPLANT_FEATURES)
        ]
    }


V2_CASES: list[tuple[str, str, dict[str, Any], int]] = [
    ("inferred", V2 + "/infer", {"json": v2_inputs()}, 200),
    ("inferred by one release", V2 + "/versions/v1/infer", {"json": v2_inputs()}, 200),
    ("parameters", V2 + "/infer", {"json": {**v2_inputs(), "parameters": {"id": "7"}}}, 200),
    ("a string among numbers", V2 + "/infer", {"json": v2_inputs([["x", 1, 2, 3]])}, 400),
    ("malformed JSON", V2 + "/infer", {"content": b"{", "headers": JSON}, 400),
    ("not JSON", V2 + "/infer", {"content": b"a", "headers": {"Content-Type": "text/csv"}}, 415),
    (
        "compressed",
        V2 + "/infer",
        {"json": v2_inputs(), "headers": {"Content-Encoding": "gzip"}},
        415,
    ),
    ("an unknown model", "/v2/models/samples.other.0/infer", {"json": v2_inputs()}, 404),
    ("not a contract name", "/v2/models/nonsense/infer", {"json": v2_inputs()}, 400),
    ("an unknown version", V2 + "/versions/v9/infer", {"json": v2_inputs()}, 404),
    (
        "a foreign Host",
        V2 + "/infer",
        {"json": v2_inputs(), "headers": {"Host": "evil.example"}},
        400,
    ),
]


@pytest.mark.parametrize(
    ("case", "path", "request_", "status"), V2_CASES, ids=[c[0] for c in V2_CASES]
)
async def test_the_lane_infers_as_the_protocol_route_does(
    deployed: Harness, case: str, path: str, request_: dict[str, Any], status: int
) -> None:
    lane, framework = await both(deployed, path, **request_)
    assert lane.status_code == framework.status_code == status, (lane.text, framework.text)
    assert lane.json() == framework.json()
    assert lane.headers["content-type"] == framework.headers["content-type"]


async def test_inference_tokens_are_checked_alike(
    harness_factory: HarnessFactory, tmp_path: Path
) -> None:
    harness, tokens = await secured(harness_factory, tmp_path)
    admin = bearer(tokens["admin"])
    await harness.client.post("/contract" + BASE, json=contract_settings(keep=2), headers=admin)
    await harness.client.post("/servable", json=serve_body("v1"), headers=admin)
    for headers, status in (({}, 401), (bearer("nope"), 401), (bearer(tokens["scorer"]), 200)):
        lane, framework = await both(harness, V2 + "/infer", json=v2_inputs(), headers=headers)
        assert lane.status_code == framework.status_code == status, (lane.text, framework.text)
        assert lane.json() == framework.json()
        assert lane.headers.get("www-authenticate") == framework.headers.get("www-authenticate")
