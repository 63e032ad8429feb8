from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from forestflow.domain.frame import Column, Frame, TensorType

FLOATS = {TensorType.Float16, TensorType.Float32, TensorType.Float64}
INTEGERS = {TensorType.Int8, TensorType.Int16, TensorType.Int32, TensorType.Int64}


class TestTensorType:
    def test_the_spec_types(self) -> None:
        assert [t.value for t in TensorType] == [
            *("Float16", "Float32", "Float64"),
            *("Int8", "Int16", "Int32", "Int64"),
            *("String", "Bool", "Bytes"),
        ]

    @pytest.mark.parametrize("tensor_type", list(TensorType))
    def test_kinds(self, tensor_type: TensorType) -> None:
        assert tensor_type.is_float is (tensor_type in FLOATS)
        assert tensor_type.is_integer is (tensor_type in INTEGERS)
        assert tensor_type.is_numeric is (tensor_type in FLOATS | INTEGERS)

    @pytest.mark.parametrize(
        ("tensor_type", "dtype"),
        [
            (TensorType.Float16, np.float16),
            (TensorType.Float32, np.float32),
            (TensorType.Float64, np.float64),
            (TensorType.Int8, np.int8),
            (TensorType.Int16, np.int16),
            (TensorType.Int32, np.int32),
            (TensorType.Int64, np.int64),
            (TensorType.String, object),
            (TensorType.Bool, np.bool_),
            (TensorType.Bytes, object),
        ],
    )
    def test_dtype(self, tensor_type: TensorType, dtype: type) -> None:
        assert tensor_type.dtype == np.dtype(dtype)

    @pytest.mark.parametrize(
        "tensor_type", [t for t in TensorType if t.is_numeric or t is TensorType.Bool]
    )
    def test_of_column_inverts_dtype(self, tensor_type: TensorType) -> None:
        assert TensorType.of_column(np.zeros(2, dtype=tensor_type.dtype)) is tensor_type

    @pytest.mark.parametrize(
        ("column", "expected"),
        [
            (np.array([1, 2], dtype=np.uint8), TensorType.Int8),
            (np.array([1, 2], dtype=np.uint64), TensorType.Int64),
            (np.array([b"a"], dtype="S1"), TensorType.Bytes),
            (np.array(["a", "b"]), TensorType.String),
            (np.array(["a", None], dtype=object), TensorType.String),
            (np.array([None, True], dtype=object), TensorType.Bool),
            (np.array([np.True_], dtype=object), TensorType.Bool),
            (np.array([None, b"\x00"], dtype=object), TensorType.Bytes),
            (np.array([None, None], dtype=object), TensorType.String),
            (np.array([], dtype=object), TensorType.String),
        ],
    )
    def test_of_column(self, column: Column, expected: TensorType) -> None:
        assert TensorType.of_column(column) is expected


class TestFrame:
    FRAME = Frame(
        {"x": np.array([1.5, math.nan]), "name": np.array(["a", None], dtype=object)},
        {"reqid": "r1"},
    )

    def test_columns_in_order(self) -> None:
        assert self.FRAME.names == ["x", "name"]
        assert list(self.FRAME) == ["x", "name"]

    def test_lookup(self) -> None:
        assert "x" in self.FRAME
        assert "y" not in self.FRAME
        assert self.FRAME["name"].tolist() == ["a", None]
        with pytest.raises(KeyError):
            self.FRAME["y"]

    def test_n_rows(self) -> None:
        assert self.FRAME.n_rows == 2
        assert Frame({}).n_rows == 0
        assert Frame({"x": np.array([])}).n_rows == 0

    def test_configs(self) -> None:
        assert self.FRAME.configs == {"reqid": "r1"}
        assert Frame({}).configs == {}

    def test_columns_must_have_equal_length(self) -> None:
        with pytest.raises(ValueError, match=r"differ in length: \[1, 2\]"):
            Frame({"a": np.array([1]), "b": np.array([1, 2])})

    def test_replace_revalidates(self) -> None:
        with pytest.raises(ValueError, match="differ in length"):
            dataclasses.replace(self.FRAME, columns={"a": np.array([1]), "b": np.array([])})

    def test_row_value_gives_plain_python_values(self) -> None:
        frame = Frame(
            {
                "f": np.array([1.5, math.nan], dtype=np.float32),
                "i": np.array([7, 8], dtype=np.int16),
                "b": np.array([True, False]),
                "s": np.array(["a", None], dtype=object),
            }
        )
        assert frame.row_value("f", 0) == 1.5
        assert type(frame.row_value("f", 0)) is float
        assert frame.row_value("f", 1) is None
        assert frame.row_value("i", 1) == 8
        assert type(frame.row_value("i", 1)) is int
        assert frame.row_value("b", 0) is True
        assert frame.row_value("s", 0) == "a"
        assert frame.row_value("s", 1) is None

    def test_row_value_nan_in_an_object_column(self) -> None:
        frame = Frame({"o": np.array([math.nan, 2.0], dtype=object)})
        assert frame.row_value("o", 0) is None
        assert frame.row_value("o", 1) == 2.0
