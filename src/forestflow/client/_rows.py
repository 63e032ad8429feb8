"""Rows to score, from a CSV or JSON file (or standard input), typed as the model wants.

A CSV's header names the features; its cells are text, converted to each feature's type as
the model's metadata gives it (an empty cell is a missing value). JSON is a list of row
objects, `{"rows": [...]}`, or a whole BASIC score request (`{"schema", "datum"}`), sent as
it is.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from forestflow.client._answers import Feature
from forestflow.client._requests import infer_schema

_INTEGER = ("Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64")
_FLOAT = ("Float16", "Float32", "Float64")
_TRUE = {"true", "1", "yes", "t", "y"}
_FALSE = {"false", "0", "no", "f", "n"}


@dataclass(frozen=True, slots=True)
class ScoreInput:
    """What a file holds: rows to type and send, or a request body to send as it is."""

    rows: list[dict[str, Any]] | None = None
    body: dict[str, Any] | None = None
    text_cells: bool = False
    """Whether the rows' values are text to convert (a CSV's)."""


def read_input(text: str, kind: str | None) -> ScoreInput:
    """The rows (or request) in `text`; `kind` is `csv`, `json` or None to tell by the text."""
    if kind is None:
        kind = "json" if text.lstrip()[:1] in ("{", "[") else "csv"
    if kind == "csv":
        rows = [dict(row) for row in csv.DictReader(io.StringIO(text))]
        if not rows:
            raise ValueError("the CSV has no rows (its first line names the features)")
        return ScoreInput(rows=rows, text_cells=True)
    found = json.loads(text)
    if isinstance(found, Mapping) and "datum" in found:
        return ScoreInput(body=dict(found))
    if isinstance(found, Mapping) and isinstance(found.get("rows"), list):
        found = found["rows"]
    if not isinstance(found, list) or not all(isinstance(r, Mapping) for r in found) or not found:
        raise ValueError('expected a list of row objects, {"rows": [...]}, or a score request')
    return ScoreInput(rows=[dict(row) for row in found])


def typed_rows(
    given: ScoreInput, features: Sequence[Feature]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rows with their values converted, and the request's schema: the model's types for
    the features it names, the values' own for any other column."""
    assert given.rows is not None
    types = {feature.name: feature.type for feature in features}
    rows = given.rows
    if given.text_cells:
        rows = [{name: _cell(cell, types.get(name)) for name, cell in row.items()} for row in rows]
    names = list(dict.fromkeys(name for row in rows for name in row))
    groups: dict[str, list[str]] = {}
    for name in names:
        if name in types:
            groups.setdefault(types[name], []).append(name)
    schema = [{"type": kind, "fields": fields} for kind, fields in groups.items()]
    others = [{n: v for n, v in row.items() if n not in types} for row in rows]
    if any(others):
        schema += infer_schema(others)
    return rows, schema


def _cell(value: str | None, kind: str | None) -> Any:
    """A CSV cell as the feature's type (guessed from the text for a feature the model does
    not name); empty is missing."""
    if value is None or value == "":
        return None
    try:
        if kind in _FLOAT:
            return float(value)
        if kind in _INTEGER:
            return int(value)
        if kind == "Bool":
            return _bool(value)
        if kind is None:
            return _guess(value)
    except ValueError as error:
        raise ValueError(f"{value!r} is not a {kind}") from error
    return value


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(value)


def _guess(value: str) -> Any:
    for convert in (int, float):
        try:
            return convert(value)
        except ValueError:
            continue
    return value
