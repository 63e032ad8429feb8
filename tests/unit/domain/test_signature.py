from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from forestflow.domain.frame import Frame, TensorType
from forestflow.domain.signature import FeatureSpec, ModelSignature, conform
from forestflow.errors import InferenceRequestInvalidError
from tests.builders import make_frame

X = FeatureSpec("x", TensorType.Float64)
N = FeatureSpec("n", TensorType.Int32)
NAME = FeatureSpec("name", TensorType.String)


def signature(*inputs: FeatureSpec) -> ModelSignature:
    return ModelSignature(inputs=inputs, outputs=(FeatureSpec("y", TensorType.Float64),))


def refused(
    frame: Frame, sig: ModelSignature, field: str, match: str
) -> InferenceRequestInvalidError:
    with pytest.raises(InferenceRequestInvalidError, match=match) as caught:
        conform(frame, sig)
    assert caught.value.field == field
    return caught.value


class TestModelSignature:
    def test_input_names_in_model_order(self) -> None:
        assert signature(N, X, NAME).input_names == ["n", "x", "name"]

    def test_feature_spec_defaults(self) -> None:
        assert X.shape == (-1,)
        assert (X.description, X.accepts_missing, X.domain) == ("", False, None)


class TestMatchingByName:
    def test_request_order_is_irrelevant(self) -> None:
        frame = make_frame(name=["a", "b"], n=[1, 2], x=[0.5, 1.5])
        result = conform(frame, signature(X, N, NAME))
        assert result.names == ["x", "n", "name"]
        assert result["x"].tolist() == [0.5, 1.5]
        assert result["n"].tolist() == [1, 2]
        assert result["name"].tolist() == ["a", "b"]

    def test_extra_fields_are_ignored(self) -> None:
        frame = make_frame(configs={"reqid": "r1"}, x=[1.0], extra=["key-123"], more=[7])
        result = conform(frame, signature(X))
        assert result.names == ["x"]
        assert result.configs == {"reqid": "r1"}

    def test_empty_signature_is_passthrough(self) -> None:
        frame = make_frame(b=[1], a=["z"])
        assert conform(frame, ModelSignature((), ())) is frame

    @pytest.mark.parametrize("frame", [Frame({}), make_frame(x=[])])
    def test_no_rows_is_an_error(self, frame: Frame) -> None:
        refused(frame, signature(X), "datum", "no rows")

    def test_no_rows_is_an_error_even_without_a_signature(self) -> None:
        refused(Frame({}), ModelSignature((), ()), "datum", "no rows")


class TestNumericCasting:
    @pytest.mark.parametrize(
        ("values", "spec_type", "dtype"),
        [
            ([1, 2], TensorType.Float32, np.float32),
            ([1, 2], TensorType.Float64, np.float64),
            ([1.0, -2.0], TensorType.Int8, np.int8),
            ([1.0, 2.0], TensorType.Int64, np.int64),
            ([127, -128], TensorType.Int8, np.int8),
            ([1.5, 2.5], TensorType.Float16, np.float16),
        ],
    )
    def test_numbers_are_cast_to_the_input_type(
        self, values: list[float], spec_type: TensorType, dtype: type
    ) -> None:
        result = conform(make_frame(v=values), signature(FeatureSpec("v", spec_type)))
        assert result["v"].dtype == np.dtype(dtype)
        assert result["v"].tolist() == values

    def test_int32_request_column_to_int16(self) -> None:
        frame = Frame({"v": np.array([3, 4], dtype=np.int32)})
        assert conform(frame, signature(FeatureSpec("v", TensorType.Int16)))["v"].dtype == np.int16

    def test_fractional_to_int_is_refused(self) -> None:
        refused(make_frame(n=[1.0, 2.5]), signature(N), "n", "Int32 values, got fractional numbers")

    @pytest.mark.parametrize(
        ("values", "spec_type"),
        [
            ([300], TensorType.Int8),
            ([-129], TensorType.Int8),
            ([2**31], TensorType.Int32),
            ([1e20], TensorType.Int64),
            ([2.0**63], TensorType.Int64),
        ],
    )
    def test_integers_out_of_range_are_refused(
        self, values: list[float], spec_type: TensorType
    ) -> None:
        # numpy would wrap them silently (300 → 44 for Int8)
        refused(make_frame(v=values), signature(FeatureSpec("v", spec_type)), "v", "outside")

    def test_unsigned_out_of_range(self) -> None:
        frame = Frame({"v": np.array([2**64 - 1], dtype=np.uint64)})
        refused(frame, signature(FeatureSpec("v", TensorType.Int64)), "v", "outside")

    @pytest.mark.parametrize("value", [math.inf, -math.inf])
    def test_infinite_to_int_is_refused(self, value: float) -> None:
        refused(make_frame(n=[1.0, value]), signature(N), "n", "infinite")

    def test_float_overflow_is_refused(self) -> None:
        refused(
            make_frame(v=[1.0, 1e300]),
            signature(FeatureSpec("v", TensorType.Float32)),
            "v",
            "out of its range",
        )
        refused(
            make_frame(v=[70_000]),
            signature(FeatureSpec("v", TensorType.Float16)),
            "v",
            "out of its range",
        )

    def test_infinity_stays_infinity(self) -> None:
        result = conform(
            make_frame(v=[math.inf, 1.0]), signature(FeatureSpec("v", TensorType.Float32))
        )
        assert result["v"].tolist() == [math.inf, 1.0]

    def test_strings_to_numeric_are_refused_naming_the_field(self) -> None:
        error = refused(
            make_frame(x=["1.5"]), signature(X), "x", "expects Float64 values, got String"
        )
        assert error.describe().startswith("x: ")

    def test_bool_to_numeric_is_refused(self) -> None:
        refused(make_frame(x=[True, False]), signature(X), "x", "got Bool")

    def test_numbers_to_string_are_refused(self) -> None:
        refused(
            make_frame(name=[1, 2]), signature(NAME), "name", "expects String values, got Int64"
        )

    def test_bools(self) -> None:
        spec = FeatureSpec("b", TensorType.Bool)
        assert conform(make_frame(b=[True, False]), signature(spec))["b"].tolist() == [True, False]
        refused(make_frame(b=["yes"]), signature(spec), "b", "expects Bool values, got String")


