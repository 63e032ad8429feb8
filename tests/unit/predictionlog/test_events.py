from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import orjson
import pytest

from forestflow.domain.frame import Block, Frame
from forestflow.domain.settings import LoggingSettings
from forestflow.predictionlog.events import (
    PredictionEvent,
    RowKeys,
    SharedRequest,
    encode_record,
    event_record,
    event_row_keys,
    record_key,
)
from tests.builders import make_fqrv, make_frame


def settings(*names: str, separator: str = ".") -> LoggingSettings:
    return LoggingSettings(key_features=names, key_features_separator=separator)


def row_keys(request: Frame, *names: str, separator: str = ".") -> list[str]:
    keys = RowKeys.of(settings(*names, separator=separator), request)
    assert keys is not None
    return keys.keys()


def event_of(request: Frame, keys: RowKeys | None, key: str | None) -> PredictionEvent:
    return PredictionEvent(
        fqrv=make_fqrv("v1"),
        served_request=True,
        timestamp_ms=0,
        request=request,
        prediction=make_frame(prediction=[0.0] * request.n_rows),
        latency_ms=1.0,
        key=key,
        row_keys=keys,
    )


class TestTheFirstRowsKey:
    """A one-row request's key, and every event's `key`, are what they always were."""

    @pytest.mark.parametrize(
        ("column", "text"),
        [
            (np.array([14.96], dtype=np.float32), "14.96"),
            (np.array([14.96], dtype=np.float64), "14.96"),
            (np.array([7], dtype=np.int64), "7"),
            (np.array([True]), "true"),
            (np.array([b"\x00\xff"], dtype=object), "AP8="),
            (np.array(["north"], dtype=object), "north"),
            (np.array([None], dtype=object), ""),
            (np.array([math.nan]), ""),
        ],
    )
    def test_a_cell_is_written_as_its_own_shortest_text(self, column: Any, text: str) -> None:
        request = Frame({"f": column}, {"customer": "c-17"})

        assert record_key(settings("customer", "f", separator="|"), request) == f"c-17|{text}"
        assert row_keys(request, "customer", "f", separator="|") == [f"c-17|{text}"]

    def test_configs_come_before_features_and_absent_names_are_empty(self) -> None:
        request = make_frame({"order": "from-configs"}, order=["from-row"], x=[1.0])

        assert record_key(settings("order", "nowhere", "x"), request) == "from-configs..1.0"

    def test_no_key_features_no_key(self) -> None:
        assert record_key(settings(), make_frame(x=[1.0])) is None
        assert RowKeys.of(settings(), make_frame(x=[1.0])) is None


class TestEachRowsKey:
    def test_each_row_takes_its_own_values(self) -> None:
        request = Frame(
            {
                "t": np.array([14.96, 25.18, math.nan], dtype=np.float32),
                "n": np.array([1, 2, 3]),
                "b": np.array([b"a", None, b"c"], dtype=object),
            },
            {"customer": "c-17"},
        )

        keys = row_keys(request, "customer", "t", "n", "b", separator="|")

        assert keys == ["c-17|14.96|1|YQ==", "c-17|25.18|2|", "c-17||3|Yw=="]
        assert keys[0] == record_key(settings("customer", "t", "n", "b", separator="|"), request)

    def test_keys_from_configs_alone_are_the_same_on_every_row(self) -> None:
        request = make_frame({"order": "o-1"}, x=[1.0, 2.0, 3.0])

        keys = RowKeys.of(settings("order"), request)

        assert keys is not None
        assert keys.uniform
        assert keys.keys() == ["o-1", "o-1", "o-1"]

    def test_a_one_row_request_is_uniform(self) -> None:
        keys = RowKeys.of(settings("x"), make_frame(x=[1.0]))

        assert keys is not None
        assert keys.uniform
        assert keys.keys() == ["1.0"]

    def test_the_keys_are_built_once(self) -> None:
        keys = RowKeys.of(settings("x"), make_frame(x=[1.0, 2.0]))

        assert keys is not None
        assert not keys.uniform
        assert keys.keys() is keys.keys()

    def test_only_the_key_columns_are_held(self) -> None:
        request = make_frame(x=[1.0, 2.0], order=["a", "b"])

        keys = RowKeys.of(settings("order", "absent"), request)

        assert keys is not None
        assert len(keys.parts) == 2
        assert keys.parts[0] is request["order"]
        assert keys.parts[1] == ""


