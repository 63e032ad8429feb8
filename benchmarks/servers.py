"""Every server of the comparison: how to install, start, deploy to and stop it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import envs
from benchmarks.models import ReferenceModel
from benchmarks.protocols import (
    KSERVE_V1,
    MLFLOW,
    OPEN_INFERENCE_V2,
    ROWS,
    Protocol,
)

HERE = Path(__file__).parent
PROJECT = HERE.parent
SERVER_CORE = "1"
READY_TIMEOUT_S = 180


@dataclass(frozen=True, slots=True)
class Launch:
    """A command line to start, with its extra environment and working directory."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = HERE


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """One row group of the table: a server serving one model one way."""

    label: str
    model: ReferenceModel
    runtime: str  # "sklearn" or "onnx": the in-process predictions its answers must match
    protocol: Protocol
    score_path: str
    ready_path: str
    launch: Callable[[int, Path], Launch]  # (port, scratch dir) -> Launch; may install
    env_name: str | None = None  # its virtual environment under benchmarks/.envs
    after_ready: Callable[[str], None] | None = None  # (base url): deploy models
    note: Callable[[str], str] | None = None  # (base url): a remark read after the load


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: bytes | None = None, timeout: float = 30) -> bytes:
    """One request; raises RuntimeError on non-2xx with the answer's start."""
    request = urllib.request.Request(url, data=body, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.read()
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{method} {url} -> {exc.code}: {exc.read()[:300]!r}") from exc


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    # these slow a current numpy on some processors: unset both, for the servers only
    env.pop("OPENBLAS_CORETYPE", None)
    env.pop("OPENBLAS_L2_SIZE", None)
    env.pop("VIRTUAL_ENV", None)
    env["PYTHONUNBUFFERED"] = "1"
    return {**env, **extra}


class RunningServer:
    """A server started pinned to SERVER_CORE in its own process group."""

    def __init__(self, spec: ServerSpec, scratch: Path) -> None:
        self.spec = spec
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = scratch / "server.log"
        launch = spec.launch(self.port, scratch)
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(
                ["taskset", "-c", SERVER_CORE, *launch.argv],
                cwd=launch.cwd,
                env=_clean_env(launch.env),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self) -> str:
        lines = self.log_path.read_text(errors="replace").strip().splitlines()
        return " | ".join(lines[-3:])[-300:]

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                http("GET", self.base + self.spec.ready_path, timeout=2)
                return
            except (RuntimeError, OSError):
                time.sleep(0.25)
        raise RuntimeError(f"not ready after {READY_TIMEOUT_S} s: {self.log_tail()}")

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=15)


# --- the bare references -------------------------------------------------------------


def bare_sklearn(model: ReferenceModel) -> ServerSpec:
    def launch(port: int, _: Path) -> Launch:
        script = str(HERE / "bare_sklearn.py")
        return Launch(
            [sys.executable, script, "--model", str(model.joblib_path), "--port", str(port)]
        )

    return ServerSpec("bare uvicorn + sklearn", model, "sklearn", ROWS, "/", "/", launch)


def bare_onnx(model: ReferenceModel) -> ServerSpec:
    def launch(port: int, _: Path) -> Launch:
        script = str(HERE / "bare_onnx.py")
        return Launch(
            [sys.executable, script, "--model", str(model.onnx_path), "--port", str(port)]
        )

    return ServerSpec("bare Starlette + ONNX Runtime", model, "onnx", ROWS, "/", "/", launch)


# --- the servers people use ----------------------------------------------------------


def mlserver(model: ReferenceModel) -> ServerSpec:
    name = model.name.lower()

    def launch(port: int, scratch: Path) -> Launch:
        python = envs.ensure("mlserver")
        repo = scratch / "mlserver"
        (repo / name).mkdir(parents=True, exist_ok=True)
        settings = {
            "host": "127.0.0.1",
            "http_port": port,
            "grpc_port": free_port(),
            "metrics_port": free_port(),
            "parallel_workers": 0,
        }
        (repo / "settings.json").write_text(json.dumps(settings))
        model_settings = {
            "name": name,
            "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": str(model.joblib_path)},
        }
        (repo / name / "model-settings.json").write_text(json.dumps(model_settings))
        # inference in the HTTP process: MLServer's fastest setting on one core
        env = {"MLSERVER_PARALLEL_WORKERS": "0", "PATH": f"{python.parent}:{os.environ['PATH']}"}
        return Launch([str(python.parent / "mlserver"), "start", str(repo)], env)

    return ServerSpec(
        "MLServer 1.7.1 (in process)",
        model,
        "sklearn",
        OPEN_INFERENCE_V2,
        f"/v2/models/{name}/infer",
        f"/v2/models/{name}/ready",
        launch,
        env_name="mlserver",
    )


def mlflow_serve(model: ReferenceModel) -> ServerSpec:
    def launch(port: int, scratch: Path) -> Launch:
        python = envs.ensure("mlflow")
        target = scratch / "mlflow-model"
        saved = subprocess.run(
            [str(python), str(HERE / "mlflow_model.py"), str(model.joblib_path), str(target)],
            capture_output=True,
            text=True,
            cwd=HERE.parent,
            check=False,
        )
        if saved.returncode:
            raise RuntimeError(f"saving the MLflow model failed: {saved.stderr.strip()[-240:]}")
        argv = [
            str(python.parent / "mlflow"),
            "models",
            "serve",
            "-m",
            str(target),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "--env-manager",
            "local",
        ]
        return Launch(argv, {"PATH": f"{python.parent}:{os.environ['PATH']}"})

    return ServerSpec(
        "mlflow models serve",
        model,
        "sklearn",
        MLFLOW,
        "/invocations",
        "/ping",
        launch,
        env_name="mlflow",
    )


def kserve(model: ReferenceModel) -> ServerSpec:
    name = model.name.lower()

    def launch(port: int, _: Path) -> Launch:
        python = envs.ensure("kserve")
        argv = [
            str(python),
            str(HERE / "kserve_server.py"),
            "--model",
            str(model.joblib_path),
            "--name",
            name,
            "--port",
            str(port),
            "--grpc-port",
            str(free_port()),
        ]
        return Launch(argv)

    return ServerSpec(
        "KServe 0.21 ModelServer",
        model,
        "sklearn",
        KSERVE_V1,
        f"/v1/models/{name}:predict",
        f"/v1/models/{name}",
        launch,
        env_name="kserve",
    )


def litserve(model: ReferenceModel) -> ServerSpec:
    def launch(port: int, _: Path) -> Launch:
        python = envs.ensure("litserve")
        script = str(HERE / "litserve_server.py")
        return Launch([str(python), script, "--model", str(model.joblib_path), "--port", str(port)])

    return ServerSpec(
        "LitServe 0.2.19 (batch 16)",
        model,
        "sklearn",
        ROWS,
        "/predict",
        "/health",
        launch,
        env_name="litserve",
    )
