"""Real `forestflow serve` processes on free ports, awaited through their own log."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

READY_LINE = "ForestFlow is ready"
# The tests' artifacts live in temporary directories and on loopback servers, and some are
# pickles: test servers trust them unless a test's `env` says otherwise.
TRUSTING_ENV = {
    "FORESTFLOW_SEED": "11",
    "FORESTFLOW_STORAGE__LOCAL_ROOTS": '["/"]',
    "FORESTFLOW_STORAGE__ALLOW_PRIVATE_HOSTS": "true",
    "FORESTFLOW_SECURITY__ALLOW_UNSAFE_FORMATS": "true",
    "FORESTFLOW_SERVER__GRPC_PORT": "0",  # servers run side by side; gRPC tests choose a port
}
START_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """One `forestflow serve` child process and a client bound to it."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._env = {**os.environ, **TRUSTING_ENV, **(env or {})}
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.log: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        self._reaped = True
        self.client = httpx.Client(base_url=self.base_url, timeout=30.0)

    def start(self) -> ServerProcess:
        """Start the process and return once it logged that it is ready."""
        return self.start_with()

    def start_with(self, *options: str, until: str = READY_LINE) -> ServerProcess:
        """Start the process with more `serve` options; return once it printed `until`
        (by default: once it is ready)."""
        data = ("--port", str(self.port), "--data-dir", str(self.data_dir))
        return self._start(*data, *options, until=until)

    def start_from_environment(self, port_variable: str, data_dir_variable: str) -> ServerProcess:
        """Start the process without options: the environment variables named (the original
        ForestFlow's, say) give it its port and data directory."""
        given = {port_variable: str(self.port), data_dir_variable: str(self.data_dir)}
        self._env = {**self._env, **given}
        return self._start()

    def _start(self, *options: str, until: str = READY_LINE) -> ServerProcess:
        command = [sys.executable, "-m", "forestflow.cli", "serve", *options]
        self._reaped = False
        self.proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self._env
        )
        self._pump_thread = threading.Thread(target=self._pump, args=(self.proc,), daemon=True)
        self._pump_thread.start()
        self.wait_for_line(until)
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
                raise AssertionError(
                    f"server did not print {text!r}; log:\n{''.join(self.log)}"
                ) from None
            if line is None:
                raise AssertionError(f"server exited before {text!r}; log:\n{''.join(self.log)}")
            self.log.append(line)
            if text in line:
                return line

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks run."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._reap()

    def terminate(self) -> int:
        """SIGTERM, then wait for a graceful exit; returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        self._reap()
        return code

    def _reap(self) -> None:
        assert self.proc is not None
        if self._reaped:
            return
        self._reaped = True
        self._pump_thread.join(timeout=10)
        while (line := self._lines.get_nowait() if not self._lines.empty() else None) is not None:
            self.log.append(line)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def close(self) -> None:
        if self.alive():
            self.kill()
        elif self.proc is not None:
            self.proc.wait(timeout=30)
            self._reap()
        self.client.close()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    servers: list[ServerProcess] = []

    def make(data_dir: Path | None = None, env: dict[str, str] | None = None) -> ServerProcess:
        server = ServerProcess(data_dir or tmp_path / "data", env)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.close()
