"""ForestFlow with the Open Inference Protocol: in-process over ASGI, or a real server process.

The in-process harness (fake clock, a MemorySink) serves the REST details; the process
(`forestflow serve`, REST and gRPC on loopback ports) serves the stock tritonclient clients,
which block, so they need a server outside the test's event loop.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
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

ROOT = Path(__file__).resolve().parents[3]
READY_LINE = "ForestFlow is ready"
GRPC_LINE = re.compile(r"Open Inference Protocol over gRPC on \S+:(\d+)")
START_TIMEOUT_S = 90.0
# the tests' artifacts are in temporary directories, some of them pickles
TRUSTING = {
    "storage": {"local_roots": ["/"], "allow_private_hosts": True},
    "security": {"allow_unsafe_formats": True},
}
TRUSTING_ENV = {
    "FORESTFLOW_SEED": "11",
    "FORESTFLOW_STORAGE__LOCAL_ROOTS": '["/"]',
    "FORESTFLOW_STORAGE__ALLOW_PRIVATE_HOSTS": "true",
    "FORESTFLOW_SECURITY__ALLOW_UNSAFE_FORMATS": "true",
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
async def oip_harness_factory(tmp_path: Path) -> AsyncIterator[OipHarnessFactory]:
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
            transport=httpx.ASGITransport(app=app.asgi), base_url="http://localhost"
        )
        harness = OipHarness(app, client, clock, sink)
        started.append(harness)
        return harness

    yield make
    for harness in started:
        await harness.client.aclose()
        await harness.app.shutdown()


# --- a real process --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OipServer:
    """A server process with REST (BASIC and the protocol) and gRPC, on loopback."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.grpc_port = 0
        self._env = {**os.environ, **TRUSTING_ENV, **(env or {})}
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.log: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        self._pump_thread: threading.Thread | None = None
        self.client = httpx.Client(base_url=self.base_url, timeout=30.0)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        """The address tritonclient.http wants (no scheme)."""
        return f"127.0.0.1:{self.port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self) -> OipServer:
        """Start the process; return once both listeners are up and state is recovered."""
        command = [
            str(Path(sys.executable).parent / "forestflow"),
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--port",
            str(self.port),
        ]
        self.proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**self._env, "FORESTFLOW_SERVER__GRPC_PORT": str(free_port())},
            cwd=ROOT,
        )
        self._pump_thread = threading.Thread(target=self._pump, args=(self.proc,), daemon=True)
        self._pump_thread.start()
        match = GRPC_LINE.search(self.wait_for_line("over gRPC on"))
        assert match is not None
        self.grpc_port = int(match.group(1))
        self.wait_for_line(READY_LINE)
        return self

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def wait_for_line(self, text: str, timeout: float = START_TIMEOUT_S) -> str:
        """Block until the server prints a line containing `text`."""
        while True:
            try:
                line = self._lines.get(timeout=timeout)
            except queue.Empty:
                log = "".join(self.log)
                raise AssertionError(f"no {text!r} from the server; log:\n{log}") from None
            if line is None:
                raise AssertionError(f"server exited before {text!r}; log:\n{''.join(self.log)}")
            self.log.append(line)
            if text in line:
                return line

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def close(self) -> None:
        """SIGTERM and wait for the graceful exit."""
        self.client.close()
        if self.proc is None:
            return
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
        if self._pump_thread is not None:
            self._pump_thread.join(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


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
