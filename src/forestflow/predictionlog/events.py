"""Prediction events (SPEC §5): one per scored request, served or shadow, and their schema.

`event_record` renders an event in the documented, versioned wire schema that every sink
writes (docs/prediction-log.md). Bump `SCHEMA_VERSION` on any change a reader would notice
(adding a field is not one: readers ignore fields they do not know).
`encode_event` turns it into bytes once, for every sink: the JSON is built in one place.

Keys (docs/prediction-log.md#keys): each row of a request has its own key, built from
`keyFeatures` — the value in `configs` when there is one (the same for every row), else
the row's own value of that feature. The event's `key` is the first row's key: for a
one-row request the key, and the Kafka message key of every event. `RowKeys` holds what
the other rows' keys are made of, taken in O(number of key features) on the serving path;
the keys themselves are built when first asked for, on the emitter's thread (the record's
`rowKeys`, the feedback joiner's entries per key), once per event.

`PredictionEvent` and `EncodedEvent` are made for every scored request, served or shadow,
so they are slotted dataclasses that are not frozen: a frozen one's `__init__` sets each
field through `object.__setattr__`, 1.5 µs more for an event's nine fields. Nothing
changes them once made.
"""

from __future__ import annotations

import base64
import functools
import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from forestflow.domain.codec import encode
from forestflow.domain.fqrv import FQRV
from forestflow.domain.frame import Column, Frame
from forestflow.domain.settings import LoggingSettings

SCHEMA_VERSION = 1
"""Version of the record layout written by `event_record`."""

_NUMPY = orjson.OPT_SERIALIZE_NUMPY


@dataclass(slots=True)  # not frozen: see the module doc
class PredictionEvent:
    """What one servable predicted for one request."""

    fqrv: FQRV
    served_request: bool
    timestamp_ms: int
    request: Frame
    prediction: Frame
    latency_ms: float
    key: str | None
    """The first row's key (`record_key`); None when the servable has no `keyFeatures`."""
    row_keys: RowKeys | None = None
    """What each row's key is made of (`RowKeys.of`); None: every row has `key`."""
    shared_request: SharedRequest | None = None
    """`request`'s part of the record, encoded once for every event of the same request
    (the served prediction's and each shadow's); None: encoded for this event alone."""


class SharedRequest:
    """The `request` part of a record (features and configs), encoded when first asked for
    and then kept: the events of one request — the served prediction and each shadow's —
    encode the request's rows once between them, on the emitter's thread."""

    __slots__ = ("_fragment", "frame")

    def __init__(self, frame: Frame) -> None:
        self.frame = frame
        self._fragment: orjson.Fragment | None = None

    def fragment(self) -> orjson.Fragment:
        """The encoded JSON, for `orjson.dumps` to copy into a record as it is."""
        if self._fragment is None:
            encoded = orjson.dumps(_request_json(self.frame, nan_as_none=False), option=_NUMPY)
            self._fragment = orjson.Fragment(encoded)
        return self._fragment


class RowKeys:
    """The key of each row of one request, built when first asked for (see the module doc).

    Per key feature, in order, a part is either one text for every row (the value in
    `configs`; "" when the feature is nowhere) or the request's column of that feature.
    Holding only those columns, it keeps nothing else of the request.
    """

    __slots__ = ("_keys", "n_rows", "parts", "separator")

    def __init__(self, parts: tuple[str | Column, ...], separator: str, n_rows: int) -> None:
        self.parts = parts
        self.separator = separator
        self.n_rows = n_rows
        self._keys: list[str] | None = None

    @classmethod
    def of(cls, settings: LoggingSettings, request: Frame) -> RowKeys | None:
        """The row keys of `request` under `settings`; None when no key features are set.
        O(number of key features): no row is read here."""
        if not settings.key_features:
            return None
        n_rows = request.n_rows
        parts: list[str | Column] = []
        for name in settings.key_features:
            if name in request.configs:
                parts.append(str(request.configs[name]))
            elif name in request and n_rows:
                parts.append(request[name])
            else:
                parts.append("")
        return cls(tuple(parts), settings.key_features_separator, n_rows)

    @property
    def uniform(self) -> bool:
        """Whether every row has the same key (no part comes from a column, or one row)."""
        return self.n_rows <= 1 or all(isinstance(part, str) for part in self.parts)

    def first(self) -> str:
        """The first row's key: the event's `key`."""
        return self.separator.join(
            part if isinstance(part, str) else _key_part(part[0]) for part in self.parts
        )

    def keys(self) -> list[str]:
        """One key per row, in row order (built once, then kept)."""
        if self._keys is None:
            self._keys = self._build()
        return self._keys

    def _build(self) -> list[str]:
        if self.uniform:
            return [self.first()] * self.n_rows
        texts = [
            itertools.repeat(part, self.n_rows) if isinstance(part, str) else _key_texts(part)
            for part in self.parts
        ]
        return [self.separator.join(row) for row in zip(*texts, strict=True)]


def event_row_keys(event: PredictionEvent) -> list[str] | None:
    """The key of each row of `event`'s request; None when the event has no key."""
    if event.key is None:
        return None
    if event.row_keys is None:
        return [event.key] * event.request.n_rows
    return event.row_keys.keys()


