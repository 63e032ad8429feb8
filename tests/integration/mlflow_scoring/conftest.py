"""ForestFlow with the MLflow scoring routes: in process over ASGI, or on a loopback port.

The in-process harness (fake clock, a MemorySink) serves the protocol's details; the
loopback server (a real `forestflow serve` process) serves MLflow's own blocking
clients, which need a server outside the test's event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from forestflow.app import App, create_app
from forestflow.config import Settings
from forestflow.predictionlog.sinks import MemorySink
from forestflow.testing import FakeClock
from tests.e2e.conftest import ServerProcess
from tests.integration.api.conftest import answers_of, recorder

START_TIMEOUT_S = 90.0
# the tests' artifacts are in temporary directories, some of them pickles; the skops
# fixture's forest type is trusted only from the server's own setting
TRUSTING: dict[str, dict[str, Any]] = {
    "storage": {"local_roots": ["/"], "allow_private_hosts": True},
    "security": {
        "allow_unsafe_formats": True,
        "skops_trusted_types": ["sklearn.tree._tree.Tree"],
    },
}


def settings_for(data_dir: Path, **groups: Any) -> Settings:
    """`groups` over the trusting settings, merged one level deep."""
    merged = {group: dict(values) for group, values in TRUSTING.items()}
    for group, values in groups.items():
        merged.setdefault(group, {}).update(values)
    return Settings(data_dir=data_dir, seed=7, **merged)


# --- in process ------------------------------------------------------------------------


@dataclass
class MlflowHarness:
    """A started app with the protocol's routes, a client bound to it, its clock and sink."""

    app: App
    client: httpx.AsyncClient
    clock: FakeClock
    sink: MemorySink

    async def settle(self) -> None:
        """Wait until queued shadow work has finished."""
        await self.app.scheduler.shadow_idle()


MlflowHarnessFactory = Callable[..., Awaitable[MlflowHarness]]


@pytest.fixture
async def mlflow_harness_factory(
    tmp_path: Path, pytestconfig: pytest.Config
) -> AsyncIterator[MlflowHarnessFactory]:
    answered = answers_of(pytestconfig)  # checked against the OpenAPI document
    started: list[MlflowHarness] = []

    async def make(
        *, start: bool = True, data_dir: Path | None = None, **groups: Any
    ) -> MlflowHarness:
        """An app (started unless `start` is False) with settings `groups`."""
        config = settings_for(data_dir or tmp_path / f"data{len(started)}", **groups)
        clock, sink = FakeClock(), MemorySink()
        app = create_app(config, clock=clock, sinks={"memory": sink})
        if start:
            await app.start(periodic=False)
            assert app.ready, app.startup_error
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app.asgi),
            base_url="http://localhost",
            event_hooks={"response": [recorder(answered)]},
        )
        harness = MlflowHarness(app, client, clock, sink)
        started.append(harness)
        return harness

    yield make
    for harness in started:
        await harness.client.aclose()
        await harness.app.shutdown()


@pytest.fixture
async def mlflow_harness(mlflow_harness_factory: MlflowHarnessFactory) -> MlflowHarness:
    return await mlflow_harness_factory()


# --- on a loopback port ----------------------------------------------------------------


class LoopbackServer(ServerProcess):
    """A real `forestflow serve` process on a loopback port, trusting the tests' artifacts
    (pickles, temporary directories, the skops fixture's forest type)."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(
            data_dir,
            env={"FORESTFLOW_SECURITY__SKOPS_TRUSTED_TYPES": '["sklearn.tree._tree.Tree"]'},
        )


@pytest.fixture(scope="module")
def loopback_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackServer]:
    server = LoopbackServer(tmp_path_factory.mktemp("mlflow-scoring") / "data")
    try:
        yield server.start()
    finally:
        server.close()
