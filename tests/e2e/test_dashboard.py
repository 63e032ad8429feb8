"""The dashboard (`/ui`) in a real browser against a real server (docs/dashboard.md).

Headless Chromium from Debian's package (`/usr/bin/chromium`, which `make test` installs),
driven by Playwright without `playwright install`. Screenshots go to the test's temporary
directory; with FORESTFLOW_DASHBOARD_SCREENSHOT=1 the one of the canary is also copied to
docs/images/dashboard.png (never otherwise: a normal run leaves the repository alone).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, ConsoleMessage, Page, sync_playwright

from tests.e2e.conftest import TRUSTING_ENV, ServerProcess
from tests.payloads import score_body, serve_body

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BASE = "/samples/energy_output/0"
PAGE = "/ui/contracts/samples/energy_output/0?refresh=1"
FAST_EVALUATION = {"FORESTFLOW_CONTROL__EVALUATION_INTERVAL_S": "0.1"}
PHASE_IN_S = 8
DEADLINE_S = 60.0
SCREENSHOT_OPT_IN = "FORESTFLOW_DASHBOARD_SCREENSHOT"
DOCS_IMAGE = Path(__file__).resolve().parents[2] / "docs" / "images" / "dashboard.png"
COUNTERS = {
    "td.score-count": "scoreCount",
    "td.shade-count": "shadeCount",
    "td.shadow-failed": "shadowFailedCount",
    "td.shadow-dropped": "shadowDroppedCount",
}


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[BrowserContext]:
    """Chromium with a fresh profile of its own."""
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            viewport={"width": 1440, "height": 1000},
        )
        try:
            yield context
        finally:
            context.close()


class PageErrors:
    """Console errors and uncaught exceptions of a page (a CSP violation is one)."""

    def __init__(self, page: Page) -> None:
        self.messages: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.messages.append(f"pageerror: {error}"))

    def _console(self, message: ConsoleMessage) -> None:
        # a 401 refused on purpose is logged by the browser as a failed resource load
        if message.type == "error" and "401" not in message.text:
            self.messages.append(message.text)


class Load:
    """Score requests from a thread until stopped (bounded in count and time)."""

    def __init__(self, base_url: str, limit: int = 20_000, seconds: float = DEADLINE_S) -> None:
        self.served: dict[str, int] = {}
        self._base_url = base_url
        self._limit = limit
        self._seconds = seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        deadline = time.monotonic() + self._seconds
        with httpx.Client(base_url=self._base_url, timeout=30) as client:
            for _ in range(self._limit):
                if self._stop.is_set() or time.monotonic() > deadline:
                    return
                response = client.post(f"{BASE}/score", json=score_body())
                assert response.status_code == 200, response.text
                release = response.json()["Prediction"]["servableFQRV"].rsplit(".", 1)[1]
                self.served[release] = self.served.get(release, 0) + 1


def mismatched(release: str) -> dict[str, Any]:
    """A shadow that fails on every request: the model wants inputs no request carries."""
    flavor = {"ONNX": {"modelPath": "model.onnx", "featureNames": ["T", "V", "AP", "RH"]}}
    return serve_body(release, flavor=flavor, validity=[{"NeverValid": {}}])


def stats(client: httpx.Client) -> dict[str, dict[str, Any]]:
    body = client.get(f"{BASE}/stats").json()
    return {s["ServableMetrics"]["fqrv"]["releaseVersion"]: s["ServableMetrics"] for s in body}


def row(page: Page, release: str) -> Any:
    return page.locator(f'table.servables tr[data-release="{release}"]:not(.gone)')


def phase_in(page: Page, release: str) -> int:
    return int(row(page, release).locator("td.phase-in").get_attribute("data-value") or -1)


def page_numbers(page: Page, releases: list[str]) -> dict[str, dict[str, int]]:
    """What the page shows of each servable, named as `/stats` names it."""
    shown: dict[str, dict[str, int]] = {}
    for release in releases:
        cells = row(page, release)
        numbers = {name: int(cells.locator(css).inner_text()) for css, name in COUNTERS.items()}
        numbers["currentPhaseInPct"] = phase_in(page, release)
        shown[release] = numbers
    return shown


def next_render(page: Page) -> None:
    """Wait for the contract panel to be swapped again (it is re-rendered every second)."""
    marker = page.evaluate("() => { const h = document.querySelector('#contract h2');"
                           " if (h) h.dataset.seen = '1'; return !!h; }")  # fmt: skip
    assert marker
    page.wait_for_function(
        "() => { const h = document.querySelector('#contract h2'); return h && !h.dataset.seen; }",
        timeout=DEADLINE_S * 1000,
    )


def read_phase_in_until_full(page: Page, release: str) -> list[int]:
    """The release's phase-in as the page shows it, each time it changes, until 100."""
    page.wait_for_selector(
        f'table.servables tr[data-release="{release}"]', timeout=DEADLINE_S * 1000
    )
    readings = [phase_in(page, release)]
    deadline = time.monotonic() + DEADLINE_S
    while readings[-1] < 100:
        assert time.monotonic() < deadline, readings
        page.wait_for_function(
            """([release, shown]) => {
                const cell = document.querySelector(
                    `table.servables tr[data-release="${release}"] td.phase-in`);
                return cell && cell.dataset.value !== shown;
            }""",
            arg=[release, str(readings[-1])],
            timeout=DEADLINE_S * 1000,
        )
        readings.append(phase_in(page, release))
    return readings


