"""Authentication and roles with `security.auth = required`: every route × every role."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from forestflow.clock import SystemClock
from forestflow.control.tokens import TokenRegistry
from forestflow.domain.roles import Role
from forestflow.store.sqlite import open_store
from tests.integration.api.conftest import Harness, HarnessFactory
from tests.payloads import contract_settings, score_body, serve_body

ROLES = [role.value for role in Role]
PUBLIC = {
    "/health/live",
    "/health/ready",
    "/openapi.json",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    "/v2/health/live",
    "/v2/health/ready",
}

C = "/samples/energy_output/0"
S = C + "/v1"

# Every route of the API and who may call it. A route missing here fails the test, so a
# new route must say who may call it.
READ = {"admin", "deployer", "scorer", "shadow-deployer"}
SCORE = READ
DEPLOY = {"admin", "deployer", "shadow-deployer"}
MANAGE = {"admin", "deployer"}
ADMIN = {"admin"}
TABLE: dict[tuple[str, str], set[str]] = {
    ("GET", "/contracts/list"): READ,
    ("POST", "/contract/{organization}/{project}/{contract_number}"): MANAGE,
    ("PUT", "/{organization}/{project}/{contract_number}"): MANAGE,
    ("DELETE", "/{organization}/{project}/{contract_number}"): MANAGE,
    ("GET", "/{organization}/{project}/{contract_number}/contract-settings"): READ,
    ("GET", "/{organization}/{project}/{contract_number}/c-settings"): READ,
    ("GET", "/{organization}/{project}/{contract_number}/list"): READ,
    ("GET", "/{organization}/{project}/{contract_number}/releases"): READ,
    ("GET", "/{organization}/{project}/{contract_number}/stats"): READ,
    ("GET", "/{organization}/{project}/{contract_number}/servable-settings"): READ,
    ("GET", "/{organization}/{project}/{contract_number}/s-settings"): READ,
    ("GET", "/{organization}/{project}/{contract_number}/metadata"): READ,
    ("GET", "/{organization}/{project}/{contract_number}/history"): MANAGE,
    ("POST", "/servable"): DEPLOY,
    ("POST", "/servable/{organization}/{project}/{contract_number}/{release_version}"): DEPLOY,
    (
        "PUT",
        "/{organization}/{project}/{contract_number}/{release_version}/policy-settings",
    ): DEPLOY,
    ("PUT", "/{organization}/{project}/{contract_number}/{release_version}/policy"): DEPLOY,
    (
        "PUT",
        "/{organization}/{project}/{contract_number}/{release_version}/logging-settings",
    ): DEPLOY,
    ("PUT", "/{organization}/{project}/{contract_number}/{release_version}/logging"): DEPLOY,
    ("DELETE", "/{organization}/{project}/{contract_number}/{release_version}"): DEPLOY,
    ("GET", "/{organization}/{project}/{contract_number}/{release_version}/settings"): READ,
    ("GET", "/{organization}/{project}/{contract_number}/{release_version}/metadata"): READ,
    ("POST", "/{organization}/{project}/{contract_number}/score"): SCORE,
    ("POST", "/{organization}/{project}/{contract_number}/{release_version}/score"): SCORE,
    ("PUT", "/{organization}/{project}/{contract_number}/{release_version}/metrics"): DEPLOY,
    ("POST", "/{organization}/{project}/{contract_number}/feedback"): MANAGE,
    ("GET", "/prediction-log/stats"): READ,
    ("GET", "/prediction-log/events"): MANAGE,  # every client's features: not for scorers
    ("GET", "/metrics"): READ,
    ("POST", "/admin/tokens"): ADMIN,
    ("GET", "/admin/tokens"): ADMIN,
    ("DELETE", "/admin/tokens/{name}"): ADMIN,
    ("GET", "/history"): MANAGE,
    ("GET", "/v2"): READ,
    ("GET", "/v2/models/{model_name}"): READ,
    ("GET", "/v2/models/{model_name}/versions/{model_version}"): READ,
    ("GET", "/v2/models/{model_name}/ready"): READ,
    ("GET", "/v2/models/{model_name}/versions/{model_version}/ready"): READ,
    ("POST", "/v2/models/{model_name}/infer"): SCORE,
    ("POST", "/v2/models/{model_name}/versions/{model_version}/infer"): SCORE,
    ("POST", "/{organization}/{project}/{contract_number}/invocations"): SCORE,
    ("POST", "/{organization}/{project}/{contract_number}/{release_version}/invocations"): SCORE,
    ("GET", "/{organization}/{project}/{contract_number}/ping"): READ,
    ("GET", "/{organization}/{project}/{contract_number}/health"): READ,
    ("GET", "/{organization}/{project}/{contract_number}/version"): READ,
    ("GET", "/{organization}/{project}/{contract_number}/{release_version}/ping"): READ,
    ("GET", "/{organization}/{project}/{contract_number}/{release_version}/health"): READ,
    ("GET", "/{organization}/{project}/{contract_number}/{release_version}/version"): READ,
    ("POST", "/{organization}/{project}/{contract_number}/gp"): SCORE,
    ("POST", "/{organization}/{project}/{contract_number}/{release_version}/gp"): SCORE,
}


# In the table's fixture v1 is the admin's and the deploy bodies make valid servables: the
# shadow deployer is refused these although its role has the permission.
NOT_FOR_SHADOW_DEPLOYERS = {
    (method, path)
    for (method, path) in TABLE
    if "{release_version}" in path and method in ("PUT", "DELETE")
} | {("POST", "/servable"), ("POST", "/servable/samples/energy_output/0/v1")}


def make_tokens(data_dir: Path) -> dict[str, str]:
    """One token per role, created in the data directory before the server starts."""
    store = open_store(data_dir)
    try:
        registry = TokenRegistry(store, SystemClock())
        return {role.value: registry.create(f"{role.value}-token", role) for role in Role}
    finally:
        store.close()


async def secured(
    harness_factory: HarnessFactory, tmp_path: Path
) -> tuple[Harness, dict[str, str]]:
    data_dir = tmp_path / "data"
    tokens = make_tokens(data_dir)
    harness = await harness_factory(data_dir=data_dir, security={"auth": "required"})
    return harness, tokens


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def concrete(path: str) -> str:
    return (
        path.replace("{organization}", "samples")
        .replace("{project}", "energy_output")
        .replace("{contract_number}", "0")
        .replace("{release_version}", "v1")
        .replace("{name}", "nobody")
        .replace("{model_name}", "samples.energy_output.0")
        .replace("{model_version}", "v1")
    )


BODIES: dict[str, Any] = {
    "/servable": serve_body("v9"),
    "/score": score_body(),
    "/feedback": {"records": [{"key": "k", "actual": 1.0}]},
    "/metrics": {"metrics": {"auc": 0.5}},
    "/policy": {"validityPolicy": [{"NeverValid": {}}]},
    "/policy-settings": {"validityPolicy": [{"NeverValid": {}}]},
    "/admin/tokens": {"name": "x", "role": "nope"},
}


def body_for(method: str, path: str) -> Any:
    if method in ("GET", "DELETE"):
        return None
    for suffix, body in BODIES.items():
        if path.endswith(suffix) or path.startswith(suffix):
            return body
    return contract_settings()


class TestPermissionTable:
    async def test_every_route_answers_each_role_as_the_table_says(
        self, harness_factory: HarnessFactory, tmp_path: Path
    ) -> None:
        harness, tokens = await secured(harness_factory, tmp_path)
        client = harness.client
        admin = bearer(tokens["admin"])
        created = await client.post("/servable", json=serve_body("v1"), headers=admin)
        assert created.status_code == 201, created.text

        routes = {
            (method.upper(), path)
            for path, operations in harness.app.api.openapi()["paths"].items()
            if path not in PUBLIC
            for method in operations
        }
        assert routes == set(TABLE), "every route must be in the permission table"

        wrong: list[str] = []
        for (method, path), allowed in sorted(TABLE.items()):
            url = concrete(path)
            body = body_for(method, url)
            for who in [None, *ROLES]:
                headers = bearer(tokens[who]) if who else {}
                if url == S and who in ("admin", "deployer"):
                    continue  # it would remove the fixture: TestTokensAndHistory deletes
                response = await client.request(method, url, json=body, headers=headers)
                status = response.status_code
                expected_ok = who in allowed and not (
                    who == "shadow-deployer"
                    and (
                        (method, path) in NOT_FOR_SHADOW_DEPLOYERS
                        or (method, url) in NOT_FOR_SHADOW_DEPLOYERS
                    )
                )
                if who is None:
                    ok = status == 401
                elif expected_ok:
                    ok = status not in (401, 403)
                else:
                    ok = status == 403
                if not ok:
                    wrong.append(f"{method} {url} as {who}: {status} {response.text[:120]}")
        assert not wrong, "\n".join(wrong)

    async def test_the_answers_name_the_error(
        self, harness_factory: HarnessFactory, tmp_path: Path
    ) -> None:
        harness, tokens = await secured(harness_factory, tmp_path)
        client = harness.client

        missing = await client.get("/contracts/list")
        unknown = await client.get("/contracts/list", headers=bearer("ff_not-a-token"))
        basic = await client.get("/contracts/list", headers={"Authorization": "Basic eDp5"})
        forbidden = await client.post(
            "/contract/a/b/0", json=contract_settings(), headers=bearer(tokens["scorer"])
        )

        for response in (missing, unknown, basic):
            assert response.status_code == 401
            assert response.headers["www-authenticate"] == "Bearer"
            assert "AuthenticationRequired" in response.json()
        assert forbidden.status_code == 403
        assert "scorer" in forbidden.json()["PermissionDenied"]["errorMessage"]
        assert (await client.get("/health/ready")).status_code == 200
        listed = await client.get("/contracts/list", headers=bearer(tokens["admin"]))
        assert listed.json() == {"Contracts": {"contracts": []}}


class TestShadowDeployer:
    async def test_deploys_only_never_valid_servables(
        self, harness_factory: HarnessFactory, tmp_path: Path
    ) -> None:
        harness, tokens = await secured(harness_factory, tmp_path)
        client, shadow = harness.client, bearer(tokens["shadow-deployer"])
        admin = bearer(tokens["admin"])
        await client.post(
            C.replace("/samples", "/contract/samples"), json=contract_settings(), headers=admin
        )

        valid = await client.post("/servable", json=serve_body("v1"), headers=shadow)
        never = serve_body("v2", validity=[{"NeverValid": {}}])
        accepted = await client.post("/servable", json=never, headers=shadow)

        assert valid.status_code == 403
        assert "NeverValid" in valid.json()["PermissionDenied"]["errorMessage"]
        assert accepted.status_code == 201, accepted.text
        releases = await client.get(C + "/list", headers=admin)
        assert [r["FQRV"]["releaseVersion"] for r in releases.json()] == ["v2"]

    async def test_cannot_promote_its_servable_nor_touch_anothers(
        self, harness_factory: HarnessFactory, tmp_path: Path
    ) -> None:
        harness, tokens = await secured(harness_factory, tmp_path)
        client, shadow = harness.client, bearer(tokens["shadow-deployer"])
        admin = bearer(tokens["admin"])
        theirs = await client.post("/servable", json=serve_body("v1"), headers=admin)
        assert theirs.status_code == 201
        mine = serve_body("v2", validity=[{"NeverValid": {}}])
        assert (await client.post("/servable", json=mine, headers=shadow)).status_code == 201

        promote = {"validityPolicy": [{"ImmediatelyValid": {}}]}
        promoted = await client.put(C + "/v2/policy", json=promote, headers=shadow)
        others_logging = await client.put(
            C + "/v1/logging", json={"logLevel": "NONE"}, headers=shadow
        )
        others_delete = await client.delete(C + "/v1", headers=shadow)
        own_logging = await client.put(C + "/v2/logging", json={"logLevel": "NONE"}, headers=shadow)
        own_delete = await client.delete(C + "/v2", headers=shadow)

        assert promoted.status_code == 403
        assert others_logging.status_code == 403
        assert others_delete.status_code == 403
        assert own_logging.status_code == 200, own_logging.text
        assert own_delete.status_code == 200, own_delete.text
        settings = await client.get(C + "/v1/settings", headers=admin)
        assert settings.json()["ServableSettings"]["loggingSettings"]["logLevel"] == "FULL"

    async def test_may_change_its_servables_phase_in_which_stays_never_valid(
        self, harness_factory: HarnessFactory, tmp_path: Path
    ) -> None:
        # an update changes only what it names (issue 11): the NeverValid it leaves out stays,
        # so the merged policy is checked, not the body
        harness, tokens = await secured(harness_factory, tmp_path)
        client, shadow = harness.client, bearer(tokens["shadow-deployer"])
        mine = serve_body("v2", validity=[{"NeverValid": {}}])
        assert (await client.post("/servable", json=mine, headers=shadow)).status_code == 201

        phase_in = {"phaseInPolicy": {"LinearTimeBasedPhaseIn": {"phaseInOverSecs": 60}}}
        changed = await client.put(C + "/v2/policy", json=phase_in, headers=shadow)
        cleared = await client.put(C + "/v2/policy", json={"validityPolicy": []}, headers=shadow)

        assert changed.status_code == 200, changed.text
        assert cleared.status_code == 403
        assert cleared.json()["PermissionDenied"]["field"] == "validityPolicy"
        settings = await client.get(C + "/v2/settings", headers=shadow)
        assert settings.json()["ServableSettings"]["policySettings"] == {
            "validityPolicy": [{"NeverValid": {}}],
            **phase_in,
        }


class TestTokensAndHistory:
    async def test_admin_routes_create_list_and_revoke(
        self, harness_factory: HarnessFactory, tmp_path: Path
    ) -> None:
        harness, tokens = await secured(harness_factory, tmp_path)
        client, admin = harness.client, bearer(tokens["admin"])

        created = await client.post(
            "/admin/tokens", json={"name": "ci", "role": "scorer"}, headers=admin
        )
        assert created.status_code == 201, created.text
        token = created.json()["TokenCreated"]["token"]
        assert (await client.get("/contracts/list", headers=bearer(token))).status_code == 200
        listed = (await client.get("/admin/tokens", headers=admin)).json()["Tokens"]["tokens"]
        (ci,) = [t for t in listed if t["name"] == "ci"]
        assert ci["role"] == "scorer"
        assert ci["revokedAtMS"] is None
        assert token not in str(listed)
        duplicate = await client.post(
            "/admin/tokens", json={"name": "ci", "role": "scorer"}, headers=admin
        )
        assert duplicate.status_code == 409

        revoked = await client.delete("/admin/tokens/ci", headers=admin)

        assert revoked.status_code == 200
        assert (await client.get("/contracts/list", headers=bearer(token))).status_code == 401
        assert (await client.delete("/admin/tokens/ci", headers=admin)).status_code == 404

    async def test_history_names_the_token_of_every_command(
        self, harness_factory: HarnessFactory, tmp_path: Path
    ) -> None:
        harness, tokens = await secured(harness_factory, tmp_path)
        client = harness.client
        deployer = bearer(tokens["deployer"])
        await client.post("/servable", json=serve_body("v1"), headers=deployer)
        await client.delete(S, headers=bearer(tokens["admin"]))

        history = await client.get("/history", headers=deployer)

        entries = history.json()["History"]["entries"]
        made = [(e["kind"], e["actor"]) for e in entries]
        assert ("ServableDeleted", "admin-token") in made
        assert ("ServableDeployed", "deployer-token") in made
        assert ("ContractCreated", "deployer-token") in made
        assert made.index(("ServableDeleted", "admin-token")) < made.index(
            ("ServableDeployed", "deployer-token")
        )
        deployed = next(e for e in entries if e["kind"] == "ServableDeployed")["event"]
        assert deployed["deployedBy"] == "deployer-token"
        assert deployed["digest"].startswith("sha256:")


class TestBrowserGuards:
    """With auth off, a web page cannot drive the server (CSRF, DNS rebinding)."""

    async def test_a_text_plain_deploy_is_refused_and_changes_nothing(
        self, harness: Harness
    ) -> None:
        response = await harness.client.post(
            "/servable",
            content=orjson.dumps(serve_body("v1")),
            headers={"Content-Type": "text/plain"},
        )

        assert response.status_code == 415
        assert response.json()["UnsupportedMediaTypeError"]["field"] == "Content-Type"
        assert (await harness.client.get("/contracts/list")).json()["Contracts"]["contracts"] == []

    @pytest.mark.parametrize("host", ["attacker.example", "attacker.example:8090", "10.0.0.1"])
    async def test_a_foreign_host_is_refused_and_changes_nothing(
        self, harness: Harness, host: str
    ) -> None:
        response = await harness.client.post(
            "/servable", json=serve_body("v1"), headers={"Host": host}
        )

        assert response.status_code == 400
        assert response.json()["HostNotAllowedError"]["field"] == "Host"
        assert (await harness.client.get("/contracts/list")).json()["Contracts"]["contracts"] == []

    @pytest.mark.parametrize("host", ["localhost:8090", "127.0.0.1", "[::1]:8090", "app.localhost"])
    async def test_loopback_hosts_are_served(self, harness: Harness, host: str) -> None:
        response = await harness.client.get("/contracts/list", headers={"Host": host})

        assert response.status_code == 200

    async def test_no_cors_unless_configured(self, harness_factory: HarnessFactory) -> None:
        plain = await harness_factory()
        configured = await harness_factory(security={"cors_origins": ["https://ops.example"]})
        preflight = {
            "Origin": "https://ops.example",
            "Access-Control-Request-Method": "POST",
        }

        refused = await plain.client.options("/servable", headers=preflight)
        allowed = await configured.client.options("/servable", headers=preflight)

        assert "access-control-allow-origin" not in refused.headers
        assert allowed.headers["access-control-allow-origin"] == "https://ops.example"


class TestStartup:
    async def test_auth_required_without_an_admin_token_refuses_to_start(
        self, harness_factory: HarnessFactory
    ) -> None:
        from forestflow.app import StartupError

        with pytest.raises(StartupError, match="forestflow token create"):
            await harness_factory(security={"auth": "required"})
