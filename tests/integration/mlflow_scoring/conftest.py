"""ForestFlow with the MLflow scoring routes: in process over ASGI, or on a loopback port.

The in-process harness (fake clock, a MemorySink) serves the protocol's details; the
loopback server (uvicorn in a thread of the test process) serves MLflow's own blocking
clients, which need a server outside the test's event loop.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from forestflow.api.mlflow_scoring import build_mlflow_router
from forestflow.app import App, create_app
from forestflow.config import Settings
from forestflow.predictionlog.sinks import MemorySink
from forestflow.testing import FakeClock

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


def mount(app: App) -> None:
    """Mount the protocol's routes as app.py will (issue 10)."""
    router = build_mlflow_router(
        app.control,
        app.inference,
        app.guard,
        app.settings.server.max_request_bytes,
        require_ready=app._require_ready,
    )
    app.api.include_router(router)  # the framework app, behind the score lane


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
async def mlflow_harness_factory(tmp_path: Path) -> AsyncIterator[MlflowHarnessFactory]:
    started: list[MlflowHarness] = []

    async def make(
        *, start: bool = True, data_dir: Path | None = None, **groups: Any
    ) -> MlflowHarness:
        """An app (started unless `start` is False) with settings `groups`."""
        config = settings_for(data_dir or tmp_path / f"data{len(started)}", **groups)
        clock, sink = FakeClock(), MemorySink()
        app = create_app(config, clock=clock, sinks={"memory": sink})
        mount(app)
        if start:
            await app.start(periodic=False)
            assert app.ready, app.startup_error
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app.asgi), base_url="http://localhost"
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LoopbackServer:
    """The app and the protocol's routes under uvicorn, on a loopback port, in a thread
    with its own event loop (the app is built there, so that it lives on that loop)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.server: uvicorn.Server | None = None
        self.failure: BaseException | None = None
        self._built = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mlflow-scoring-server")
        self.client = httpx.Client(base_url=self.base_url, timeout=30.0)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as error:  # reported by start() and close(), not lost in a thread
            self.failure = error
            self._built.set()

    async def _serve(self) -> None:
        app = create_app(settings_for(self.data_dir, server={"port": self.port}))
        mount(app)
        config = uvicorn.Config(
            app.asgi,
            host="127.0.0.1",
            port=self.port,
            lifespan="on",
            ws="none",
            log_level="warning",
        )
        self.server = uvicorn.Server(config)
        self._built.set()
        await self.server.serve()

    def start(self) -> LoopbackServer:
        """Start serving; return once the app has recovered its state and is ready."""
        self._thread.start()
        assert self._built.wait(START_TIMEOUT_S), "the server was not built in time"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.failure is not None or not self._thread.is_alive():
                raise AssertionError(f"the server stopped: {self.failure!r}")
            try:
                if self.client.get("/health/ready").status_code == 200:
                    return self
            except httpx.TransportError:
                pass  # not listening yet
            time.sleep(0.05)  # polling readiness, bounded by the deadline
        raise AssertionError("the server was not ready in time")

    def close(self) -> None:
        """Ask uvicorn to exit (the app shuts down in its lifespan) and wait for it."""
        self.client.close()
        if self.server is not None:
            self.server.should_exit = True
        self._thread.join(timeout=60)
        assert not self._thread.is_alive(), "the server did not stop"


@pytest.fixture(scope="module")
def loopback_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackServer]:
    server = LoopbackServer(tmp_path_factory.mktemp("mlflow-scoring") / "data")
    try:
        yield server.start()
    finally:
        server.close()
