"""One load point: wrk on core 0 against a server, with the server tree's CPU time and RSS."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

LUA = Path(__file__).parent / "wrk_report.lua"
LOAD_CORE = "0"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True, slots=True)
class PointResult:
    """What one wrk run measured."""

    requests: int
    non2xx: int
    socket_errors: int
    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    cpu_ms_per_request: float
    rss_mib: float


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # the command name may hold spaces and parentheses: fields start after the last ')'
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def process_tree(pid: int) -> list[int]:
    """The pid and every descendant of it."""
    tree, found, todo = _children(), [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(tree.get(current, []))
    return found


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process tree, in seconds."""
    total = 0
    for p in process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / CLK_TCK


def rss_mib(pid: int) -> float:
    """Resident memory of the whole process tree, in MiB."""
    total = 0
    for p in process_tree(pid):
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * PAGE
        except OSError:
            continue
    return total / 2**20


def run_wrk(url: str, body: Path, connections: int, seconds: float, pid: int) -> PointResult:
    """Run wrk for `seconds` at `connections` and measure the server tree meanwhile."""
    cmd = [
        "taskset",
        "-c",
        LOAD_CORE,
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{round(seconds)}s",
        "--timeout",
        "5s",
        "-s",
        str(LUA),
        url,
    ]
    cpu_before = cpu_seconds(pid)
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env={**os.environ, "BENCH_BODY": str(body)},
        timeout=seconds + 30,
        check=False,
    )
    cpu_after = cpu_seconds(pid)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_JSON ")]
    if not lines:
        raise RuntimeError(f"wrk gave no report: {(proc.stderr or proc.stdout).strip()[:200]}")
    report = json.loads(lines[-1].removeprefix("BENCH_JSON "))
    requests = report["requests"]
    served = max(report["ok"], 1)
    return PointResult(
        requests=requests,
        non2xx=report["non2xx"],
        socket_errors=report["socket_errors"],
        rps=report["ok"] / (report["duration_us"] / 1e6),
        p50_ms=report["p50_us"] / 1000,
        p99_ms=report["p99_us"] / 1000,
        max_ms=report["max_us"] / 1000,
        cpu_ms_per_request=(cpu_after - cpu_before) * 1000 / served,
        rss_mib=rss_mib(pid),
    )
