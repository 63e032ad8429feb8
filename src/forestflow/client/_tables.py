"""Text for people: aligned tables, one-line policies, times, and a tailed event's line."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from forestflow.client._answers import PredictionEvent

PREVIEW = 4
"""Values of a column a line shows before it says how many more there are."""


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns aligned on their widest cell, numbers to the right; `-` for a missing value."""
    cells = [[text(value) for value in row] for row in rows]
    numeric = [
        any(_number(row[i]) for row in rows)
        and all(_number(row[i]) or row[i] is None for row in rows)
        for i in range(len(headers))
    ]
    widths = [
        max([len(header), *(len(row[i]) for row in cells)]) for i, header in enumerate(headers)
    ]

    def line(values: Sequence[str]) -> str:
        parts = [
            value.rjust(width) if right else value.ljust(width)
            for value, width, right in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), *(line(row) for row in cells)])


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def text(value: Any) -> str:
    """A cell: numbers short, missing as `-`, structures as compact JSON."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, Mapping | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def policy(value: Mapping[str, Any] | None) -> str:
    """`{"KeepLatest": {"servablesToKeep": 2}}` as `KeepLatest(servablesToKeep=2)`."""
    if not value:
        return "-"
    return ", ".join(
        name + ("(" + ", ".join(f"{k}={text(v)}" for k, v in (params or {}).items()) + ")")
        if params
        else name
        for name, params in value.items()
    )


def policies(values: Sequence[Mapping[str, Any]] | None) -> str:
    """A list of policies (validity rules) as one line."""
    return " + ".join(policy(v) for v in values or []) or "-"


def when(ms: int | None) -> str:
    """Epoch milliseconds as UTC time to the millisecond."""
    if ms is None:
        return "-"
    stamp = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def metrics(values: Mapping[str, float]) -> str:
    """Performance metrics as `name=value` pairs."""
    return " ".join(f"{name}={text(value)}" for name, value in sorted(values.items())) or "-"


def columns(values: Mapping[str, Sequence[Any]]) -> str:
    """A record's columns, each with its first values: `prediction=[466.8, 443.0]`."""
    parts = []
    for name, column in values.items():
        shown = ", ".join(text(v) for v in column[:PREVIEW])
        more = f", … {len(column) - PREVIEW} more" if len(column) > PREVIEW else ""
        parts.append(f"{name}=[{shown}{more}]")
    return " ".join(parts)


def event_line(event: PredictionEvent) -> str:
    """One tailed event on one line: when, which servable, served or shadow, key, size,
    latency and the prediction."""
    kind = "served" if event.served_request else "shadow"
    return "  ".join(
        [
            when(event.timestamp_ms),
            str(event.fqrv),
            kind,
            f"key={event.key if event.key is not None else '-'}",
            f"rows={event.rows}",
            f"{event.latency_ms:.1f}ms",
            columns(event.prediction),
        ]
    )
