"""An in-process ForestFlow (real SQLite file, real models, fake clock) driven over ASGI."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from forestflow.app import App, create_app
from forestflow.config import Settings
from forestflow.control.runner import ServableRunner
from forestflow.predictionlog.sinks import MemorySink, PredictionSink
from forestflow.testing import FakeClock


@dataclass
class Harness:
    """A started app, a client bound to it, and its fake clock."""

    app: App
    client: httpx.AsyncClient
    clock: FakeClock

    async def tick(self, seconds: float = 0) -> None:
        """Advance the clock and run one evaluation pass, as the periodic loop would."""
        self.clock.advance(seconds=seconds)
        await self.app.control.evaluate()

    async def settle(self) -> None:
        """Wait until queued shadow work has finished."""
        await self.app.scheduler.shadow_idle()


HarnessFactory = Callable[..., Awaitable[Harness]]

# The tests' own artifacts live in temporary directories and on loopback servers, and many
# are pickles: a harness trusts them unless a test passes settings of its own.
# The test and the app share one process, busy with the test's own requests: the shadow
# budget would see no idle CPU and drop shadow requests that tests count one by one. It
# is unlimited here; its own tests (test_scheduler.py, test_shadow_budget.py) set it.
TEST_DEFAULTS = {
    "storage": {"local_roots": ["/"], "allow_private_hosts": True},
    "security": {"allow_unsafe_formats": True},
    "scheduling": {"shadow_time_share": 1.0},
}


def with_test_defaults(settings: dict[str, Any]) -> dict[str, Any]:
    """`settings` over `TEST_DEFAULTS`, merged one level deep (a group given keeps the
    others)."""
    merged = {group: dict(values) for group, values in TEST_DEFAULTS.items()}
    for group, values in settings.items():
        if isinstance(values, dict) and group in merged:
            merged[group].update(values)
        else:
            merged[group] = values
    return merged


@pytest.fixture
async def harness_factory(
    tmp_path: Path, pytestconfig: pytest.Config
) -> AsyncIterator[HarnessFactory]:
    # a built-in fixture only: other directories import this fixture by name
    answered = answers_of(pytestconfig)
    started: list[Harness] = []

    async def make(
        data_dir: Path | None = None,
        sinks: dict[str, PredictionSink] | None = None,
        runner: ServableRunner | None = None,
        **settings: Any,
    ) -> Harness:
        """A started app; prediction events go to `sinks` (default: a MemorySink, "memory");
        models run on `runner` (default: in this process)."""
        config = Settings(
            data_dir=data_dir or tmp_path / "data", seed=7, **with_test_defaults(settings)
        )
        clock = FakeClock()
        chosen = {"memory": MemorySink()} if sinks is None else sinks
        app = create_app(config, clock=clock, sinks=chosen, runner=runner)
        await app.start(periodic=False)
        assert app.ready, app.startup_error
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app.asgi),
            base_url="http://localhost",
            event_hooks={"response": [recorder(answered)]},
        )
        harness = Harness(app, client, clock)
        started.append(harness)
        return harness

    yield make
    for harness in started:
        await harness.client.aclose()
        await harness.app.shutdown()


@pytest.fixture
async def harness(harness_factory: HarnessFactory) -> Harness:
    return await harness_factory()


# --- Every status the API answers is declared (issue 10, scope 5) -------------------------
#
# Each harness client records (method, path, status) of every answer it receives, for the
# whole session — this one's, and the in-process harnesses of the other protocols' suites
# (tests/integration/{openinference,mlflow_scoring,graphpipe}), which record through
# `answers_of` and `recorder`. `test_openapi.py::test_every_answered_status_is_declared`
# then checks each against the OpenAPI document; the hook below runs it after every other
# test of the session, whatever the selection, so it sees everything the suite received. (A
# test, not a session-finish hook: its failure is reported like any other, with the missing
# routes.)

Answered = tuple[str, str, int]
"""method, path as requested, status"""
_ANSWERED = pytest.StashKey[list[Answered]]()
LAST = "test_every_answered_status_is_declared"


def answers_of(config: pytest.Config) -> list[Answered]:
    """The answers the harness clients received this session, so far."""
    return config.stash.setdefault(_ANSWERED, [])


@pytest.fixture
def answered(pytestconfig: pytest.Config) -> list[Answered]:
    """`answers_of` the session."""
    return answers_of(pytestconfig)


def recorder(answers: list[Answered]) -> Callable[[httpx.Response], Awaitable[None]]:
    """An httpx response hook appending each answer to `answers`."""

    async def record(response: httpx.Response) -> None:
        request = response.request
        answers.append((request.method, request.url.path, response.status_code))

    return record


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the declared-status check last (it reads what every other test recorded)."""
    last = [item for item in items if item.name == LAST]
    items[:] = [item for item in items if item.name != LAST] + last