class TestTheRecord:
    def test_row_keys_are_in_the_record_beside_the_key(self) -> None:
        request = make_frame(order=["o-1", "o-2"])
        keys = RowKeys.of(settings("order"), request)

        record = event_record(event_of(request, keys, "o-1"))

        assert (record["key"], record["rowKeys"]) == ("o-1", ["o-1", "o-2"])

    def test_without_row_keys_every_row_has_the_key(self) -> None:
        event = event_of(make_frame(x=[1.0, 2.0]), None, "k")

        assert event_row_keys(event) == ["k", "k"]
        assert event_record(event)["rowKeys"] == ["k", "k"]

    def test_no_key_no_row_keys(self) -> None:
        assert event_record(event_of(make_frame(x=[1.0]), None, None))["rowKeys"] is None


class TestFeaturesHeldInMatrices:
    @pytest.mark.parametrize(
        "matrix",
        [
            np.array([[1.5, 2.0], [3.25, -4.0]]),
            np.array([[1.5, math.nan], [math.nan, -4.0]], dtype=np.float32),
            np.array([[1, 2], [3, 4]], dtype=np.int32),
            np.array([[True, False], [False, True]]),
            np.array([["a", None], ["b", "c"]], dtype=object),
        ],
    )
    def test_are_written_as_the_same_columns(self, matrix: np.ndarray) -> None:
        names = ("x", "y")
        blocks = Frame.of_blocks((Block(names, matrix), Block(("z",), matrix[:, :1])))
        columns = Frame(
            {"x": matrix[:, 0].copy(), "y": matrix[:, 1].copy(), "z": matrix[:, 0].copy()}
        )

        from_blocks = event_record(event_of(blocks, None, None))["request"]["features"]
        from_columns = event_record(event_of(columns, None, None))["request"]["features"]

        assert list(from_blocks) == ["x", "y", "z"]
        assert from_blocks == from_columns
        assert all(
            v is None or not (isinstance(v, float) and math.isnan(v))
            for values in from_blocks.values()
            for v in values
        )

    @pytest.mark.parametrize(
        "matrix",
        [
            np.array([[1.5, math.inf], [math.nan, -math.inf]]),
            np.array([[1.5, math.nan], [math.nan, -4.0]], dtype=np.float32),
            np.array([[1, 2], [3, 4]], dtype=np.int32),
            np.array([[True, False], [False, True]]),
            np.array([["a", None], [b"\x00", "c"]], dtype=object),
        ],
    )
    def test_are_encoded_byte_for_byte_as_the_record_reads(self, matrix: np.ndarray) -> None:
        # the encoder leaves NaN and infinities to orjson (null), where the record has None
        one_block = Frame.of_blocks((Block(("x", "y"), matrix),))
        two_blocks = Frame.of_blocks((Block(("x",), matrix[:, :1]), Block(("y",), matrix[:, 1:])))
        columns = Frame({"x": matrix[:, 0].copy(), "y": matrix[:, 1].copy()})
        for request in (one_block, two_blocks, columns):
            event = replace(event_of(request, None, None), prediction=Frame({"p": matrix[:, 0]}))
            expected = orjson.dumps(event_record(event), option=orjson.OPT_SERIALIZE_NUMPY)
            assert encode_record(event) == expected
            shared = replace(event, shared_request=SharedRequest(request))
            assert encode_record(shared) == expected


class TestARequestSharedByItsEvents:
    """The served event and each shadow's carry one `SharedRequest`: the request's part of
    the record is encoded once, and every record reads as if encoded alone."""

    def test_each_record_is_what_its_event_encodes_to_alone(self) -> None:
        request = Frame.of_blocks(
            (Block(("x", "y"), np.array([[1.5, math.nan], [3.25, -4.0]])),), {"region": "north"}
        )
        shared = SharedRequest(request)
        events = [
            replace(event_of(request, None, None), fqrv=make_fqrv(release), shared_request=shared)
            for release in ("v1", "v2", "v3")
        ]

        for event in events:
            alone = replace(event, shared_request=None)
            assert orjson.loads(encode_record(event)) == orjson.loads(encode_record(alone))
            assert orjson.loads(encode_record(event)) == event_record(alone)

    def test_the_request_is_encoded_once(self) -> None:
        shared = SharedRequest(make_frame(x=[1.0, 2.0]))
        assert shared.fragment() is shared.fragment()


@pytest.mark.parametrize(
    ("values", "written"),
    [([1.5, 2.0], [1.5, 2.0]), ([1.5, math.nan, 2.0], [1.5, None, 2.0]), ([math.nan], [None])],
)
def test_a_missing_prediction_is_written_as_null(
    values: list[float], written: list[float | None]
) -> None:
    request = make_frame(x=[1.0] * len(values))
    event = replace(event_of(request, None, None), prediction=Frame({"y": np.array(values)}))
    assert event_record(event)["prediction"] == {"y": written}
    assert orjson.loads(encode_record(event))["prediction"] == {"y": written}
