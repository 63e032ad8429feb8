"""Paired comparisons: two ForestFlow set-ups whose ratio is a target, loaded in turn.

The main table measures each server once, one after the other. On a small shared machine
two rows taken a minute apart move by up to ±25%, more than the differences these targets
are about (two shadows cost at most 20% of the served throughput; the Open Inference
route is within 10% of the BASIC one). Here both set-ups of a pair run at once, pinned to
the same core (the one not under load is idle), or are one server answering on two
routes, and wrk loads them in turn, `rounds` times each, 64 connections and 1-row bodies.
Each round's ratio compares two loads a few seconds apart; their median is the figure.

`at_once` instead loads both set-ups at the same time, half the connections each: each
then gets about half of the core, so their throughputs' ratio is the ratio of their CPU
costs per request, and it holds within about 1% from round to round while absolute
numbers move by 20% (the machine's speed drifts for both alike). It compares costs (what
two scored shadows add to a request, say); it is not the served-throughput target: a
shadow budget then counts the other server's turns as idle time and admits more.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.answers import request_bodies, verify
from benchmarks.load import PointResult, run_wrk
from benchmarks.servers import RunningServer, ServerSpec

CONNECTIONS = 64
WARM_UP_S = 2


@dataclass(slots=True)
class Pair:
    """Requests/s of a reference and a variant, measured alternately."""

    what: str
    model: str
    reference: str
    variant: str
    reference_rps: list[float] = field(default_factory=list)
    variant_rps: list[float] = field(default_factory=list)
    note: str = ""
    problem: str = ""
    failed: int = 0
    """Non-2xx answers and socket errors during the rounds (both set-ups)."""

    @property
    def round_ratios(self) -> list[float]:
        """Variant requests/s over the reference's, round by round."""
        return [v / r for r, v in zip(self.reference_rps, self.variant_rps, strict=False) if r]

    @property
    def ratio(self) -> float | None:
        """The median of the rounds' ratios: each compares two loads a few seconds apart,
        so a slow drift of the machine's speed cancels out."""
        rounds = self.round_ratios
        return statistics.median(rounds) if rounds else None


def compare(
    what: str,
    reference: ServerSpec,
    variant: ServerSpec,
    rounds: int,
    duration: float,
    work: Path,
    *,
    same_server: bool = False,
    at_once: bool = False,
) -> Pair:
    """Start the servers, check their answers, then load them in turn `rounds` times (or,
    `at_once`, both at the same time: see the module doc).

    `same_server`: the variant is the reference server answering on another route (its
    spec's protocol and score path): one process, so only the route differs."""
    pair = Pair(what, reference.model.name, reference.label, variant.label)
    scratch = Path(tempfile.mkdtemp(prefix="pair-", dir=work))
    running: list[RunningServer] = []
    try:
        loads: list[tuple[RunningServer, ServerSpec, Path]] = []
        for n, spec in enumerate((reference, variant)):
            own = scratch / str(n)
            own.mkdir()
            if n == 0 or not same_server:
                running.append(RunningServer(spec, own))
                running[-1].wait_ready()
                if spec.after_ready:
                    spec.after_ready(running[-1].base)
            server = running[-1]
            bodies = request_bodies(spec, own)
            verify(server, bodies, spec)
            run_wrk(server.base + spec.score_path, bodies[1], 8, WARM_UP_S, server.pid)
            loads.append((server, spec, bodies[1]))
        for _ in range(rounds):
            if at_once:
                results = _load_at_once(loads, duration)
            else:
                results = [
                    run_wrk(server.base + spec.score_path, body, CONNECTIONS, duration, server.pid)
                    for server, spec, body in loads
                ]
            for result, measured in zip(
                results, (pair.reference_rps, pair.variant_rps), strict=True
            ):
                measured.append(result.rps)
                pair.failed += result.non2xx + result.socket_errors
            print(
                f"  round {len(pair.variant_rps)}: {pair.reference_rps[-1]:,.0f} vs "
                f"{pair.variant_rps[-1]:,.0f} req/s",
                flush=True,
            )
        if variant.note:
            pair.note = variant.note(running[-1].base)
    except Exception as exc:  # a failed pair is reported; the run goes on
        pair.problem = str(exc).replace("|", "/").replace("\n", " ")[:240]
        print(f"  FAILED: {pair.problem}", flush=True)
    finally:
        for server in running:
            server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    return pair


def _load_at_once(
    loads: list[tuple[RunningServer, ServerSpec, Path]], duration: float
) -> list[PointResult]:
    """Load every set-up at the same time, the connections shared among them."""
    results: list[PointResult | None] = [None] * len(loads)
    errors: list[BaseException] = []

    def load(index: int) -> None:
        server, spec, body = loads[index]
        try:
            results[index] = run_wrk(
                server.base + spec.score_path,
                body,
                CONNECTIONS // len(loads),
                duration,
                server.pid,
            )
        except BaseException as error:  # re-raised below, on the caller's thread
            errors.append(error)

    threads = [threading.Thread(target=load, args=(i,)) for i in range(len(loads))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return [result for result in results if result is not None]


def markdown(pairs: list[Pair]) -> str:
    """The pairs as a Markdown table."""
    lines = [
        "| comparison | model | reference req/s, each round | variant req/s, each round "
        "| median ratio | ratio per round | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for pair in pairs:
        ratio = pair.ratio
        rounds = pair.round_ratios
        lines.append(
            "| "
            + " | ".join(
                [
                    pair.what,
                    pair.model,
                    ", ".join(f"{x:,.0f}" for x in pair.reference_rps) or "–",
                    ", ".join(f"{x:,.0f}" for x in pair.variant_rps) or "–",
                    "–" if ratio is None else f"{ratio:.2f}",
                    ", ".join(f"{x:.2f}" for x in rounds) or "–",
                    "; ".join(
                        x
                        for x in (
                            pair.failed and f"{pair.failed} failed requests",
                            pair.note,
                            pair.problem and f"FAILED: {pair.problem}",
                        )
                        if x
                    ),
                ]
            )
            + " |"
        )
    return "\n".join(lines)
