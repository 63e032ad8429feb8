"""`make bench`: every server, both models, each load point; one table, also in docs/performance.md.

.venv/bin/python -m benchmarks.run [--duration 8] [--only SUBSTRING] [--models GB,LR]
    [--pair-rounds 5] [--pairs-at-once] [--no-doc]
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

from benchmarks import envs, pairs, servers
from benchmarks.answers import request_bodies, verify
from benchmarks.forestflow_server import forestflow
from benchmarks.load import run_wrk
from benchmarks.models import ReferenceModel, build
from benchmarks.report import Row, markdown
from benchmarks.servers import RunningServer, ServerSpec

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


def pair_specs(model: ReferenceModel) -> list[tuple[str, ServerSpec, ServerSpec, bool]]:
    """The comparisons measured alternately (`benchmarks.pairs`): what, reference, variant,
    and whether the variant is the reference server on another route."""
    line = [
        (
            "Open Inference REST vs BASIC (ONNX, FULL; one server)",
            forestflow(model, "onnx", "FULL"),
            forestflow(model, "onnx", "FULL", v2=True),
            True,
        )
    ]
    if model.name == "GB":
        line[:0] = [
            # the targets against the bare handlers, apart from the table: there a
            # ForestFlow row comes minutes after the bare handler's, longer than the
            # machine holds its speed
            _against(servers.bare_sklearn(model), forestflow(model, "sklearn", "FULL")),
            _against(servers.bare_onnx(model), forestflow(model, "onnx", "NONE")),
            _against(servers.bare_onnx(model), forestflow(model, "onnx", "FULL")),
            (
                "two FULL shadows vs none (sklearn, FULL)",
                forestflow(model, "sklearn", "FULL"),
                forestflow(model, "sklearn", "FULL", shadows=2),
                False,
            ),
        ]
    return line


def _against(
    reference: ServerSpec, variant: ServerSpec
) -> tuple[str, ServerSpec, ServerSpec, bool]:
    """A pair of two servers, named after their rows in the table."""
    return f"{variant.label} vs {reference.label}", reference, variant, False


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


def measure(spec: ServerSpec, points: list[tuple[int, int]], duration: float) -> list[Row]:
    """Start, deploy, verify, warm up and load one server; a row per point."""
    rows = [Row(spec.label, spec.model.name, c, n) for c, n in points]
    scratch = Path(tempfile.mkdtemp(prefix="run-", dir=WORK))
    bodies = request_bodies(spec, scratch)
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


def write_doc(
    table: str, paired: str, command: str, started: datetime.datetime, minutes: float
) -> None:
    template = (HERE / "performance_template.md").read_text()
    DOC.write_text(
        template.format(
            date=started.strftime("%Y-%m-%d"),
            command=command,
            table=table,
            pairs=paired,
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
    parser.add_argument(
        "--pair-rounds",
        type=int,
        default=5,
        help="rounds of each paired comparison (0: none)",
    )
    parser.add_argument(
        "--pairs-at-once",
        action="store_true",
        help="load both set-ups of a pair at the same time: compares their costs per "
        "request (see benchmarks/pairs.py), not the targets; implies --no-doc",
    )
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/performance.md")
    args = parser.parse_args()
    started, t0 = datetime.datetime.now(), time.monotonic()
    ensure_wrk()
    failed_envs = install_envs()
    WORK.mkdir(exist_ok=True)
    print("building the reference models", flush=True)
    models = build(WORK / "models")
    rows: list[Row] = []
    wanted = [w.lower() for w in args.only.split(",") if w]
    for name in args.models.split(","):
        for spec in specs(models[name]):
            if wanted and not any(w in spec.label.lower() for w in wanted):
                continue
            print(f"{spec.label} · {name}", flush=True)
            if spec.env_name in failed_envs:
                problem = failed_envs[spec.env_name]
                rows += [Row(spec.label, name, c, n, problem=problem) for c, n in POINTS[name]]
                continue
            rows += measure(spec, POINTS[name], args.duration)
    compared: list[pairs.Pair] = []
    for name in args.models.split(",") if args.pair_rounds > 0 else []:
        for what, reference, variant, same in pair_specs(models[name]):
            if wanted and not any(w in variant.label.lower() for w in wanted):
                continue
            print(f"paired: {what} · {name}", flush=True)
            compared.append(
                pairs.compare(
                    what,
                    reference,
                    variant,
                    args.pair_rounds,
                    args.duration,
                    WORK,
                    same_server=same,
                    at_once=args.pairs_at_once,
                )
            )
    table, paired = markdown(rows), pairs.markdown(compared)
    print(table)
    print(paired)
    results = {"rows": [asdict(r) for r in rows], "pairs": [asdict(p) for p in compared]}
    (WORK / "results.json").write_text(json.dumps(results, indent=1))
    if not args.no_doc and not args.pairs_at_once:
        extra = " ".join(sys.argv[1:])
        command = "make bench" + (f" BENCH_ARGS='{extra}'" if extra else "")
        write_doc(table, paired, command, started, (time.monotonic() - t0) / 60)


if __name__ == "__main__":
    main()
