"""MLflow's JSON scoring payloads ⇄ `Frame`, as `mlflow models serve` reads them.

A body holds exactly one of `dataframe_split` (`columns`, `data`, optional `index`),
`dataframe_records` (a list of row objects), `instances` or `inputs` (rows as objects,
rows as lists, or an object of columns), and optionally `params`, which become the
frame's `configs` as BASIC `configs` do. Other keys are ignored, as MLflow ignores them.

Columns are matched to the model's inputs by name. Data without names (rows as lists,
`dataframe_split` without `columns`, pandas' default column labels 0..n-1) is read in the
model's input order: `ModelInputs` says what that order is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from forestflow.api.mlflow_scoring.columns import frame_of_columns, frame_of_rows, invalid
from forestflow.domain.frame import Frame, TensorType

DF_SPLIT = "dataframe_split"
DF_RECORDS = "dataframe_records"
INSTANCES = "instances"
INPUTS = "inputs"
FORMATS = (DF_SPLIT, DF_RECORDS, INSTANCES, INPUTS)
PARAMS = "params"


@dataclass(frozen=True, slots=True)
class ModelInputs:
    """What the payload parsers need of the model(s) that may answer a request."""

    order: tuple[str, ...] | None
    """Input names in the model's order; () when the model names none (it takes the
    request's columns in request order); None when the candidates disagree (`conflict`)."""
    types: Mapping[str, TensorType] = field(default_factory=dict)
    """The declared type of each input, by name."""
    conflict: str = ""

    def positional(self, width: int, where: str) -> tuple[str, ...]:
        """Names for `width` columns given without names: the model's inputs, in order."""
        if self.order is None:
            raise invalid(self.conflict, where)
        if not self.order:
            return tuple(str(j) for j in range(width))
        if width != len(self.order):
            raise invalid(
                f"values without column names are read in the model's input order, and the "
                f"model takes {len(self.order)} inputs ({', '.join(self.order)}); "
                f"the rows hold {width}",
                where,
            )
        return self.order


def parse_payload(body: Any, inputs: ModelInputs) -> Frame:
    """A JSON scoring body as a frame; errors name the field at fault."""
    if not isinstance(body, dict):
        kind = "an array" if isinstance(body, list) else f"a {type(body).__name__}"
        raise invalid(
            f"the body must be a JSON object with one of {', '.join(FORMATS)}; got {kind}"
        )
    present = [key for key in FORMATS if key in body]
    if len(present) != 1:
        given = ", ".join(map(repr, body)) or "none"
        raise invalid(
            f"the body must hold exactly one of {', '.join(FORMATS)} (and optionally {PARAMS}); "
            f"its fields are {given}"
        )
    (key,) = present
    configs = configs_of(body.get(PARAMS))
    return _PARSERS[key](body[key], inputs, configs, key)


def configs_of(params: Any) -> dict[str, str]:
    """`params` as frame configs: text as it is, other values as JSON text; null left out."""
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise invalid("expected an object of parameters", PARAMS)
    return {
        key: value if isinstance(value, str) else orjson.dumps(value).decode()
        for key, value in params.items()
        if value is not None
    }


def _split(value: Any, inputs: ModelInputs, configs: dict[str, str], key: str) -> Frame:
    if not isinstance(value, dict):
        raise invalid("expected an object with 'data' and optionally 'columns' and 'index'", key)
    unknown = sorted(set(value) - {"columns", "data", "index"})
    if unknown:
        raise invalid("unknown field; allowed: columns, data, index", f"{key}.{unknown[0]}")
    if "data" not in value:
        raise invalid("missing: the rows, as an array of arrays", f"{key}.data")
    data = _non_empty(value["data"], f"{key}.data")
    if not any(isinstance(row, list) for row in data):
        data = [[cell] for cell in data]  # a list of values is one column, as pandas reads it
    width = len(data[0]) if isinstance(data[0], list) else 0
    names = _split_columns(value.get("columns"), width, inputs, key)
    _check_rows(data, len(names), f"{key}.data")
    index = value.get("index")
    if index is not None and (not isinstance(index, list) or len(index) != len(data)):
        raise invalid(f"expected an array of {len(data)} labels, one per row", f"{key}.index")
    return frame_of_rows(names, data, inputs.types, configs, key)


