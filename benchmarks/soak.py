"""`make soak`: ForestFlow under full load for minutes, its memory sampled as it goes.

.venv/bin/python -m benchmarks.soak [--minutes 5] [--runtime sklearn] [--log FULL] [--model GB]

Starts `forestflow serve` pinned to core 1 as `make bench` does, deploys the model with
the given logging level, then runs `wrk` at 64 connections with 1-row bodies from core 0
in back-to-back 30-second rounds, printing each round's requests/s, p99 and the server's
resident memory (RSS of its whole process tree). The verdict line compares the last
round's RSS with the first's: flat means within 10%.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from benchmarks.forestflow_server import forestflow
from benchmarks.load import rss_mib, run_wrk
from benchmarks.models import build
from benchmarks.run import WORK, ensure_wrk, verify
from benchmarks.servers import RunningServer

ROUND_S = 30
CONNECTIONS = 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--runtime", choices=["sklearn", "onnx"], default="sklearn")
    parser.add_argument("--log", choices=["NONE", "FULL"], default="FULL")
    parser.add_argument("--model", choices=["GB", "LR"], default="GB")
    args = parser.parse_args()
    ensure_wrk()
    WORK.mkdir(exist_ok=True)
    model = build(WORK / "models")[args.model]
    spec = forestflow(model, args.runtime, args.log)
    scratch = Path(tempfile.mkdtemp(prefix="soak-", dir=WORK))
    server = RunningServer(spec, scratch)
    try:
        server.wait_ready()
        assert spec.after_ready is not None
        spec.after_ready(server.base)
        body = scratch / "body-1.json"
        body.write_bytes(spec.protocol.encode(model.rows[:1]))
        bodies = {1: body}
        verify(server, bodies)
        print(f"{spec.label} · {args.model}: RSS after load {rss_mib(server.pid):.0f} MiB")
        print("| minute | req/s | p99 ms | max ms | RSS MiB |\n|---|---|---|---|---|")
        rounds = max(1, round(args.minutes * 60 / ROUND_S))
        samples = []
        for n in range(rounds):
            result = run_wrk(server.base + spec.score_path, body, CONNECTIONS, ROUND_S, server.pid)
            samples.append(result.rss_mib)
            minute = (n + 1) * ROUND_S / 60
            print(
                f"| {minute:.1f} | {result.rps:,.0f} | {result.p99_ms:.1f} | "
                f"{result.max_ms:.0f} | {result.rss_mib:.0f} |",
                flush=True,
            )
        growth = (samples[-1] - samples[0]) / samples[0] * 100
        verdict = "flat" if abs(growth) <= 10 else "NOT flat"
        print(f"RSS {samples[0]:.0f} → {samples[-1]:.0f} MiB ({growth:+.1f}%): {verdict}")
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
