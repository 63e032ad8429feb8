"""Feedback records: the body of `POST /{org}/{project}/{n}/feedback` (SPEC §6).

```json
{"records": [{"key": "123-456", "actual": 437.2}, {"key": "o-7", "actual": [1, 0]}]}
```

- `key` is a non-empty string, compared exactly with the key of logged predictions
  (`keyFeatures` values joined with `keyFeaturesSeparator`). An integer is accepted and
  read as its decimal string (`123` → `"123"`), which is how an integer key feature is
  rendered; floats and booleans are refused, since their text form is ambiguous
  (`1.0` or `1`? `true` or `True`?): send the key as a string.
- `actual` is the ground truth: a number, a string or a boolean, or a list of those with
  one value per row of the prediction logged under the key (the rows of one request that
  share the key, in request order). `null`, objects, nested lists,
  an empty list and non-finite numbers are refused.
- Other fields of a record are ignored. At most `MAX_RECORDS` records per request.

A malformed body is refused as a whole with `InvalidField` (422), naming the field
(`records[3].actual`) and what is wrong with it; nothing of it is joined.

A well-formed record may still not fit the prediction waiting under its key (`misfit`):
a wrong number of values, or a value of the wrong type for it. The joiner refuses such a
record alone, without consuming the prediction, and the answer says which and why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from forestflow.errors import InvalidField

MAX_RECORDS = 10_000
"""Most records one feedback request may carry."""

Scalar = float | int | str | bool
"""One actual value."""
Actual = Scalar | tuple[Scalar, ...]
"""The ground truth of one keyed request: one value, or one value per predicted row."""

_SHAPE = 'expected {"records": [{"key": "<key>", "actual": <value>}, ...]}'


@dataclass(frozen=True, slots=True)
class FeedbackRecord:
    """The ground truth for the predictions logged under `key`."""

    key: str
    actual: Actual


def parse_feedback(body: object) -> list[FeedbackRecord]:
    """The records of a feedback body; raise `InvalidField` naming the first bad field."""
    if not isinstance(body, dict):
        raise InvalidField(f"{_SHAPE}; got {_kind(body)}")
    if "records" not in body:
        raise InvalidField(f"missing; {_SHAPE}", field="records")
    records = body["records"]
    if not isinstance(records, list):
        raise InvalidField(f"expected a list of records, got {_kind(records)}", field="records")
    if not records:
        raise InvalidField("no records given", field="records")
    if len(records) > MAX_RECORDS:
        raise InvalidField(
            f"{len(records)} records; at most {MAX_RECORDS} per request", field="records"
        )
    return [_record(record, f"records[{i}]") for i, record in enumerate(records)]


def _record(record: object, field: str) -> FeedbackRecord:
    if not isinstance(record, dict):
        raise InvalidField(
            f'expected an object {{"key": ..., "actual": ...}}, got {_kind(record)}', field=field
        )
    return FeedbackRecord(
        key=_key(record.get("key"), f"{field}.key"),
        actual=_actual(record, f"{field}.actual"),
    )


def _key(value: object, field: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        what = "missing or null" if value is None else f"got {_kind(value)}"
        raise InvalidField(f"expected a non-empty string key; {what}", field=field)
    if not value:
        raise InvalidField("expected a non-empty string key; got an empty string", field=field)
    return value


def _actual(record: dict[str, Any], field: str) -> Actual:
    if "actual" not in record:
        raise InvalidField("missing: give the ground truth for this key", field=field)
    value = record["actual"]
    if isinstance(value, list):
        if not value:
            raise InvalidField("expected at least one value (one per predicted row)", field=field)
        return tuple(_scalar(item, f"{field}[{i}]") for i, item in enumerate(value))
    return _scalar(value, field)


def _scalar(value: object, field: str) -> Scalar:
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        try:
            finite = math.isfinite(value)
        except OverflowError:  # an integer too large for a float
            finite = False
        if not finite:
            raise InvalidField(f"expected a finite number, got {value!r}", field=field)
        return value
    raise InvalidField(f"expected a number, a string or a boolean, got {_kind(value)}", field=field)


def misfit(actual: Actual, n_rows: int, *, numbers: bool) -> tuple[str, str] | None:
    """Why `actual` cannot be the ground truth of a prediction of `n_rows` rows (whose actual
    values must be numbers when `numbers`: a regression); None when it fits.

    The reason comes with the part of `actual` at fault: "" for all of it, "[i]" for one
    value of a list (appended to the field, `records[3].actual[1]`)."""
    values = actual if isinstance(actual, tuple) else (actual,)
    if len(values) != n_rows:
        given = "a list of 1 value" if isinstance(actual, tuple) else "one value"
        if len(values) > 1:
            given = f"{len(values)} values"
        wanted = "one value" if n_rows == 1 else f"a list of {n_rows} values, one per row"
        rows = "1 row" if n_rows == 1 else f"{n_rows} rows"
        return "", f"{given} for a prediction of {rows}: send {wanted}"
    if numbers:
        for i, value in enumerate(values):
            if isinstance(value, bool) or not isinstance(value, int | float):
                at = f"[{i}]" if isinstance(actual, tuple) else ""
                return at, f"expected a number (the prediction is a regression), got {_kind(value)}"
    return None


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"
