"""A prediction frame as MLflow's answer: `{"predictions": …}`.

`mlflow models serve` answers an array output as a list (`[431.7, 428.5]`) and a pandas
DataFrame as a list of records, one object per row (`[{"label": "no", "no": 0.93, …}]`).
A prediction of one column is answered as the former, one of several columns as the
latter. Missing numbers are `null`; bytes are base64 text.
"""

from __future__ import annotations

import base64
import math
from typing import Any

from forestflow.domain.frame import Column, Frame

PREDICTIONS = "predictions"


def predictions_body(prediction: Frame) -> dict[str, Any]:
    """The answer to a scoring request for `prediction`."""
    columns = {name: json_values(column) for name, column in prediction.columns.items()}
    if len(columns) == 1:
        return {PREDICTIONS: next(iter(columns.values()))}
    names = list(columns)
    rows = zip(*columns.values(), strict=True)
    return {PREDICTIONS: [dict(zip(names, row, strict=True)) for row in rows]}


def json_values(column: Column) -> list[Any]:
    """A column's values as JSON values."""
    values: list[Any] = column.tolist()
    kind = column.dtype.kind
    if kind == "f":
        return [v if math.isfinite(v) else None for v in values]
    if kind in "iub":
        return values
    return [_json_value(v) for v in values]


def _json_value(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return value
