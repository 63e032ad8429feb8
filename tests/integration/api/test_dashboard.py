"""The dashboard's routes (`/ui`) in process: what the fragments show, to whom, and how.

The browser test (tests/e2e/test_dashboard.py) drives the page itself; these check the
HTML the server answers, with a fake clock for the sampled series.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from forestflow.domain.roles import Role
from tests.integration.api.conftest import Harness, HarnessFactory
from tests.integration.api.test_auth import make_tokens
from tests.payloads import contract_settings, score_body, serve_body

C = "/samples/energy_output/0"
FRAGMENT = "/ui/fragments/contracts/samples/energy_output/0"
LINEAR = {"LinearTimeBasedPhaseIn": {"phaseInOverSecs": 100}}


def rows(html: str) -> dict[str, str]:
    """Each present servable's state, by release (not those that went)."""
    table = html.split('<table class="servables">', 1)[1].split("</table>", 1)[0]
    return dict(re.findall(r'<tr data-release="([^"]+)" data-state="([^"]+)"', table))


def cell(html: str, release: str, name: str) -> str:
    """The text of one cell of a servable's row."""
    table = html.split('<table class="servables">', 1)[1]
    found = re.search(
        rf'<tr data-release="{release}"[^>]*>.*?<td class="{name}[^"]*"[^>]*>(.*?)</td>',
        table,
        re.S,
    )
    assert found, (release, name)
    return found.group(1)


def phase_in(html: str, release: str) -> int:
    """The phase-in a servable's row shows."""
    table = html.split('<table class="servables">', 1)[1]
    found = re.search(
        rf'<tr data-release="{release}"[^>]*>.*?<td class="phase-in" data-value="(\d+)"',
        table,
        re.S,
    )
    assert found, release
    return int(found.group(1))


