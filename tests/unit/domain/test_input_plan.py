"""The matrix path (blocks parsed per schema group, conformed by a cached plan) decides
exactly as the column-by-column path: same columns, types and values, or the same error
naming the same field."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from forestflow.api.rest.converters import _column, parse_inference_request
from forestflow.domain.frame import Block, Frame, TensorType
from forestflow.domain.signature import FeatureSpec, ModelSignature, conform
from forestflow.errors import ForestFlowError
from forestflow.serving.batching import split, stack

NAMES = ["a", "b", "c", "d"]


def signature(*specs: tuple[str, TensorType, bool]) -> ModelSignature:
    inputs = tuple(FeatureSpec(n, t, accepts_missing=missing) for n, t, missing in specs)
    return ModelSignature(inputs=inputs, outputs=())


F32, F64, I64 = TensorType.Float32, TensorType.Float64, TensorType.Int64
SIGNATURES = {
    "float32, no missing": signature(*[(n, F32, False) for n in NAMES]),
    "float64, missing": signature(*[(n, F64, True) for n in NAMES]),
    "float32 subset reordered": signature(("d", F32, False), ("b", F32, True), ("a", F32, False)),
    "float16": signature(*[(n, TensorType.Float16, True) for n in NAMES]),
    "mixed types": signature(("a", F32, False), ("b", I64, False), ("c", F64, True)),
}


def group_body(rows: list[list[Any]], tensor_type: str = "Float64") -> dict[str, Any]:
    return {
        "schema": [{"type": tensor_type, "fields": NAMES}],
        "datum": [{"tensors": [{tensor_type: {"data": row}}]} for row in rows],
    }


def split_body(rows: list[list[Any]], first: str, second: str) -> dict[str, Any]:
    return {
        "schema": [
            {"type": first, "fields": ["c", "a"]},
            {"type": second, "fields": ["d", "b", "extra"]},
        ],
        "datum": [
            {"tensors": [{first: {"data": [r[2], r[0]]}}, {second: {"data": [r[3], r[1], 0]}}]}
            for r in rows
        ],
    }


BODIES = {
    "floats": group_body([[1.5, 2.0, -3.25, 4.0], [0.1, 0.2, 0.3, 0.4]]),
    "integers as Float64": group_body([[1, 2, 3, 4]]),
    "a null": group_body([[1.5, None, 3.0, 4.0]]),
    "all null": group_body([[None, None, None, None]]),
    "beyond float32": group_body([[1e39, 2.0, 3.0, 4.0]]),
    "beyond float16": group_body([[70000.0, 2.0, 3.0, 4.0]]),
    "Int64 group": group_body([[1, -2, 3, 2**53 + 1]], "Int64"),
    "Int8 group": group_body([[1, -2, 3, 127]], "Int8"),
    "Float32 group": group_body([[1.1, 2.2, 3.3, 4.4]], "Float32"),
    "two groups": split_body([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]], "Float64", "Float32"),
    "two groups with a null": split_body([[1.0, None, 3.0, 4.0]], "Float32", "Float64"),
    "float and int groups": split_body([[1.0, 2, 3.0, 4]], "Float64", "Int32"),
    "one field left out": {
        "schema": [{"type": "Float64", "fields": ["a", "b", "c"]}],
        "datum": [{"tensors": [{"Float64": {"data": [1.0, 2.0, 3.0]}}]}],
    },
}


def without_blocks(frame: Frame) -> Frame:
    """The same frame as plain columns: what the column-by-column path sees."""
    return Frame({name: np.array(frame[name]) for name in frame.names}, frame.configs)


def outcome(frame: Frame, model: ModelSignature) -> Any:
    try:
        conformed = conform(frame, model)
    except ForestFlowError as error:
        return ("error", type(error).__name__, error.describe(), error.field)
    return [(name, conformed[name].dtype.str, conformed[name].tolist()) for name in conformed]


@pytest.mark.parametrize(
    ("body_name", "signature_name"), list(itertools.product(BODIES, SIGNATURES))
)
def test_blocks_conform_as_columns_do(body_name: str, signature_name: str) -> None:
    frame = parse_inference_request(BODIES[body_name])
    model = SIGNATURES[signature_name]
    assert frame.blocks, "the parser should have made blocks"
    with np.errstate(invalid="ignore"):
        fast, reference = outcome(frame, model), outcome(without_blocks(frame), model)
    # NaN != NaN: compare the text of the lists, which spells NaN alike
    assert repr(fast) == repr(reference)


def test_the_plan_is_used_for_one_float_block() -> None:
    frame = parse_inference_request(BODIES["floats"])
    conformed = conform(frame, SIGNATURES["float32, no missing"])
    (block,) = conformed.blocks
    assert block.names == tuple(NAMES)
    assert block.matrix.dtype == np.float32
    assert block.matrix.shape == (2, 4)


@pytest.mark.parametrize(
    ("tensor_type", "values"),
    [
        ("Float64", [1.5, None, 3, -0.0]),
        ("Float32", [1.5, None, 3, 3.4e38]),
        ("Float16", [1.5, None, 3, 65504.0]),
        ("Int64", [1, -(2**63), 2**63 - 1, 0]),
        ("Int16", [1, -(2**15), 2**15 - 1, 0]),
        ("Bool", [True, False, True, True]),
    ],
)
def test_a_block_holds_what_the_columns_path_makes(tensor_type: str, values: list[Any]) -> None:
    frame = parse_inference_request(group_body([values, values], tensor_type))
    assert frame.blocks
    kind = TensorType(tensor_type)
    for f, name in enumerate(NAMES):
        expected = _column([values[f], values[f]], kind, name)
        assert frame[name].dtype == expected.dtype, name
        np.testing.assert_array_equal(frame[name], expected)


@pytest.mark.parametrize(
    "values",
    [[1.5, "x", 3.0, 4.0], [True, 2.0, 3.0, 4.0], [1.5, [1], 3.0, 4.0], [10**400, 2.0, 3.0, 4.0]],
)
def test_values_the_block_path_cannot_take_get_the_columns_path_error(values: list[Any]) -> None:
    with pytest.raises(ForestFlowError) as raised:
        parse_inference_request(group_body([values]))
    assert raised.value.field == "b" if values[1] in ("x", [1]) else raised.value.field == "a"


def test_stacking_blocks_keeps_rows_in_order_and_split_gives_them_back() -> None:
    frames = [
        Frame.of_blocks((Block(("a", "b"), np.array([[i, i + 0.5]] * (i + 1))),)) for i in range(3)
    ]
    stacked = stack(frames)
    assert stacked.blocks[0].matrix.shape == (6, 2)
    assert stacked["a"].tolist() == [0, 1, 1, 2, 2, 2]
    parts = split(stacked, [1, 2, 3])
    assert [part["b"].tolist() for part in parts] == [[0.5], [1.5, 1.5], [2.5, 2.5, 2.5]]


def test_frames_of_different_blocks_do_not_share_a_layout() -> None:
    one = Frame.of_blocks((Block(("a", "b"), np.zeros((1, 2))),))
    other = Frame.of_blocks((Block(("b", "a"), np.zeros((1, 2))),))
    narrower = Frame.of_blocks((Block(("a", "b"), np.zeros((1, 2), dtype=np.float32)),))
    assert len({one.layout, other.layout, narrower.layout}) == 3
    assert Frame({"a": np.zeros(1), "b": np.zeros(1)}).layout != one.layout
