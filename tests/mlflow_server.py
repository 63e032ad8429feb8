"""A real `mlflow server` (SQLite backend) on 127.0.0.1, for the registry tests.

Started once per session by the `mlflow_server` fixture in tests/conftest.py; tests
register models under names of their own.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx


@dataclass(frozen=True)
class MlflowServer:
    """A running tracking server and a client bound to it."""

    uri: str
    client: Any  # mlflow.MlflowClient, imported lazily (importing mlflow costs seconds)

    def register(self, name: str, directory: Path, alias: str | None = None) -> str:
        """Log `directory` as a run's `model` artifact, register it; return the version."""
        run_id = self.client.create_run("0").info.run_id
        self.client.log_artifacts(run_id, str(directory), "model")
        self.client.set_terminated(run_id)
        if not self.client.search_registered_models(filter_string=f"name = '{name}'"):
            self.client.create_registered_model(name)
        source = f"runs:/{run_id}/model"
        version = str(self.client.create_model_version(name, source, run_id=run_id).version)
        if alias is not None:
            self.client.set_registered_model_alias(name, alias, version)
        return version


@contextmanager
def running_mlflow_server(root: Path) -> Iterator[MlflowServer]:
    """Start `mlflow server` with its state under `root`; stop it (and its workers) after."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", "1"]
    command += ["--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}"]
    command += ["--artifacts-destination", str(root / "artifacts")]
    # no telemetry, and no background job workers these tests never use
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    log = root / "server.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        _wait_until_healthy(process, uri, log)
        from mlflow import MlflowClient

        yield MlflowServer(uri, MlflowClient(tracking_uri=uri))
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the CLI and the uvicorn it started
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _wait_until_healthy(process: subprocess.Popen[bytes], uri: str, log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{uri}/health", timeout=0.5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        try:  # paces the polling and notices a server that died
            code = process.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            continue
        raise RuntimeError(f"mlflow server exited with {code}:\n{log.read_text()[-3000:]}")
    raise RuntimeError(f"mlflow server not healthy after 180 s:\n{log.read_text()[-3000:]}")