def screenshot(page: Page, path: Path, *, docs: bool = False) -> None:
    page.screenshot(path=str(path), full_page=True)
    if docs and os.environ.get(SCREENSHOT_OPT_IN) == "1":
        DOCS_IMAGE.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_IMAGE)


class TestCanaryOnTheDashboard:
    def test_phase_in_moves_numbers_match_stats_and_a_failing_shadow_shows_its_failures(
        self, server_factory: Callable[..., ServerProcess], browser: BrowserContext, tmp_path: Path
    ) -> None:
        server = server_factory(env=FAST_EVALUATION)
        client = server.client
        assert client.post("/servable", json=serve_body("FOO")).status_code == 201
        assert client.post("/servable", json=mismatched("SHADOW")).status_code == 201

        page = browser.new_page()
        errors = PageErrors(page)
        answer = page.goto(server.base_url + PAGE)
        assert answer is not None
        assert answer.status == 200
        csp = answer.headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "style-src 'self'" in csp
        page.wait_for_selector('table.servables tr[data-release="FOO"]')

        with Load(server.base_url) as load:
            linear = {"LinearTimeBasedPhaseIn": {"phaseInOverSecs": PHASE_IN_S}}
            deployed = client.post("/servable", json=serve_body("BAR", phase_in=linear))
            assert deployed.status_code == 201, deployed.text
            page.wait_for_function(
                """() => { const c = document.querySelector(
                    'table.servables tr[data-release="BAR"] td.phase-in');
                    return c && +c.dataset.value >= 40 && +c.dataset.value < 100; }""",
                timeout=DEADLINE_S * 1000,
            )
            screenshot(page, tmp_path / "dashboard-canary.png", docs=True)
            readings = read_phase_in_until_full(page, "BAR")
            # FOO at 100% beside BAR at 100%: the latest takes every request, FOO shadows
            page.wait_for_selector(
                'table.servables tr[data-release="FOO"][data-state="shadow-only"]'
            )
        assert readings == sorted(readings), readings
        assert len([r for r in readings if r < 100]) >= 2, readings
        assert readings[-1] == 100
        assert set(load.served) == {"FOO", "BAR"}, load.served

        bar = row(page, "BAR")
        assert bar.get_attribute("data-state") == "valid"
        assert bar.locator("td.phase-in svg.spark polyline").count() == 1
        assert bar.locator(".intended").get_attribute("data-value") == "100.0"
        assert re.fullmatch(
            r"[0-9.]+ / [0-9.]+ / [0-9.]+", bar.locator("td.latency > span").inner_text()
        )
        assert bar.locator("td.errors").inner_text() == "0"
        shadow = row(page, "SHADOW")
        assert shadow.get_attribute("data-state") == "shadow-only"

        releases = ["FOO", "BAR", "SHADOW"]
        deadline = time.monotonic() + DEADLINE_S
        while (shown := page_numbers(page, releases)) != (
            expected := {
                release: {name: metrics[name] for name in [*COUNTERS.values(), "currentPhaseInPct"]}
                for release, metrics in stats(client).items()
            }
        ):
            assert time.monotonic() < deadline, (shown, expected)
            next_render(page)
        assert shown["SHADOW"]["shadowFailedCount"] > 0
        assert "alert" in (shadow.locator("td.shadow-failed").get_attribute("class") or "")
        assert sum(n["scoreCount"] for n in shown.values()) == sum(load.served.values())

        # auth is off: the caller may read everything, the history and predictions included
        assert page.locator("#history tr[data-kind='ServableDeployed']").count() == 3
        assert page.locator("#predictions tr[data-kind='served']").count() > 0
        screenshot(page, tmp_path / "dashboard-after.png")
        assert not errors.messages, errors.messages


