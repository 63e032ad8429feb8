"""`make bench`: every server, both models, each load point; one table, also in docs/performance.md.

.venv/bin/python -m benchmarks.run [--duration 8] [--only SUBSTRING] [--models GB,LR]
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from benchmarks import envs, servers
from benchmarks.forestflow_server import forestflow
from benchmarks.load import run_wrk
from benchmarks.models import ReferenceModel, build
from benchmarks.report import Row, markdown
from benchmarks.servers import RunningServer, ServerSpec, http

HERE = Path(__file__).parent
WORK = HERE / ".work"
DOC = HERE.parent / "docs" / "performance.md"
# (connections, rows per request)
POINTS = {"GB": [(1, 1), (8, 1), (64, 1), (8, 32)], "LR": [(1, 1), (64, 1), (8, 32)]}
WARM_UP_S = 2


def specs(model: ReferenceModel) -> list[ServerSpec]:
    """The servers for one model, bare references first (the ratios need them)."""
    line = [
        servers.bare_sklearn(model),
        servers.bare_onnx(model),
        servers.mlserver(model),
        servers.kserve(model),
        servers.litserve(model),
        servers.mlflow_serve(model),
        forestflow(model, "sklearn", "NONE"),
        forestflow(model, "sklearn", "FULL"),
        forestflow(model, "onnx", "NONE"),
        forestflow(model, "onnx", "FULL"),
        forestflow(model, "onnx", "FULL", v2=True),
    ]
    if model.name == "GB":
        line.append(forestflow(model, "sklearn", "FULL", shadows=2))
    return line


def ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    print("installing wrk from Debian (apt-get)")
    subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True, capture_output=True)


def install_envs() -> dict[str, str]:
    """Install every competitor's env; the reason for each that failed."""
    failed = {}
    for name in envs.requirements():
        print(f"environment {name} …", flush=True)
        try:
            envs.ensure(name)
        except RuntimeError as exc:
            failed[name] = str(exc)
            print(f"  {exc}")
    return failed


def _bodies(model: ReferenceModel, spec: ServerSpec, scratch: Path) -> dict[int, Path]:
    bodies = {}
    for n in (1, 32):
        path = scratch / f"body-{n}.json"
        path.write_bytes(spec.protocol.encode(model.rows[:n]))
        bodies[n] = path
    return bodies


def verify(server: RunningServer, bodies: dict[int, Path]) -> None:
    """Raise unless the server answers the bodies as the model does in process."""
    spec = server.spec
    for n, body in bodies.items():
        rows = spec.model.rows[:n]
        want = (
            spec.model.predict(rows) if spec.runtime == "sklearn" else spec.model.predict_onnx(rows)
        )
        got = spec.protocol.decode(http("POST", server.base + spec.score_path, body.read_bytes()))
        if got.shape != want.shape or not np.allclose(got, want, rtol=1e-4, atol=1e-3):
            diff = np.abs(got - want).max() if got.shape == want.shape else got.shape
            raise RuntimeError(f"wrong answers for {n} rows (max difference {diff})")


def measure(spec: ServerSpec, points: list[tuple[int, int]], duration: float) -> list[Row]:
    """Start, deploy, verify, warm up and load one server; a row per point."""
    rows = [Row(spec.label, spec.model.name, c, n) for c, n in points]
    scratch = Path(tempfile.mkdtemp(prefix="run-", dir=WORK))
    bodies = _bodies(spec.model, spec, scratch)
    server = None
    try:
        server = RunningServer(spec, scratch)
        server.wait_ready()
        if spec.after_ready:
            spec.after_ready(server.base)
        verify(server, bodies)
        url = server.base + spec.score_path
        run_wrk(url, bodies[1], 8, WARM_UP_S, server.pid)
        for row in rows:
            row.result = run_wrk(url, bodies[row.rows], row.connections, duration, server.pid)
            print(
                f"  c={row.connections:<3} rows={row.rows:<3} {row.result.rps:9,.0f} req/s",
                flush=True,
            )
        if spec.note:
            rows[-1].note = spec.note(server.base)
    except Exception as exc:  # any failure is this server's row; the run goes on
        for row in rows:
            if row.result is None:
                row.problem = str(exc).replace("|", "/").replace("\n", " ")[:240]
        print(f"  FAILED: {rows[-1].problem or exc}", flush=True)
    finally:
        if server:
            server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    return rows


def write_doc(table: str, command: str, started: datetime.datetime, minutes: float) -> None:
    template = (HERE / "performance_template.md").read_text()
    DOC.write_text(
        template.format(
            date=started.strftime("%Y-%m-%d"),
            command=command,
            table=table,
            minutes=f"{minutes:.0f}",
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=8, help="seconds per load point")
    parser.add_argument(
        "--only",
        default="",
        help="only servers whose label contains one of these (comma-separated)",
    )
    parser.add_argument("--models", default="GB,LR")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/performance.md")
    args = parser.parse_args()
    started, t0 = datetime.datetime.now(), time.monotonic()
    ensure_wrk()
    failed_envs = install_envs()
    WORK.mkdir(exist_ok=True)
    print("building the reference models", flush=True)
    models = build(WORK / "models")
    rows: list[Row] = []
    for name in args.models.split(","):
        for spec in specs(models[name]):
            wanted = [w.lower() for w in args.only.split(",") if w]
            if wanted and not any(w in spec.label.lower() for w in wanted):
                continue
            print(f"{spec.label} · {name}", flush=True)
            if spec.env_name in failed_envs:
                problem = failed_envs[spec.env_name]
                rows += [Row(spec.label, name, c, n, problem=problem) for c, n in POINTS[name]]
                continue
            rows += measure(spec, POINTS[name], args.duration)
    table = markdown(rows)
    print(table)
    (WORK / "results.json").write_text(json.dumps([asdict(r) for r in rows], indent=1))
    if not args.no_doc:
        extra = " ".join(sys.argv[1:])
        command = "make bench" + (f" BENCH_ARGS='{extra}'" if extra else "")
        write_doc(table, command, started, (time.monotonic() - t0) / 60)


if __name__ == "__main__":
    main()
