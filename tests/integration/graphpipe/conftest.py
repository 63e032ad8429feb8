"""ForestFlow with GraphPipe's routes, in process over ASGI (real models, SQLite, fake clock)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from forestflow.app import App, create_app
from forestflow.config import Settings
from forestflow.predictionlog.sinks import MemorySink
from forestflow.testing import FakeClock
from tests.integration.api.conftest import answers_of, recorder

# the tests' artifacts are in temporary directories and the repository's fixtures
TRUSTING: dict[str, dict[str, Any]] = {
    "storage": {"local_roots": ["/"], "allow_private_hosts": True},
    "security": {"allow_unsafe_formats": True},
}


@dataclass
class GraphPipeHarness:
    """A started app with GraphPipe's routes, a client bound to it, and its sink."""

    app: App
    client: httpx.AsyncClient
    sink: MemorySink


GraphPipeHarnessFactory = Callable[..., Awaitable[GraphPipeHarness]]


@pytest.fixture
async def graphpipe_harness_factory(
    tmp_path: Path, pytestconfig: pytest.Config
) -> AsyncIterator[GraphPipeHarnessFactory]:
    answered = answers_of(pytestconfig)  # checked against the OpenAPI document
    started: list[GraphPipeHarness] = []

    async def make(data_dir: Path | None = None, **groups: Any) -> GraphPipeHarness:
        """A started app with settings `groups` over the trusting ones."""
        merged = {group: dict(values) for group, values in TRUSTING.items()}
        for group, values in groups.items():
            merged.setdefault(group, {}).update(values)
        data_dir = data_dir or tmp_path / f"data{len(started)}"
        config = Settings(data_dir=data_dir, seed=7, **merged)
        sink = MemorySink()
        app = create_app(config, clock=FakeClock(), sinks={"memory": sink})
        await app.start(periodic=False)
        assert app.ready, app.startup_error
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app.asgi),
            base_url="http://localhost",
            event_hooks={"response": [recorder(answered)]},
        )
        harness = GraphPipeHarness(app, client, sink)
        started.append(harness)
        return harness

    yield make
    for harness in started:
        await harness.client.aclose()
        await harness.app.shutdown()


@pytest.fixture
async def graphpipe_harness(graphpipe_harness_factory: GraphPipeHarnessFactory) -> GraphPipeHarness:
    return await graphpipe_harness_factory()
