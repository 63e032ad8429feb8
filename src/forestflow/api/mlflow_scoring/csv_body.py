"""CSV scoring bodies (`Content-Type: text/csv`) as frames, read as `pandas.read_csv` would.

The first line names the columns (an empty name becomes `Unnamed: <j>`, as pandas names
the index column `DataFrame.to_csv()` writes); each further line is a row. A column of
integers is Int64, of numbers Float64, of `True`/`False` Bool, anything else text; the
cells pandas reads as missing (empty, `NA`, `NaN`, `null`, …) are missing values. An
input the model declares `String` keeps its cells as text (digits too).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from typing import Any

import numpy as np

from forestflow.api.mlflow_scoring.columns import invalid
from forestflow.domain.frame import Column, Frame, TensorType

FIELD = "csv"
MISSING = frozenset(
    {
        "",
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "-1.#QNAN",
        "-NaN",
        "-nan",
        "1.#IND",
        "1.#QNAN",
        "<NA>",
        "N/A",
        "NA",
        "NULL",
        "NaN",
        "None",
        "n/a",
        "nan",
        "null",
    }
)
"""pandas' default `na_values`."""
_TRUE = frozenset({"True", "TRUE", "true"})
_FALSE = frozenset({"False", "FALSE", "false"})


def parse_csv(raw: bytes, types: Mapping[str, TensorType]) -> Frame:
    """A CSV body as a frame; `types` are the model's declared input types by name."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise invalid(f"the body is not UTF-8 text: {error}", FIELD) from None
    try:
        lines = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as error:
        raise invalid(f"malformed CSV: {error}", FIELD) from None
    lines = [line for line in lines if line]  # pandas skips blank lines
    if not lines:
        raise invalid("the body is empty; expected a header line and rows", FIELD)
    header = [name or f"Unnamed: {j}" for j, name in enumerate(lines[0])]
    if len(set(header)) != len(header):
        twice = next(name for name in header if header.count(name) > 1)
        raise invalid(f"column {twice!r} is named twice", f"{FIELD}.header")
    rows = lines[1:]
    if not rows:
        raise invalid("the body holds a header but no rows", FIELD)
    for number, row in enumerate(rows, start=2):
        if len(row) > len(header):
            raise invalid(
                f"line {number} holds {len(row)} values; the header names {len(header)}", FIELD
            )
    width = len(header)
    cells = [row + [""] * (width - len(row)) for row in rows]  # short lines: missing values
    columns = {
        name: _column([row[j] for row in cells], types.get(name)) for j, name in enumerate(header)
    }
    return Frame(columns, {})


def _column(cells: list[str], declared: TensorType | None) -> Column:
    """One column's cells, typed as pandas reads them (as text for a declared text input)."""
    missing = [cell.strip() in MISSING for cell in cells]
    if declared is not TensorType.String and declared is not TensorType.Bytes:
        present = [cell.strip() for cell, gap in zip(cells, missing, strict=True) if not gap]
        typed = _numbers(cells, missing, present)
        if typed is None:
            typed = _booleans(cells, missing, present)
        if typed is not None:
            return typed
    column = np.empty(len(cells), dtype=object)
    column[:] = [None if gap else cell for cell, gap in zip(cells, missing, strict=True)]
    if declared is TensorType.Bytes:
        for row, value in enumerate(column):
            column[row] = None if value is None else value.encode()
    return column


def _numbers(cells: list[str], missing: list[bool], present: list[str]) -> Column | None:
    if not present:
        return np.full(len(cells), np.nan)  # nothing but missing values: NaN, as pandas
    try:
        if not any(missing):
            integers = [int(cell) for cell in present]
            if all(-(2**63) <= value < 2**63 for value in integers):
                return np.array(integers, dtype=np.int64)
    except ValueError:
        pass
    try:
        values: list[Any] = [float(cell) for cell in present]
    except ValueError:
        return None
    column = np.full(len(cells), np.nan)
    column[~np.array(missing, dtype=bool)] = values
    return column


def _booleans(cells: list[str], missing: list[bool], present: list[str]) -> Column | None:
    if not all(cell in _TRUE or cell in _FALSE for cell in present):
        return None
    if not any(missing):
        return np.array([cell in _TRUE for cell in present], dtype=bool)
    column = np.empty(len(cells), dtype=object)
    column[:] = [
        None if gap else cell.strip() in _TRUE for cell, gap in zip(cells, missing, strict=True)
    ]
    return column
