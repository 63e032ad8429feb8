"""ForestFlow with the Open Inference Protocol: in-process over ASGI, or a real server process.

The in-process harness (fake clock, a MemorySink) serves the REST details; the process
(`forestflow serve`, REST and gRPC on loopback ports) serves the stock tritonclient clients,
which block, so they need a server outside the test's event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.e2e.conftest import ServerProcess, free_port
from tests.integration.api.conftest import answers_of, recorder

from forestflow.app import App, create_app
from forestflow.config import Settings
from forestflow.predictionlog.sinks import MemorySink
from forestflow.testing import FakeClock

# the tests' artifacts are in temporary directories, some of them pickles
TRUSTING = {
    "storage": {"local_roots": ["/"], "allow_private_hosts": True},
    "security": {"allow_unsafe_formats": True},
}


# --- in process ------------------------------------------------------------------------


@dataclass
class OipHarness:
    """A started app with the protocol's routes, a client bound to it, its clock and sink."""

    app: App
    client: httpx.AsyncClient
    clock: FakeClock
    sink: MemorySink

    async def settle(self) -> None:
        """Wait until queued shadow work has finished."""
        await self.app.scheduler.shadow_idle()


OipHarnessFactory = Callable[..., Awaitable[OipHarness]]


@pytest.fixture
async def oip_harness_factory(
    tmp_path: Path, pytestconfig: pytest.Config
) -> AsyncIterator[OipHarnessFactory]:
    answered = answers_of(pytestconfig)  # checked against the OpenAPI document
    started: list[OipHarness] = []

    async def make(
        *, start: bool = True, data_dir: Path | None = None, **settings: Any
    ) -> OipHarness:
        """An app (started unless `start` is False) with `settings` over the trusting ones."""
        merged = {group: dict(values) for group, values in TRUSTING.items()}
        for group, values in settings.items():
            merged.setdefault(group, {}).update(values)
        directory = data_dir or tmp_path / f"data{len(started)}"
        config = Settings(data_dir=directory, seed=7, **merged)
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
        harness = OipHarness(app, client, clock, sink)
        started.append(harness)
        return harness

    yield make
    for harness in started:
        await harness.client.aclose()
        await harness.app.shutdown()


# --- a real process --------------------------------------------------------------------


class OipServer(ServerProcess):
    """A `forestflow serve` process with REST (BASIC and the protocol) and gRPC, on loopback."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.grpc_port = free_port()
        super().__init__(
            data_dir, {"FORESTFLOW_SERVER__GRPC_PORT": str(self.grpc_port), **(env or {})}
        )

    @property
    def http_url(self) -> str:
        """The address tritonclient.http wants (no scheme)."""
        return f"127.0.0.1:{self.port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self) -> OipServer:
        """Start the process; return once both listeners are up and state is recovered (the
        gRPC listener starts before recovery)."""
        super().start()
        return self

    def close(self) -> None:
        """SIGTERM and wait for the graceful exit."""
        if self.alive():
            self.terminate()
        super().close()


@pytest.fixture
def oip_server_factory(tmp_path: Path) -> Iterator[Callable[..., OipServer]]:
    servers: list[OipServer] = []

    def make(env: dict[str, str] | None = None, data_dir: Path | None = None) -> OipServer:
        server = OipServer(data_dir or tmp_path / f"data{len(servers)}", env)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.close()