async def fragment(harness: Harness, **headers: str) -> str:
    response = await harness.client.get(FRAGMENT, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    return response.text


class TestPage:
    async def test_the_shell_has_a_self_only_policy_and_no_inline_code(
        self, harness: Harness
    ) -> None:
        response = await harness.client.get("/ui")
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        policy = response.headers["content-security-policy"]
        assert "default-src 'none'" in policy
        assert "script-src 'self'" in policy
        assert "style-src 'self'" in policy
        assert "unsafe" not in policy
        page = response.text
        scripts = re.findall(r"<script[^>]*>", page)
        assert scripts
        assert all("src=" in tag for tag in scripts)
        assert not re.search(r"\sstyle=|\son[a-z]+=", page)
        assert 'data-auth="off"' in page

    async def test_the_contracts_list_marks_the_one_the_page_shows(self, harness: Harness) -> None:
        await harness.client.post("/servable", json=serve_body("v1"))
        await harness.client.post("/servable", json=serve_body("v1", project="other"))
        for page, marked in [
            ("http://localhost/ui", None),
            ("http://localhost/ui/contracts/samples/other/0?refresh=1", "samples.other.0"),
        ]:
            listed = await harness.client.get(
                "/ui/fragments/contracts", headers={"HX-Current-URL": page}
            )
            assert listed.status_code == 200
            assert re.findall(r'data-contract="([^"]+)"', listed.text) == [
                "samples.energy_output.0",
                "samples.other.0",
            ]
            current = re.findall(r'data-contract="([^"]+)" aria-current=page', listed.text)
            assert current == ([marked] if marked else [])

    async def test_a_contract_page_polls_its_fragment(self, harness: Harness) -> None:
        page = (await harness.client.get("/ui/contracts/samples/energy_output/0?refresh=3")).text
        assert f'hx-get="{FRAGMENT}"' in page
        assert "every 3s" in page
        refused = await harness.client.get("/ui/contracts/samples/bad!name/0")
        assert refused.status_code == 422
        assert "not a valid name" in refused.text

    async def test_static_files_are_served_and_revalidated(self, harness: Harness) -> None:
        htmx = await harness.client.get("/ui/static/htmx.min.js")
        assert htmx.status_code == 200
        assert htmx.headers["content-type"].startswith("text/javascript")
        assert "htmx" in htmx.text
        again = await harness.client.get(
            "/ui/static/htmx.min.js", headers={"If-None-Match": htmx.headers["etag"]}
        )
        assert again.status_code == 304
        assert (await harness.client.get("/ui/static/nope.js")).status_code == 404
        assert (await harness.client.get("/ui/static/dashboard.css")).status_code == 200


class TestContractFragment:
    async def test_states_phase_in_series_and_traffic_split(self, harness: Harness) -> None:
        ok = await harness.client.post(f"/contract{C}", json=contract_settings(keep=3))
        assert ok.status_code == 201
        await harness.client.post("/servable", json=serve_body("v1"))
        await harness.client.post("/servable", json=serve_body("v2", phase_in=LINEAR))
        shadow = serve_body("v3", validity=[{"NeverValid": {}}])
        await harness.client.post("/servable", json=shadow)
        waiting = serve_body("v4", validity=[{"TimeBasedValidity": {"validAfterMS": 2**62}}])
        await harness.client.post("/servable", json=waiting)
        await harness.tick()

        readings = []
        for _ in range(5):
            for _ in range(10):
                scored = await harness.client.post(f"{C}/score", json=score_body())
                assert scored.status_code == 200
            await harness.tick(seconds=10)
            html = await fragment(harness)
            readings.append(phase_in(html, "v2"))
        assert readings == [10, 20, 30, 40, 50]
        assert rows(html) == {
            "v1": "valid",
            "v2": "valid",
            "v3": "shadow-only",
            "v4": "invalid",
        }
        assert "<polyline" in cell(html, "v2", "phase-in")
        # intended: the router plan's shares (v2 at 50% beside v1 at 100%: 50/150)
        assert 'class="intended" data-value="33.3"' in cell(html, "v2", "traffic")
        assert 'class="intended" data-value="66.7"' in cell(html, "v1", "traffic")
        observed = re.search(
            r'class="observed" data-value="([0-9.]+)"', cell(html, "v2", "traffic")
        )
        assert observed
        assert 0 < float(observed.group(1)) < 1

    async def test_numbers_are_those_of_stats(self, harness: Harness) -> None:
        await harness.client.post("/servable", json=serve_body("v1"))
        await harness.client.post("/servable", json=serve_body("v2", validity=[{"NeverValid": {}}]))
        for _ in range(7):
            await harness.client.post(f"{C}/score", json=score_body())
        await harness.settle()
        html = await fragment(harness)
        stats = {
            s["ServableMetrics"]["fqrv"]["releaseVersion"]: s["ServableMetrics"]
            for s in (await harness.client.get(f"{C}/stats")).json()
        }
        for release, metrics in stats.items():
            assert int(cell(html, release, "score-count")) == metrics["scoreCount"]
            assert int(cell(html, release, "shade-count")) == metrics["shadeCount"]
            assert int(cell(html, release, "shadow-failed")) == metrics["shadowFailedCount"]
        assert stats["v2"]["shadeCount"] == 7
        # latency from the servable's request histograms, over the window or since start-up
        assert re.search(r"[0-9.]+ / [0-9.]+ / [0-9.]+", cell(html, "v1", "latency"))
        assert cell(html, "v1", "errors") == "0"

    async def test_served_requests_that_fail_are_counted_by_kind(self, harness: Harness) -> None:
        await harness.client.post("/servable", json=serve_body("v1"))
        await fragment(harness)
        harness.clock.advance(seconds=1)
        refused = await harness.client.post(f"{C}/score", json=score_body(features=list("abcd")))
        assert refused.status_code == 422
        html = await fragment(harness)
        found = re.search(
            r'<td class="errors num alert" data-recent="1" title="([^"]+)">1</td>', html
        )
        assert found, html
        assert found.group(1).endswith(": 1")

    async def test_servables_that_went_are_shown_expired_or_deleted(self, harness: Harness) -> None:
        await harness.client.post(f"/contract{C}", json=contract_settings(keep=1))
        await harness.client.post("/servable", json=serve_body("v1"))
        harness.clock.advance(seconds=1)
        await harness.client.post("/servable", json=serve_body("v2"))
        await harness.tick(seconds=3)
        html = await fragment(harness)
        assert 'class="gone" data-release="v1" data-state="expired"' in html
        assert "3 s ago, KeepLatest(servablesToKeep=1)" in html
        await harness.client.delete(f"{C}/v2")
        html = await fragment(harness)
        assert 'class="gone" data-release="v2" data-state="deleted"' in html
        assert rows(html) == {}

    async def test_everything_from_the_state_is_escaped(self, harness: Harness) -> None:
        await harness.client.post("/servable", json=serve_body("v1"))
        hostile = '<img src=x onerror="alert(1)">'
        put = await harness.client.put(f"{C}/v1/metrics", json={"metrics": {hostile: 1.0}})
        assert put.status_code == 200, put.text
        await harness.client.post(
            f"{C}/score", json=score_body(configs={"id": "</td><script>x()</script>"})
        )
        html = await fragment(harness)
        assert hostile not in html
        assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html
        assert "<script" not in html

    async def test_recent_predictions_are_the_contracts_own_newest_first(
        self, harness: Harness
    ) -> None:
        await harness.client.post("/servable", json=serve_body("v1"))
        other = serve_body("v1", project="other")
        await harness.client.post("/servable", json=other)
        for n in range(3):
            body = score_body(configs={"n": str(n)})
            await harness.client.post(f"{C}/score", json=body)
            await harness.client.post("/samples/other/0/score", json=body)
        await harness.app.sink.flush()
        html = await fragment(harness)
        table = html.split('<table class="predictions">', 1)[1].split("</table>", 1)[0]
        rows = re.findall(r'<tr data-release="v1" data-kind="served" data-seq="(\d+)">', table)
        assert len(rows) == 3
        assert [int(seq) for seq in rows] == sorted((int(seq) for seq in rows), reverse=True)
        assert "TemperatureCelcius=14.96" in table
        assert table.count('<td class="num">2</td>') == 3  # two rows per request

    async def test_an_unknown_contract_is_a_404_notice(self, harness: Harness) -> None:
        response = await harness.client.get("/ui/fragments/contracts/samples/none/0")
        assert response.status_code == 404
        assert 'data-error="UnknownContract"' in response.text


class TestWithTokens:
    @pytest.fixture
    async def secured(
        self, harness_factory: HarnessFactory, tmp_path: Path
    ) -> tuple[Harness, dict[str, str]]:
        data_dir = tmp_path / "data"
        tokens = make_tokens(data_dir)
        harness = await harness_factory(data_dir=data_dir, security={"auth": "required"})
        admin = {"Authorization": f"Bearer {tokens['admin']}"}
        # a servable that went: why it went is told by the history
        await harness.client.post("/servable", json=serve_body("v0"), headers=admin)
        await harness.client.delete(f"{C}/v0", headers=admin)
        deployed = await harness.client.post("/servable", json=serve_body("v1"), headers=admin)
        assert deployed.status_code == 201
        await harness.client.post(f"{C}/score", json=score_body(), headers=admin)
        return harness, tokens

    async def test_no_token_is_a_401_and_the_shell_says_tokens_are_required(
        self, secured: tuple[Harness, dict[str, str]]
    ) -> None:
        harness, _ = secured
        page = await harness.client.get("/ui")
        assert page.status_code == 200
        assert 'data-auth="required"' in page.text
        for url in ("/ui/fragments/contracts", FRAGMENT):
            refused = await harness.client.get(url)
            assert refused.status_code == 401
            assert refused.headers["www-authenticate"] == "Bearer"
            assert 'data-error="AuthenticationRequired"' in refused.text
        bad = await harness.client.get(FRAGMENT, headers={"Authorization": "Bearer ff_nope"})
        assert bad.status_code == 401

    @pytest.mark.parametrize("role", [role.value for role in Role])
    async def test_each_role_sees_what_its_permissions_let_it_read(
        self, secured: tuple[Harness, dict[str, str]], role: str
    ) -> None:
        harness, tokens = secured
        header = {"Authorization": f"Bearer {tokens[role]}"}
        contracts = await harness.client.get("/ui/fragments/contracts", headers=header)
        assert contracts.status_code == 200
        assert f'data-role="{role}"' in contracts.text
        html = await fragment(harness, **header)
        assert rows(html) == {"v1": "valid"}
        reads_history = role in ("admin", "deployer")
        assert ('<table class="history">' in html) is reads_history
        assert ('<table class="predictions">' in html) is reads_history
        assert ('data-release="v0" data-state="deleted"' in html) is reads_history
        assert (html.count('data-error="PermissionDenied"') == 2) is not reads_history
