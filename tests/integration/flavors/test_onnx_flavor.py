"""The ONNX flavor on real graphs: the skl2onnx fixtures, the quickstart model, and small
graphs built here for the layouts a converter would not produce."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from onnx import TensorProto, helper
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import make_pipeline

from forestflow.domain.frame import Frame, TensorType
from forestflow.domain.signature import conform
from forestflow.errors import (
    CreateServableRequestInvalidError,
    FlavorUnavailable,
    InferenceRequestInvalidError,
)
from forestflow.flavors.base import LoadedModel, LoadPolicy, parse_flavor
from forestflow.flavors.onnx import OnnxFlavor

REPO = Path(__file__).parents[3]
FIXTURES = REPO / "tests" / "fixtures"
CHURN = FIXTURES / "onnx" / "churn_pipeline_named_inputs"
IRIS_ZIPMAP = FIXTURES / "onnx" / "logreg_iris_zipmap"
RF_POWERPLANT = FIXTURES / "onnx" / "rf_powerplant_single_input"
MLFLOW_GBR = FIXTURES / "mlflow" / "onnx" / "gbr_powerplant_onnx"
ENERGY_OUTPUT = REPO / "examples" / "energy_output"
POWERPLANT_FEATURES = [
    "TemperatureCelcius",
    "ExhaustVacuumHg",
    "AmbientPressureMillibar",
    "RelativeHumidity",
]


def expected(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "expected.json").read_text())


def make_frame(names: Sequence[str], rows: Sequence[Sequence[object]]) -> Frame:
    """A frame as the REST layer builds it: numbers, strings as objects, None = missing."""
    columns = {}
    for i, name in enumerate(names):
        values = [row[i] for row in rows]
        if any(isinstance(value, str) for value in values):
            columns[name] = np.array(values, dtype=object)
        else:
            columns[name] = np.array([np.nan if v is None else v for v in values])
    return Frame(columns)


def load(directory: Path, **fields: object) -> LoadedModel:
    """Decode the flavor from wire JSON, as a serve request would, and load it."""
    return parse_flavor({"ONNX": {"modelPath": "model.onnx", **fields}}).load(
        directory, LoadPolicy()
    )


def score(model: LoadedModel, frame: Frame) -> Frame:
    """What the serving layer does: conform to the signature, then predict."""
    return model.predict(conform(frame, model.signature))


def describe(model: LoadedModel) -> list[tuple[str, TensorType, bool]]:
    return [(s.name, s.type, s.accepts_missing) for s in model.signature.inputs]


def outputs(model: LoadedModel) -> list[tuple[str, TensorType]]:
    return [(s.name, s.type) for s in model.signature.outputs]


@pytest.fixture(scope="session")
def graph_dir(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, bytes], Path]:
    """Factory: a fresh artifact directory holding `model.onnx` with the given bytes."""

    def make(name: str, content: bytes) -> Path:
        directory = tmp_path_factory.mktemp(name)
        (directory / "model.onnx").write_bytes(content)
        return directory

    return make


def matrix_graph(inputs: Sequence[tuple[str, int, list[int | str | None]]]) -> bytes:
    """A graph summing its float inputs' columns: enough to exercise input layouts."""
    args = [helper.make_tensor_value_info(name, kind, shape) for name, kind, shape in inputs]
    nodes = [
        helper.make_node("ReduceSum", [name, "axes"], [f"{name}_sum"], keepdims=1)
        for name, _, _ in inputs
    ]
    nodes.append(helper.make_node("Sum", [f"{name}_sum" for name, _, _ in inputs], ["total"]))
    graph = helper.make_graph(
        nodes,
        "layout",
        args,
        [helper.make_tensor_value_info("total", inputs[0][1], [None, 1])],
        initializer=[helper.make_tensor("axes", TensorProto.INT64, [1], [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def identity_graph(shape: list[int | str | None]) -> bytes:
    """A graph whose output `scores` is its input `x`: enough to exercise output naming."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["scores"])],
        "identity",
        [helper.make_tensor_value_info("x", TensorProto.DOUBLE, shape)],
        [helper.make_tensor_value_info("scores", TensorProto.DOUBLE, shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def sklearn_graph(estimator: Any, width: int) -> bytes:
    rng = np.random.default_rng(7)
    features = rng.normal(size=(40, width))
    estimator.fit(features, features @ np.arange(1.0, width + 1))
    model = convert_sklearn(
        estimator,
        initial_types=[("input", FloatTensorType([None, width]))],
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    return model.SerializeToString()


class TestPerFeatureInputs:
    def test_signature_names_and_types_come_from_the_graph(self) -> None:
        model = load(CHURN)
        assert describe(model) == [
            ("tenure_months", TensorType.Int64, False),
            ("monthly_charges", TensorType.Float32, False),
            ("contract", TensorType.String, False),
            ("payment_method", TensorType.String, False),
        ]

    def test_classifier_outputs_label_and_one_column_per_class(self) -> None:
        assert outputs(load(CHURN)) == [
            ("label", TensorType.String),
            ("no", TensorType.Float32),
            ("yes", TensorType.Float32),
        ]

    def test_predictions_match_onnxruntime_reference(self) -> None:
        reference = expected(CHURN)
        result = score(load(CHURN), make_frame(reference["features"], reference["rows"]))
        assert list(result) == ["label", "no", "yes"]
        assert result["label"].tolist() == reference["predictions"]
        probabilities = np.column_stack([result["no"], result["yes"]])
        np.testing.assert_allclose(
            probabilities, reference["probabilities"], rtol=reference["tolerance_rel"]
        )

    def test_fields_are_matched_by_name_not_position(self) -> None:
        reference = expected(CHURN)
        names = list(reversed(reference["features"]))
        rows = [list(reversed(row)) for row in reference["rows"]]
        result = score(load(CHURN), make_frame(names, rows))
        assert result["label"].tolist() == reference["predictions"]

    def test_missing_float_is_refused_without_an_imputer(self) -> None:
        reference = expected(CHURN)
        rows = [list(row) for row in reference["rows"]]
        rows[2][1] = None
        with pytest.raises(InferenceRequestInvalidError, match="row 2") as caught:
            score(load(CHURN), make_frame(reference["features"], rows))
        assert caught.value.field == "monthly_charges"

    def test_missing_string_is_refused(self) -> None:
        reference = expected(CHURN)
        rows = [list(row) for row in reference["rows"]]
        rows[0][2] = None
        with pytest.raises(InferenceRequestInvalidError) as caught:
            score(load(CHURN), make_frame(reference["features"], rows))
        assert caught.value.field == "contract"

    def test_feature_names_that_differ_from_the_graph_are_refused(self) -> None:
        with pytest.raises(CreateServableRequestInvalidError, match="differ") as caught:
            load(CHURN, featureNames=["a", "b", "c", "d"])
        assert caught.value.field == "flavor.ONNX.featureNames"

    def test_feature_names_equal_to_the_graph_names_are_accepted(self) -> None:
        names = list(reversed(expected(CHURN)["features"]))
        model = load(CHURN, featureNames=names)
        assert model.signature.input_names == expected(CHURN)["features"]


class TestQuickstartModel:
    def test_loads_without_feature_names(self) -> None:
        model = load(ENERGY_OUTPUT)
        assert describe(model) == [(n, TensorType.Float32, True) for n in POWERPLANT_FEATURES]
        assert outputs(model) == [("prediction", TensorType.Float32)]

    def test_predicts_plant_output_and_takes_missing_values(self) -> None:
        rows = [
            [14.96, 41.76, 1024.07, 73.17],
            [30.0, 70.0, 1010.0, 60.0],
            [None, 41.0, None, 80.0],
        ]
        result = score(load(ENERGY_OUTPUT), make_frame(POWERPLANT_FEATURES, rows))
        assert result["prediction"].dtype == np.float32
        assert np.all((result["prediction"] > 420) & (result["prediction"] < 496))

    def test_is_small(self) -> None:
        assert (ENERGY_OUTPUT / "model.onnx").stat().st_size <= 50_000


class TestSingleMatrixInput:
    def test_feature_names_name_the_columns(self) -> None:
        model = load(RF_POWERPLANT, featureNames=POWERPLANT_FEATURES)
        assert describe(model) == [(n, TensorType.Float32, True) for n in POWERPLANT_FEATURES]
        assert outputs(model) == [("variable", TensorType.Float32)]

    @pytest.mark.parametrize("directory", [RF_POWERPLANT, MLFLOW_GBR])
    def test_regression_matches_reference(self, directory: Path) -> None:
        reference = expected(directory)
        predictions = reference["predictions"]
        if isinstance(predictions, dict):  # the MLflow fixture holds a DataFrame
            predictions = [row[0] for row in predictions["data"]]
        model = load(directory, featureNames=reference["features"])
        result = score(model, make_frame(reference["features"], reference["rows"]))
        np.testing.assert_allclose(result["variable"], predictions, rtol=reference["tolerance_rel"])

    def test_tree_ensemble_takes_missing_values(self) -> None:
        reference = expected(RF_POWERPLANT)
        rows = [[None, *reference["rows"][0][1:]], reference["rows"][1]]
        model = load(RF_POWERPLANT, featureNames=POWERPLANT_FEATURES)
        result = score(model, make_frame(POWERPLANT_FEATURES, rows))
        assert np.all(np.isfinite(result["variable"]))
        np.testing.assert_allclose(result["variable"][1], reference["predictions"][1], rtol=1e-6)

    def test_left_out_feature_is_missing_for_tree_ensemble(self) -> None:
        reference = expected(RF_POWERPLANT)
        rows = [row[1:] for row in reference["rows"]]
        model = load(RF_POWERPLANT, featureNames=POWERPLANT_FEATURES)
        result = score(model, make_frame(POWERPLANT_FEATURES[1:], rows))
        assert np.all(np.isfinite(result["variable"]))

    def test_wrong_number_of_feature_names_is_refused(self) -> None:
        with pytest.raises(CreateServableRequestInvalidError, match="4 columns but 3") as caught:
            load(RF_POWERPLANT, featureNames=POWERPLANT_FEATURES[:3])
        assert caught.value.field == "flavor.ONNX.featureNames"

    def test_repeated_feature_names_are_refused(self) -> None:
        with pytest.raises(CreateServableRequestInvalidError, match="repeat"):
            load(RF_POWERPLANT, featureNames=["a", "a", "b", "c"])


class TestUnnamedMatrixInput:
    def test_signature_has_no_named_inputs(self) -> None:
        assert load(RF_POWERPLANT).signature.inputs == ()

    def test_takes_request_fields_in_request_order(self) -> None:
        reference = expected(RF_POWERPLANT)
        result = score(load(RF_POWERPLANT), make_frame(["w", "x", "y", "z"], reference["rows"]))
        np.testing.assert_allclose(
            result["variable"], reference["predictions"], rtol=reference["tolerance_rel"]
        )

    def test_wrong_field_count_says_what_the_model_expects(self) -> None:
        rows = [row[:3] for row in expected(RF_POWERPLANT)["rows"]]
        with pytest.raises(InferenceRequestInvalidError, match="expects 4") as caught:
            score(load(RF_POWERPLANT), make_frame(["a", "b", "c"], rows))
        assert "featureNames" in caught.value.message

    def test_missing_value_needs_a_nan_aware_graph(self) -> None:
        rows = [list(row) for row in expected(IRIS_ZIPMAP)["rows"]]
        rows[1][3] = None
        with pytest.raises(InferenceRequestInvalidError, match="row 1") as caught:
            score(load(IRIS_ZIPMAP), make_frame(["a", "b", "c", "d"], rows))
        assert caught.value.field == "d"

    def test_non_numeric_field_is_refused(self) -> None:
        rows = [["x", 1.0, 2.0, 3.0]]
        with pytest.raises(InferenceRequestInvalidError, match="Float32") as caught:
            score(load(RF_POWERPLANT), make_frame(["a", "b", "c", "d"], rows))
        assert caught.value.field == "a"


class TestZipMapClassifier:
    def test_outputs_label_and_one_float_column_per_class_key(self) -> None:
        model = load(IRIS_ZIPMAP, featureNames=expected(IRIS_ZIPMAP)["features"])
        assert outputs(model) == [
            ("label", TensorType.Int64),
            ("0", TensorType.Float32),
            ("1", TensorType.Float32),
            ("2", TensorType.Float32),
        ]

    def test_predictions_match_onnxruntime_reference(self) -> None:
        reference = expected(IRIS_ZIPMAP)
        model = load(IRIS_ZIPMAP, featureNames=reference["features"])
        result = score(model, make_frame(reference["features"], reference["rows"]))
        assert result["label"].tolist() == reference["predictions"]
        probabilities = np.column_stack([result[str(c)] for c in reference["classes"]])
        np.testing.assert_allclose(
            probabilities, reference["probabilities"], rtol=reference["tolerance_rel"]
        )


class TestMissingValuePolicy:
    def test_imputer_in_graph_accepts_missing(
        self, graph_dir: Callable[[str, bytes], Path]
    ) -> None:
        pipeline = make_pipeline(SimpleImputer(), LinearRegression())
        directory = graph_dir("imputer", sklearn_graph(pipeline, 3))
        model = load(directory, featureNames=["a", "b", "c"])
        assert [spec.accepts_missing for spec in model.signature.inputs] == [True] * 3
        result = score(model, make_frame(["a", "b", "c"], [[1.0, None, 2.0]]))
        assert np.all(np.isfinite(result["variable"]))

    def test_plain_linear_graph_refuses_missing(
        self, graph_dir: Callable[[str, bytes], Path]
    ) -> None:
        directory = graph_dir("linear", sklearn_graph(LinearRegression(), 2))
        model = load(directory, featureNames=["a", "b"])
        assert [spec.accepts_missing for spec in model.signature.inputs] == [False, False]


class TestLayouts:
    def test_several_multi_column_inputs_are_refused(
        self, graph_dir: Callable[[str, bytes], Path]
    ) -> None:
        content = matrix_graph(
            [("x", TensorProto.FLOAT, [None, 2]), ("y", TensorProto.FLOAT, [None, 3])]
        )
        with pytest.raises(
            CreateServableRequestInvalidError, match="unsupported ONNX input layout"
        ):
            load(graph_dir("two_matrices", content))

    def test_three_dimensional_input_is_refused(
        self, graph_dir: Callable[[str, bytes], Path]
    ) -> None:
        content = matrix_graph([("image", TensorProto.FLOAT, [None, 2, 2])])
        with pytest.raises(CreateServableRequestInvalidError, match="'image'"):
            load(graph_dir("three_d", content))

    def test_unknown_width_takes_names_from_feature_names(
        self, graph_dir: Callable[[str, bytes], Path]
    ) -> None:
        content = matrix_graph([("x", TensorProto.DOUBLE, [None, "width"])])
        model = load(graph_dir("symbolic", content), featureNames=["a", "b", "c"])
        assert describe(model) == [(n, TensorType.Float64, False) for n in "abc"]
        result = score(model, make_frame(["c", "a", "b"], [[1, 2, 3], [4, 5, 6]]))
        assert result["total"].tolist() == [6.0, 15.0]

    def test_unknown_width_without_names_takes_any_field_count(
        self, graph_dir: Callable[[str, bytes], Path]
    ) -> None:
        content = matrix_graph([("x", TensorProto.DOUBLE, [None, "width"])])
        model = load(graph_dir("symbolic_unnamed", content))
        result = score(model, make_frame(["p", "q"], [[1.5, 2.5]]))
        assert result["total"].tolist() == [4.0]

    def test_single_one_column_input_is_a_named_feature(
        self, graph_dir: Callable[[str, bytes], Path]
    ) -> None:
        content = matrix_graph([("speed", TensorProto.FLOAT, [None, 1])])
        model = load(graph_dir("one_column", content))
        assert describe(model) == [("speed", TensorType.Float32, False)]

    def test_unsigned_input_is_refused(self, graph_dir: Callable[[str, bytes], Path]) -> None:
        content = matrix_graph([("pixels", TensorProto.UINT8, [None, 4])])
        with pytest.raises(CreateServableRequestInvalidError, match=r"tensor\(uint8\)"):
            load(graph_dir("unsigned", content), featureNames=["a", "b", "c", "d"])


class TestOutputNaming:
    def test_multi_column_output_gives_numbered_columns(
        self, graph_dir: Callable[[str, bytes], Path]
    ) -> None:
        model = load(graph_dir("numbered", identity_graph([None, 3])), featureNames=["a", "b", "c"])
        assert outputs(model) == [(f"scores_{i}", TensorType.Float64) for i in range(3)]
        result = score(model, make_frame(["a", "b", "c"], [[1, 2, 3]]))
        assert {name: column.tolist() for name, column in result.columns.items()} == {
            "scores_0": [1.0],
            "scores_1": [2.0],
            "scores_2": [3.0],
        }

    def test_output_of_unknown_width_is_numbered_at_run_time(
        self, graph_dir: Callable[[str, bytes], Path]
    ) -> None:
        model = load(graph_dir("dynamic", identity_graph([None, "k"])))
        result = score(model, make_frame(["p", "q"], [[1.5, 2.5]]))
        assert list(result) == ["scores_0", "scores_1"]
        assert result["scores_1"].tolist() == [2.5]


class TestLoadErrors:
    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(CreateServableRequestInvalidError, match="not found") as caught:
            load(tmp_path)
        assert caught.value.field == "flavor.ONNX.modelPath"

    def test_path_escaping_the_directory(self, tmp_path: Path) -> None:
        shutil.copy(RF_POWERPLANT / "model.onnx", tmp_path / "outside.onnx")
        (tmp_path / "artifact").mkdir()
        with pytest.raises(CreateServableRequestInvalidError, match="outside"):
            load(tmp_path / "artifact", modelPath="../outside.onnx")

    def test_directory_instead_of_file(self, tmp_path: Path) -> None:
        (tmp_path / "model.onnx").mkdir()
        with pytest.raises(CreateServableRequestInvalidError, match="directory"):
            load(tmp_path)

    @pytest.mark.parametrize(
        "content",
        [
            np.random.default_rng(3).bytes(2048),
            (RF_POWERPLANT / "model.onnx").read_bytes()[:3000],
            b"this is not a model",
            b"",
        ],
        ids=["random-bytes", "truncated", "text", "empty"],
    )
    def test_corrupt_file(self, content: bytes, graph_dir: Callable[[str, bytes], Path]) -> None:
        with pytest.raises(CreateServableRequestInvalidError) as caught:
            load(graph_dir("corrupt", content))
        message = caught.value.message
        assert message.startswith("'model.onnx' is not a valid ONNX model: ")
        assert "\n" not in message
        assert str(Path.cwd()) not in message

    def test_missing_runtime_names_the_extra(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes the import fail
        with pytest.raises(FlavorUnavailable, match=r"forestflow\[onnx\]") as caught:
            load(RF_POWERPLANT)
        assert "onnxruntime" in caught.value.message


class TestFlavorValue:
    def test_decodes_camel_and_snake_case(self) -> None:
        camel = parse_flavor({"ONNX": {"modelPath": "m.onnx", "featureNames": ["a"]}})
        snake = parse_flavor({"type": "ONNX", "model_path": "m.onnx", "feature_names": ["a"]})
        assert camel == snake == OnnxFlavor("m.onnx", ("a",))

    def test_closed_model_does_not_predict(self) -> None:
        model = load(CHURN)
        model.close()
        with pytest.raises(RuntimeError, match="closed"):
            model.predict(make_frame(["tenure_months"], [[1]]))
