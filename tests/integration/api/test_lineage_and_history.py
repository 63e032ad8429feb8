"""Lineage and history (issue 11, scope 5): what was deployed, from where, by whom, and
how each servable of a contract left — over the REST API, across restarts.

The registry is a real `mlflow server`; tokens are real, in the state file.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from forestflow.clock import SystemClock
from forestflow.control.tokens import TokenRegistry
from forestflow.domain.roles import Role
from forestflow.store.sqlite import open_store
from tests.integration.api.conftest import Harness, HarnessFactory
from tests.integration.api.test_git_and_registry_deploys import (
    MLFLOW_ONNX_MODEL,
    ONNX_WITH_NAMES,
    registry_body,
)
from tests.integration.api.test_openapi import check_answer
from tests.mlflow_server import MlflowServer
from tests.payloads import SINGLE_INPUT_MODEL, contract_json, contract_settings, serve_body

C = "/samples/energy_output/0"
REGISTRY = "/registry/powerplant/0"


def tokens_in(data_dir: Path) -> dict[str, dict[str, str]]:
    """A deployer's and an admin's token, created in the state file; their auth headers."""
    store = open_store(data_dir)
    try:
        registry = TokenRegistry(store, SystemClock())
        made = {name: registry.create(name, role) for name, role in TOKENS.items()}
    finally:
        store.close()
    return {name: {"Authorization": f"Bearer {token}"} for name, token in made.items()}


TOKENS = {"ci": Role.DEPLOYER, "ops": Role.ADMIN}


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


async def history(harness: Harness, path: str = C, **headers: str) -> list[dict[str, Any]]:
    body = ok(await harness.client.get(f"{path}/history", headers=headers))
    found: list[dict[str, Any]] = body["ContractHistory"]["servables"]
    return found


class TestLineage:
    async def test_an_alias_deploy_shows_the_version_it_resolved_to_and_the_hash(
        self, harness_factory: HarnessFactory, mlflow_server: MlflowServer
    ) -> None:
        version = mlflow_server.register("lineage-alias", MLFLOW_ONNX_MODEL, alias="champion")
        harness = await harness_factory(storage={"mlflow_tracking_uri": mlflow_server.uri})
        body = registry_body("models:/lineage-alias@champion", "r1", ONNX_WITH_NAMES)
        body["tags"] = {"team": "energy", "ticket": "ML-11"}
        ok(await harness.client.post("/servable", json=body), 201)

        settings = ok(await harness.client.get(f"{REGISTRY}/r1/settings"))
        lineage = settings["ServableSettings"]["lineage"]
        assert lineage == {
            "source": "models:/lineage-alias@champion",
            "resolvedSource": f"models:/lineage-alias/{version}",
            "artifactPath": None,
            "digest": lineage["digest"],
            "flavor": ONNX_WITH_NAMES,
            "tags": {"team": "energy", "ticket": "ML-11"},
            "deployedBy": None,
            "deployedAtMS": harness.clock.now_ms(),
        }
        assert lineage["digest"].startswith("sha256:")
        metadata = ok(await harness.client.get(f"{REGISTRY}/r1/metadata"))
        assert metadata["BasicMetaData"]["lineage"] == lineage
        (listed,) = ok(await harness.client.get(f"{REGISTRY}/servable-settings"))
        assert listed["ServableSettings"]["lineage"] == lineage
        (deployed,) = await history(harness, REGISTRY)
        assert deployed["lineage"] == lineage
        assert (deployed["state"], deployed["removal"]) == ("loaded", None)

    async def test_a_pinned_version_and_a_plain_path_resolve_to_themselves(
        self, harness: Harness
    ) -> None:
        ok(await harness.client.post("/servable", json=serve_body("v1")), 201)

        settings = ok(await harness.client.get(f"{C}/v1/settings"))
        lineage = settings["ServableSettings"]["lineage"]
        assert lineage["source"] == lineage["resolvedSource"] == SINGLE_INPUT_MODEL.as_uri()
        assert lineage["flavor"] == serve_body("v1")["flavor"]
        assert lineage["tags"] == {}


class TestContractHistory:
    async def test_an_expiry_and_a_delete_name_the_policy_and_the_deleter_across_restarts(
        self, harness_factory: HarnessFactory, tmp_path: Path
    ) -> None:
        data_dir = tmp_path / "data"
        tokens = tokens_in(data_dir)
        harness = await harness_factory(data_dir=data_dir, security={"auth": "required"})
        client, ci, ops = harness.client, tokens["ci"], tokens["ops"]
        ok(await client.post(f"/contract{C}", json=contract_settings(keep=2), headers=ci), 201)
        deployed_at = {}
        for release in ("v1", "v2", "v3"):
            harness.clock.advance(seconds=60)
            deployed_at[release] = harness.clock.now_ms()
            ok(await client.post("/servable", json=serve_body(release), headers=ci), 201)
        harness.clock.advance(seconds=60)
        ok(await client.delete(f"{C}/v2", headers=ops))

        servables = await history(harness, **ops)

        assert [(s["fqrv"]["releaseVersion"], s["state"]) for s in servables] == [
            ("v3", "loaded"),
            ("v2", "deleted"),
            ("v1", "expired"),
        ]
        v3, v2, v1 = servables
        assert v3["removal"] is None
        assert v2["removal"] == {
            "reason": "deleted",
            "by": "ops",
            "policy": None,
            "atMS": harness.clock.now_ms(),
            "description": "deleted by ops",
        }
        assert v1["removal"] == {
            "reason": "expired",
            "by": "ci",  # expired by the evaluation of ci's deploy of v3
            "policy": {"KeepLatest": {"servablesToKeep": 2}},
            "atMS": deployed_at["v3"],
            "description": "expired by KeepLatest(servablesToKeep=2)",
        }
        for servable in servables:
            release = servable["fqrv"]["releaseVersion"]
            assert servable["lineage"]["deployedBy"] == "ci"
            assert servable["lineage"]["deployedAtMS"] == deployed_at[release]
            assert servable["lineage"]["digest"].startswith("sha256:")
        settings = ok(await client.get(f"{C}/v3/settings", headers=ci))
        assert settings["ServableSettings"]["lineage"] == v3["lineage"]
        await harness.app.shutdown()

        restarted = await harness_factory(data_dir=data_dir, security={"auth": "required"})
        assert await history(restarted, **ops) == servables
        after = ok(await restarted.client.get(f"{C}/v3/settings", headers=ci))
        assert after == settings

    async def test_pages_follow_before_newest_first(self, harness: Harness) -> None:
        ok(await harness.client.post(f"/contract{C}", json=contract_settings(keep=1)), 201)
        releases = [f"v{n}" for n in range(1, 8)]
        for release in releases:
            harness.clock.advance(seconds=1)
            ok(await harness.client.post("/servable", json=serve_body(release)), 201)

        pages: list[list[dict[str, Any]]] = []
        before = ""
        while not pages or pages[-1]:
            body = ok(await harness.client.get(f"{C}/history?limit=3{before}"))
            pages.append(body["ContractHistory"]["servables"])
            if pages[-1]:
                before = f"&before={pages[-1][-1]['seq']}"

        assert [len(page) for page in pages] == [3, 3, 1, 0]
        listed = [s["fqrv"]["releaseVersion"] for page in pages for s in page]
        assert listed == releases[::-1]
        assert [s["state"] for page in pages for s in page] == ["loaded"] + ["expired"] * 6
        assert [s for page in pages for s in page] == await history(harness)

    @pytest.mark.parametrize("limit", [0, 1001])
    async def test_a_page_size_out_of_range_is_refused(self, harness: Harness, limit: int) -> None:
        ok(await harness.client.post("/servable", json=serve_body("v1")), 201)
        refused = await harness.client.get(f"{C}/history?limit={limit}")
        assert refused.status_code == 422
        assert refused.json()["InvalidRequestError"]["field"] == "limit"

    async def test_a_deleted_contract_keeps_its_history_an_unknown_one_is_404(
        self, harness: Harness
    ) -> None:
        ok(await harness.client.post("/servable", json=serve_body("v1")), 201)
        ok(await harness.client.delete(f"{C}/v1"))
        ok(await harness.client.delete(C))

        (gone,) = await history(harness)
        assert (gone["state"], gone["removal"]["description"]) == (
            "deleted",
            "deleted by a client (authentication was off)",
        )
        unknown = await harness.client.get("/samples/energy_output/9/history")
        assert unknown.status_code == 404
        assert unknown.json()["UnknownContract"]["contract"] == contract_json(n=9)
        empty = ok(await harness.client.post("/contract/samples/energy_output/8", json={}), 201)
        assert empty == {"ContractCreatedSuccessfully": {"contract": contract_json(n=8)}}
        assert await history(harness, "/samples/energy_output/8") == []

    async def test_a_redeploy_of_a_release_is_a_servable_of_its_own(self, harness: Harness) -> None:
        ok(await harness.client.post("/servable", json=serve_body("v1")), 201)
        ok(await harness.client.delete(f"{C}/v1"))
        harness.clock.advance(seconds=5)
        ok(await harness.client.post("/servable", json=serve_body("v1")), 201)

        again, first = await history(harness)
        assert (again["state"], first["state"]) == ("loaded", "deleted")
        assert again["lineage"]["deployedAtMS"] == first["lineage"]["deployedAtMS"] + 5000
        assert first["removal"]["atMS"] < again["lineage"]["deployedAtMS"]

    async def test_a_servable_that_cannot_be_reloaded_is_failed_with_the_reason(
        self, harness_factory: HarnessFactory, tmp_path: Path
    ) -> None:
        source = tmp_path / "model"
        shutil.copytree(SINGLE_INPUT_MODEL, source)
        data_dir = tmp_path / "data"
        first = await harness_factory(data_dir=data_dir)
        ok(await first.client.post("/servable", json=serve_body("v1", path=source)), 201)
        await first.app.shutdown()
        # the copy and its source are both gone: the restart cannot load it
        shutil.rmtree(source)
        shutil.rmtree(data_dir / "artifacts" / "servables" / "samples")

        second = await harness_factory(data_dir=data_dir)
        (failed,) = await history(second)
        assert failed["state"] == "failed"
        assert failed["removal"] is None
        assert str(source) in failed["failure"]
        assert failed["lineage"]["source"] == source.as_uri()


async def test_the_answers_are_as_the_openapi_document_declares(harness: Harness) -> None:
    ok(await harness.client.post(f"/contract{C}", json=contract_settings(keep=2)), 201)
    for release in ("v1", "v2", "v3"):
        harness.clock.advance(seconds=1)
        ok(await harness.client.post("/servable", json=serve_body(release)), 201)
    ok(await harness.client.delete(f"{C}/v3"))
    document = ok(await harness.client.get("/openapi.json"))

    paths = ["/v2/settings", "/servable-settings", "/v2/metadata", "/metadata", "/history"]
    answers = [await harness.client.get(C + path) for path in paths]
    answers.append(await harness.client.get(f"{C}/history?limit=1&before=1"))
    answers.append(await harness.client.get("/samples/energy_output/9/history"))
    for response in answers:
        check_answer(harness, document, response)
    assert [r.status_code for r in answers] == [200] * 6 + [404]
    states = [s["state"] for s in answers[4].json()["ContractHistory"]["servables"]]
    assert states == ["deleted", "loaded", "expired"]
