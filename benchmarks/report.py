"""The results table: one row per server, model and load point, ratios to the bare handlers."""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.load import PointResult

BARE_SKLEARN = "bare uvicorn + sklearn"
BARE_ONNX = "bare Starlette + ONNX Runtime"
HEADER = (
    "| server | model | conns | rows | req/s | p50 ms | p99 ms | CPU ms/req | RSS MiB "
    "| × bare sklearn | × bare ONNX | errors / notes |"
)


@dataclass(slots=True)
class Row:
    """One table row: a measured point, or the reason there is none."""

    server: str
    model: str
    connections: int
    rows: int
    result: PointResult | None = None
    problem: str = ""
    note: str = ""


def _ratio(row: Row, by_key: dict[tuple[str, str, int, int], Row], bare: str) -> str:
    ref = by_key.get((bare, row.model, row.connections, row.rows))
    if row.result is None or ref is None or ref.result is None or not ref.result.rps:
        return "–"
    return f"{row.result.rps / ref.result.rps:.2f}"


def _cells(row: Row, by_key: dict[tuple[str, str, int, int], Row]) -> list[str]:
    head = [row.server, row.model, str(row.connections), str(row.rows)]
    r = row.result
    if r is None:
        return [*head, "–", "–", "–", "–", "–", "–", "–", f"FAILED: {row.problem}"]
    errors = r.non2xx + r.socket_errors
    remarks = [f"{errors} failed requests of {r.requests}"] if errors else []
    if r.max_ms > 1000:
        remarks.append(f"max {r.max_ms:.0f} ms")
    remarks += [x for x in (row.problem, row.note) if x]
    return [
        *head,
        f"{r.rps:,.0f}",
        f"{r.p50_ms:.2f}",
        f"{r.p99_ms:.2f}",
        f"{r.cpu_ms_per_request:.2f}",
        f"{r.rss_mib:.0f}",
        _ratio(row, by_key, BARE_SKLEARN),
        _ratio(row, by_key, BARE_ONNX),
        "; ".join(remarks),
    ]


def markdown(rows: list[Row]) -> str:
    """The table in Markdown, ordered by model, load point, then as run."""
    by_key = {(r.server, r.model, r.connections, r.rows): r for r in rows}
    ordered = sorted(rows, key=lambda r: (r.model, r.rows, r.connections))
    lines = [HEADER, "|" + "---|" * 12]
    lines += ["| " + " | ".join(_cells(r, by_key)) + " |" for r in ordered]
    return "\n".join(lines)