@dataclass(slots=True)  # not frozen: see the module doc
class EncodedEvent:
    """One event encoded once for every sink: its JSON record and what routing needs."""

    fqrv: FQRV
    """The servable, for a sink's routing (Kafka's topic per contract, its `fqrv` header)."""
    key: str | None
    """The record key (Kafka's message key)."""
    timestamp_ms: int
    """When the prediction was made (Kafka's message timestamp)."""
    value: bytes
    """`event_record(event)` as compact UTF-8 JSON, without a newline: a Kafka message
    value as it is, a line of the JSON Lines files with `\\n` appended."""


def encode_record(event: PredictionEvent) -> bytes:
    """`event_record(event)` as compact UTF-8 JSON; raises if a value has no JSON form."""
    shared = event.shared_request
    if shared is None:
        request: Any = _request_json(event.request, nan_as_none=False)
    else:
        request = shared.fragment()
    record = _record(event, request, _columns(event.prediction, nan_as_none=False))
    return orjson.dumps(record, option=_NUMPY)


def encode_event(event: PredictionEvent) -> EncodedEvent:
    """`event` encoded for the sinks (see `encode_record`)."""
    return EncodedEvent(event.fqrv, event.key, event.timestamp_ms, encode_record(event))


def record_key(settings: LoggingSettings, request: Frame) -> str | None:
    """The record key: each `keyFeatures` name looked up in `configs`, then in the request's
    first row, joined with `keyFeaturesSeparator`; None when no key features are set."""
    keys = RowKeys.of(settings, request)
    return None if keys is None else keys.first()


def _key_texts(column: Column) -> list[str]:
    """`_key_part` of every cell of `column`, each the text the first row's cell gets. Only
    where Python's values read the same as numpy's (not floats: a Float32 cell keeps its
    own shortest text) are they taken from `tolist()`, which is faster."""
    if column.dtype.kind in "iubO":
        return [_key_part(value) for value in column.tolist()]
    return [_key_part(value) for value in column]


def _key_part(value: Any) -> str:
    """A cell as key text: the shortest text of its own precision (a Float32 14.96 is
    "14.96", not 14.960000038146973), bytes as base64, missing as ""."""
    if value is None or (isinstance(value, float | np.floating) and math.isnan(value)):
        return ""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, np.bool_ | bool):
        return str(bool(value)).lower()
    return str(value)


def event_record(event: PredictionEvent) -> dict[str, Any]:
    """The event as JSON-ready data in schema `SCHEMA_VERSION` (columnar features/prediction)."""
    return _record(event, _request_json(event.request), _columns(event.prediction))


def _request_json(request: Frame, *, nan_as_none: bool = True) -> dict[str, Any]:
    features = _columns(request, nan_as_none=nan_as_none)
    return {"features": features, "configs": dict(request.configs)}


def _record(event: PredictionEvent, request: Any, prediction: Any) -> dict[str, Any]:
    return {
        "schemaVersion": SCHEMA_VERSION,
        "fqrv": _fqrv_json(event.fqrv),
        "servedRequest": event.served_request,
        "timestampMS": event.timestamp_ms,
        "latencyMS": round(event.latency_ms, 3),
        "key": event.key,
        "rowKeys": event_row_keys(event),
        "request": request,
        "prediction": prediction,
    }


@functools.lru_cache(maxsize=1024)
def _fqrv_json(fqrv: FQRV) -> dict[str, Any]:
    """`encode(fqrv)`, made once per servable (shared: never mutated)."""
    encoded: dict[str, Any] = encode(fqrv)
    return encoded


def _columns(frame: Frame, *, nan_as_none: bool = True) -> dict[str, list[Any]]:
    """Each column of `frame` as a list of JSON-ready values. `nan_as_none=False` is for
    `orjson.dumps`, which writes NaN (and infinities) as null by itself: float columns are
    then taken as they are, without a look for NaN."""
    if frame.in_blocks:  # every column in a matrix: a list per block
        columns: dict[str, list[Any]] = {}
        for block in frame.blocks:
            values = _block_values(block.matrix, nan_as_none)
            columns.update(zip(block.names, values, strict=True))
        return columns
    return {name: _values(column, nan_as_none) for name, column in frame.columns.items()}


def _block_values(matrix: Column, nan_as_none: bool) -> list[list[Any]]:
    """A matrix's columns as lists, in one conversion where no cell needs a look."""
    kind = matrix.dtype.kind
    if kind in "iub" or (kind == "f" and not (nan_as_none and np.isnan(matrix).any())):
        return matrix.T.tolist()  # type: ignore[no-any-return]
    return [_values(matrix[:, j], nan_as_none) for j in range(matrix.shape[1])]


def _values(column: Column, nan_as_none: bool) -> list[Any]:
    array = np.asarray(column)
    if array.dtype.kind == "f":
        values: list[Any] = array.tolist()
        if not nan_as_none:
            return values
        for value in values:  # most columns have no NaN: looked for without a new list
            if math.isnan(value):
                return [None if math.isnan(v) else v for v in values]
        return values
    if array.dtype.kind in "iub":
        return array.tolist()  # type: ignore[no-any-return]
    return [_plain(v) for v in array.tolist()]


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, np.generic):
        return _plain(value.item())
    return value