def create_admin_token(data_dir: Path) -> str:
    created = subprocess.run(
        [sys.executable, "-m", "forestflow.cli", "token", "create", "--data-dir", str(data_dir),
         "--role", "admin", "--name", "ops"],
        capture_output=True, text=True, timeout=120, check=True,
        env={**os.environ, **TRUSTING_ENV},
    )  # fmt: skip
    return created.stdout.strip()


def give_token(page: Page, token: str) -> None:
    page.locator("#token-form").wait_for(state="visible")
    page.fill("#token", token)
    page.click("#token-form button[type=submit]")


class TestDashboardWithTokens:
    def test_asks_for_a_token_and_a_scorer_sees_only_what_it_may(
        self, browser: BrowserContext, tmp_path: Path
    ) -> None:
        data_dir = tmp_path / "data"
        admin = create_admin_token(data_dir)
        server = ServerProcess(data_dir, {"FORESTFLOW_SECURITY__AUTH": "required"}).start()
        try:
            self._check(server, admin, browser, tmp_path)
        finally:
            server.close()

    def _check(
        self, server: ServerProcess, admin: str, browser: BrowserContext, tmp_path: Path
    ) -> None:
        as_admin = {"Authorization": f"Bearer {admin}"}
        client = server.client
        made = client.post(
            "/admin/tokens", json={"name": "app", "role": "scorer"}, headers=as_admin
        )
        assert made.status_code == 201, made.text
        scorer = made.json()["TokenCreated"]["token"]
        assert client.post("/servable", json=serve_body("v1"), headers=as_admin).status_code == 201
        for _ in range(3):
            scored = client.post(f"{BASE}/score", json=score_body(), headers=as_admin)
            assert scored.status_code == 200
        # the fragments are behind the same checks as the JSON routes
        fragment = "/ui/fragments/contracts/samples/energy_output/0"
        assert client.get(fragment).status_code == 401
        as_scorer = {"Authorization": f"Bearer {scorer}"}
        assert client.get(fragment, headers=as_scorer).status_code == 200

        page = browser.new_page()
        errors = PageErrors(page)
        page.goto(server.base_url + PAGE)
        page.locator("#token-form").wait_for(state="visible")
        assert page.locator("table.servables tr[data-release]").count() == 0
        screenshot(page, tmp_path / "dashboard-token.png")

        give_token(page, "ff_not-a-token")
        page.wait_for_selector("#token-message:has-text('refused')")
        give_token(page, scorer)
        page.wait_for_selector('table.servables tr[data-release="v1"]')
        assert page.locator("nav .who").get_attribute("data-role") == "scorer"
        assert int(row(page, "v1").locator("td.score-count").inner_text()) >= 0
        for part in ("#history", "#predictions"):
            refusal = page.locator(f"{part} .refused")
            assert refusal.get_attribute("data-error") == "PermissionDenied"
        assert page.locator("table.history, table.predictions").count() == 0
        assert "ServableDeployed" not in page.content()
        screenshot(page, tmp_path / "dashboard-scorer.png")

        # another tab keeps no token: it asks again; an admin's token reads everything
        admin_page = browser.new_page()
        PageErrors(admin_page)
        admin_page.goto(server.base_url + PAGE)
        give_token(admin_page, admin)
        admin_page.wait_for_selector("#history tr[data-kind='ServableDeployed']")
        admin_page.wait_for_selector("#predictions tr[data-kind='served']")
        assert admin_page.locator("nav .who").get_attribute("data-role") == "admin"
        screenshot(admin_page, tmp_path / "dashboard-admin.png")

        page.click("#sign-out")
        page.locator("#token-form").wait_for(state="visible")
        assert page.evaluate("() => sessionStorage.getItem('forestflow.token')") is None
        assert not errors.messages, errors.messages