def _split_columns(columns: Any, width: int, inputs: ModelInputs, key: str) -> tuple[str, ...]:
    where = f"{key}.columns"
    if columns is not None and not (
        isinstance(columns, list) and all(isinstance(c, str | int) for c in columns)
    ):
        raise invalid("expected an array of column names", where)
    if columns is None or columns == list(range(len(columns))):
        return inputs.positional(width, f"{key}.data")  # pandas' default labels: no names
    return _unique([str(c) for c in columns], where)


def _records(value: Any, inputs: ModelInputs, configs: dict[str, str], key: str) -> Frame:
    rows = _non_empty(value, key)
    if isinstance(rows[0], list):
        return _lists(rows, inputs, configs, key)
    return _objects(rows, inputs, configs, key)


def _tensor_input(value: Any, inputs: ModelInputs, configs: dict[str, str], key: str) -> Frame:
    """`instances` or `inputs`: rows as objects or lists, one input's values, or columns."""
    if isinstance(value, dict):
        return _column_object(value, inputs, configs, key)
    rows = _non_empty(value, key)
    if isinstance(rows[0], dict):
        return _objects(rows, inputs, configs, key)
    if isinstance(rows[0], list):
        return _lists(rows, inputs, configs, key)
    names = inputs.positional(1, key)  # one value per row: the model's one input
    _check_kinds(rows, lambda item: not isinstance(item, list | dict), "single values", key)
    return frame_of_rows(names, [[cell] for cell in rows], inputs.types, configs, key)


def _objects(rows: list[Any], inputs: ModelInputs, configs: dict[str, str], key: str) -> Frame:
    """Rows as objects (pandas' `records`); a key a row leaves out is a missing value."""
    _check_kinds(rows, lambda item: isinstance(item, dict), "objects (one per row)", key)
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    columns = {name: [row.get(name) for row in rows] for name in names}
    return frame_of_columns(columns, inputs.types, configs, key)


def _lists(rows: list[Any], inputs: ModelInputs, configs: dict[str, str], key: str) -> Frame:
    """Rows as lists of values, in the model's input order."""
    _check_kinds(rows, lambda item: isinstance(item, list), "arrays (one per row)", key)
    names = inputs.positional(len(rows[0]), key)
    _check_rows(rows, len(names), key)
    return frame_of_rows(names, rows, inputs.types, configs, key)


def _column_object(
    value: dict[str, Any], inputs: ModelInputs, configs: dict[str, str], key: str
) -> Frame:
    """An object of columns (`{"name": [values]}`); an object of single values is one row."""
    if not value:
        raise invalid("is empty: send at least one column", key)
    if not any(isinstance(v, list) for v in value.values()):
        return frame_of_columns({n: [v] for n, v in value.items()}, inputs.types, configs, key)
    columns = {name: _column_values(values, f"{key}.{name}") for name, values in value.items()}
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        described = ", ".join(f"{name}: {n}" for name, n in lengths.items())
        raise invalid(f"columns differ in length ({described}); send one value per row", key)
    if not next(iter(lengths.values())):
        raise invalid("the columns hold no rows", key)
    return frame_of_columns(columns, inputs.types, configs, key)


def _column_values(values: Any, where: str) -> list[Any]:
    """A column's values; a column of one-value rows (`[[1], [2]]`) is taken flat."""
    if not isinstance(values, list):
        raise invalid("expected an array of values (one per row)", where)
    if values and all(isinstance(v, list) and len(v) == 1 for v in values):
        return [v[0] for v in values]
    return values


def _non_empty(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise invalid("expected an array of rows", where)
    if not value:
        raise invalid("is empty: send at least one row", where)
    return value


def _check_kinds(rows: list[Any], fits: Callable[[Any], bool], kind: str, where: str) -> None:
    for i, row in enumerate(rows):
        if not fits(row):
            raise invalid(f"expected {kind}, like the first", f"{where}[{i}]")


def _check_rows(rows: Sequence[Any], width: int, where: str) -> None:
    for i, row in enumerate(rows):
        if not isinstance(row, list):
            raise invalid("expected an array of values", f"{where}[{i}]")
        if len(row) != width:
            raise invalid(f"the row holds {len(row)} values; expected {width}", f"{where}[{i}]")


def _unique(names: list[str], where: str) -> tuple[str, ...]:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise invalid(f"column {name!r} is named twice", where)
        seen.add(name)
    return tuple(names)


_Parser = Callable[[Any, ModelInputs, dict[str, str], str], Frame]
_PARSERS: dict[str, _Parser] = {
    DF_SPLIT: _split,
    DF_RECORDS: _records,
    INSTANCES: _tensor_input,
    INPUTS: _tensor_input,
}