class TestMissingValues:
    def test_null_column_accepted_when_the_input_takes_missing(self) -> None:
        result = conform(
            make_frame(x=[None, None]), signature(dataclasses.replace(X, accepts_missing=True))
        )
        assert result["x"].dtype == np.float64
        assert np.isnan(result["x"]).all()

    def test_null_column_refused_otherwise(self) -> None:
        refused(make_frame(x=[None]), signature(X), "x", "missing value in row 0")

    def test_nan_in_a_float_column(self) -> None:
        frame = make_frame(x=[1.0, math.nan])
        refused(frame, signature(X), "x", "missing value in row 1")
        result = conform(frame, signature(dataclasses.replace(X, accepts_missing=True)))
        assert result["x"][0] == 1.0
        assert math.isnan(result["x"][1])

    def test_nan_for_an_integer_input(self) -> None:
        frame = make_frame(n=[1.0, math.nan])
        refused(frame, signature(N), "n", "missing value in row 1")
        result = conform(frame, signature(dataclasses.replace(N, accepts_missing=True)))
        assert result["n"].dtype.kind == "f"  # NaN stays: an integer input that takes missing
        assert result["n"][0] == 1.0
        assert math.isnan(result["n"][1])

    def test_all_nan_for_an_integer_input_that_takes_missing(self) -> None:
        result = conform(
            make_frame(n=[math.nan]), signature(dataclasses.replace(N, accepts_missing=True))
        )
        assert math.isnan(result["n"][0])

    def test_fractional_beside_nan_is_still_refused(self) -> None:
        refused(
            make_frame(n=[1.5, math.nan]),
            signature(dataclasses.replace(N, accepts_missing=True)),
            "n",
            "fractional",
        )

    def test_null_in_a_string_column(self) -> None:
        frame = make_frame(name=["a", None])
        refused(frame, signature(NAME), "name", "missing value in row 1")
        result = conform(frame, signature(dataclasses.replace(NAME, accepts_missing=True)))
        assert result["name"].tolist() == ["a", None]

    def test_null_string_column(self) -> None:
        result = conform(
            make_frame(name=[None]), signature(dataclasses.replace(NAME, accepts_missing=True))
        )
        assert result["name"].dtype == object
        assert result["name"].tolist() == [None]

    @pytest.mark.parametrize(
        ("spec", "dtype"),
        [
            (FeatureSpec("f", TensorType.Float64, accepts_missing=True), np.float64),
            (FeatureSpec("f", TensorType.Float32, accepts_missing=True), np.float32),
            (FeatureSpec("f", TensorType.Int32, accepts_missing=True), np.float64),
        ],
    )
    def test_absent_numeric_feature_is_nan_when_the_input_takes_missing(
        self, spec: FeatureSpec, dtype: type
    ) -> None:
        result = conform(make_frame(x=[1.0, 2.0]), signature(X, spec))
        assert result.names == ["x", "f"]
        assert result["f"].dtype == np.dtype(dtype)
        assert np.isnan(result["f"]).tolist() == [True, True]

    def test_absent_string_feature_is_none_when_the_input_takes_missing(self) -> None:
        result = conform(
            make_frame(x=[1.0, 2.0]), signature(X, dataclasses.replace(NAME, accepts_missing=True))
        )
        assert result["name"].dtype == object
        assert result["name"].tolist() == [None, None]

    def test_absent_feature_refused_otherwise(self) -> None:
        error = refused(make_frame(x=[1.0]), signature(X, N), "n", "missing feature")
        assert "'n'" in error.message
        assert "unknown fields" not in error.message


class TestMisspeltNames:
    def test_absent_input_beside_an_unknown_field_is_an_error(self) -> None:
        # "nn" is most likely "n" misspelt: taking "n" as missing would silently degrade answers
        sig = signature(X, dataclasses.replace(N, accepts_missing=True))
        error = refused(make_frame(x=[1.0], nn=[3]), sig, "n", "check the spelling")
        assert "'n'" in error.message
        assert "'nn'" in error.message

    def test_missing_required_input_mentions_the_unknown_fields(self) -> None:
        error = refused(make_frame(x=[1.0], nn=[3]), signature(X, N), "n", "missing feature")
        assert "unknown fields 'nn'" in error.message

    def test_no_known_field_at_all(self) -> None:
        sig = signature(
            dataclasses.replace(X, accepts_missing=True),
            dataclasses.replace(N, accepts_missing=True),
        )
        error = refused(make_frame(a=[1.0], b=[2.0]), sig, "x", "none of the request's fields")
        assert "'a', 'b'" in error.message
        assert "'x', 'n'" in error.message

    def test_extra_fields_are_fine_when_nothing_is_absent(self) -> None:
        result = conform(make_frame(x=[1.0], nn=[3], n=[4]), signature(X, N))
        assert result.names == ["x", "n"]
