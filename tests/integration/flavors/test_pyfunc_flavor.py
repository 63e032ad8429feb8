"""The PyFunc flavor on real MLflow python_function models: the custom ensemble fixture (made
by mlflow 3.17.2) and small `PythonModel`s saved here with `mlflow.pyfunc.save_model`, each
signature shape the flavor handles, and every shape of result a model can return. Loading
runs the model's code, so it is refused unless the load policy allows unsafe formats."""

from __future__ import annotations

import json
import os
import shutil
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from forestflow.domain.frame import Frame, TensorType
from forestflow.domain.signature import conform
from forestflow.errors import (
    CreateServableRequestInvalidError,
    FlavorUnavailable,
    InferenceRequestInvalidError,
)
from forestflow.flavors.base import LoadedModel, LoadPolicy, parse_flavor
from forestflow.flavors.pyfunc import PyFuncFlavor, PyFuncModel

with warnings.catch_warnings():
    # mlflow warns when imported, about type hints of its own GenAI classes: not ours to fix
    warnings.filterwarnings("ignore", message=".*AnyType", category=UserWarning)
    import mlflow.pyfunc
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ColSpec, Schema, TensorSpec

REPO = Path(__file__).parents[3]
ENSEMBLE = REPO / "tests" / "fixtures" / "mlflow" / "pyfunc" / "custom_powerplant_ensemble"
FIELD = "flavor.PyFunc.modelPath"
# These tests' own models are trusted; TestSafeLoading checks what the default refuses.
TRUSTING = LoadPolicy(allow_unsafe_formats=True)

# The predict methods are annotated with pd.DataFrame, a hint from which MLflow infers no
# schema: without any hint, defining the class prints a warning that no filter can silence
# (MLflow forces it "once"). These models rely on the signatures they are saved with.


class Echo(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """Returns its input plus a column naming the dtypes it was given."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
        dtypes = ",".join(f"{name}:{dtype}" for name, dtype in model_input.dtypes.items())
        return model_input.assign(dtypes=dtypes)


class Shaper(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """Returns a result of the shape named by `kind`, computed from the input's first column."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
        x = np.asarray(model_input)[:, 0].astype(float)
        match self.kind:
            case "ndarray":
                return x * 2
            case "list":
                return (x * 2).tolist()
            case "series":
                return pd.Series(x * 2, name="ignored")
            case "column":
                return (x * 2).reshape(-1, 1)
            case "matrix":
                return np.column_stack([x, x * 2, x * 3])
            case "dict":
                return {"double": x * 2, "pair": np.column_stack([x, -x])}
            case "strings":
                return np.array([f"r{i}" for i in range(len(x))])
            case "nullable":
                return pd.DataFrame(
                    {
                        "count": pd.array([1, None], dtype="Int64"),
                        "whole": pd.array([0, 1], dtype="Int64"),
                        "text": pd.array(["a", None], dtype="string"),
                        "flag": pd.array([True, None], dtype="boolean"),
                        "when": pd.to_datetime(["2024-01-02"] * 2),
                        "kind": pd.Categorical(["u", "v"]),
                    }
                )
        return np.zeros((len(x), 2, 2))


class TouchOnLoad(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """Creates `marker` when mlflow loads it: proof that the model's code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def load_context(self, context: Any) -> None:
        Path(self.marker).touch()

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
        return model_input


@pytest.fixture(scope="session")
def save(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory: save a python model with `signature` into a fresh directory, return it."""

    def make(model: Any, signature: ModelSignature | None) -> Path:
        directory = tmp_path_factory.mktemp("pyfunc") / "model"
        with warnings.catch_warnings():
            # saving warns that no input example was given: advice for model authors
            warnings.filterwarnings("ignore", message=".*input example", category=UserWarning)
            mlflow.pyfunc.save_model(
                str(directory), python_model=model, signature=signature, pip_requirements=[]
            )
        return directory

    return make


TYPED_SIGNATURE = ModelSignature(
    inputs=Schema(
        [
            ColSpec("double", "d"),
            ColSpec("float", "f"),
            ColSpec("long", "l", required=False),
            ColSpec("integer", "i"),
            ColSpec("string", "s", required=False),
            ColSpec("boolean", "b"),
            ColSpec("binary", "y"),
        ]
    )
)
TYPED_FRAME = Frame(
    {
        "y": np.array([b"\x00a", b"b"], dtype=object),
        "b": np.array([True, False]),
        "i": np.array([1, 2], dtype=np.int64),
        "s": np.array(["x", None], dtype=object),
        "l": np.array([10.0, 20.0]),
        "f": np.array([0.5, 1.5]),
        "d": np.array([1.25, 2.5]),
        "extra": np.array(["ignored", "too"], dtype=object),
    }
)


@pytest.fixture(scope="session")
def typed(save: Callable[..., Path]) -> Path:
    return save(Echo(), TYPED_SIGNATURE)


@pytest.fixture(scope="session")
def shaper(save: Callable[..., Path]) -> Callable[[str], Path]:
    saved: dict[str, Path] = {}
    signature = ModelSignature(inputs=Schema([ColSpec("double", "x")]))

    def make(kind: str) -> Path:
        if kind not in saved:
            saved[kind] = save(Shaper(kind), signature)
        return saved[kind]

    return make


def load(directory: Path, **fields: Any) -> LoadedModel:
    """Decode the flavor from wire JSON, as a serve request would, and load it."""
    return parse_flavor({"PyFunc": fields}).load(directory, TRUSTING)


def score(model: LoadedModel, frame: Frame) -> Frame:
    """What the serving layer does: conform to the signature, then predict."""
    return model.predict(conform(frame, model.signature))


def columns(frame: Frame) -> dict[str, list[Any]]:
    return {name: frame[name].tolist() for name in frame.names}


class TestEnsembleFixture:
    def test_signature_from_the_mlmodel(self) -> None:
        model = load(ENSEMBLE)
        reference = json.loads((ENSEMBLE / "expected.json").read_text())
        assert [(s.name, s.type, s.accepts_missing) for s in model.signature.inputs] == [
            (name, TensorType.Float64, False) for name in reference["features"]
        ]
        assert [(s.name, s.type) for s in model.signature.outputs] == [
            ("EnergyOutput", TensorType.Float64),
            ("model_spread", TensorType.Float64),
        ]

    def test_predictions_equal_mlflow_reference(self) -> None:
        reference = json.loads((ENSEMBLE / "expected.json").read_text())
        rows = np.array(reference["rows"], dtype=float)
        # request order differs from the signature's: fields are matched by name
        frame = Frame(
            {name: rows[:, i] for i, name in reversed(list(enumerate(reference["features"])))}
        )
        result = score(load(ENSEMBLE), frame)
        assert result.names == reference["predictions"]["columns"]
        np.testing.assert_allclose(
            np.column_stack([result[name] for name in result.names]),
            reference["predictions"]["data"],
            rtol=reference["tolerance_rel"],
        )

    def test_model_path_names_a_subdirectory(self, tmp_path: Path) -> None:
        shutil.copytree(ENSEMBLE, tmp_path / "models" / "ensemble")
        model = load(tmp_path, modelPath="models/ensemble")
        assert [spec.name for spec in model.signature.outputs] == ["EnergyOutput", "model_spread"]

    def test_telemetry_is_switched_off_unless_the_operator_chose(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv("MLFLOW_DISABLE_TELEMETRY", raising=False)
        load(ENSEMBLE)
        assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"
        monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "false")
        load(ENSEMBLE)
        assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "false"


class TestColumnSignature:
    def test_types_and_optional_columns(self, typed: Path) -> None:
        model = load(typed)
        assert [(s.name, s.type, s.accepts_missing) for s in model.signature.inputs] == [
            ("d", TensorType.Float64, False),
            ("f", TensorType.Float32, False),
            ("l", TensorType.Int64, True),
            ("i", TensorType.Int32, False),
            ("s", TensorType.String, True),
            ("b", TensorType.Bool, False),
            ("y", TensorType.Bytes, False),
        ]
        assert model.signature.outputs == ()

    def test_model_gets_exactly_the_signature_dtypes(self, typed: Path) -> None:
        # float64 request values reach the float column as float32, as MLflow requires
        result = columns(score(load(typed), TYPED_FRAME))
        assert result["dtypes"][0] == (
            "d:float64,f:float32,l:int64,i:int32,s:object,b:bool,y:object"
        )
        assert result["s"] == ["x", None]
        assert result["y"] == [b"\x00a", b"b"]
        assert result["f"] == [0.5, 1.5]
        assert result["l"] == [10, 20]

    def test_optional_columns_absent_from_the_request_are_left_out(self, typed: Path) -> None:
        frame = Frame(
            {n: TYPED_FRAME[n] for n in TYPED_FRAME.names if n not in ("l", "s", "extra")}
        )
        result = columns(score(load(typed), frame))
        assert result["dtypes"][0] == "d:float64,f:float32,i:int32,b:bool,y:object"

    def test_partly_missing_optional_integer_is_refused(self, typed: Path) -> None:
        frame = Frame({**TYPED_FRAME.columns, "l": np.array([1.0, np.nan])})
        with pytest.raises(InferenceRequestInvalidError, match="row 1") as caught:
            score(load(typed), frame)
        assert caught.value.field == "l"

    def test_missing_value_in_a_required_column_is_refused(self, typed: Path) -> None:
        frame = Frame({**TYPED_FRAME.columns, "d": np.array([1.0, np.nan])})
        with pytest.raises(InferenceRequestInvalidError, match="row 1") as caught:
            score(load(typed), frame)
        assert caught.value.field == "d"

    def test_required_column_missing_is_refused(self, typed: Path) -> None:
        frame = Frame({n: TYPED_FRAME[n] for n in TYPED_FRAME.names if n != "i"})
        with pytest.raises(InferenceRequestInvalidError) as caught:
            score(load(typed), frame)
        assert caught.value.field == "i"

    def test_unnamed_columns_take_feature_names(self, save: Callable[..., Path]) -> None:
        directory = save(Echo(), ModelSignature(inputs=Schema([ColSpec("float"), ColSpec("long")])))
        model = load(directory, featureNames=["a", "b"])
        assert [(s.name, s.type) for s in model.signature.inputs] == [
            ("a", TensorType.Float32),
            ("b", TensorType.Int64),
        ]
        frame = Frame({"b": np.array([3.0]), "a": np.array([1.5])})
        assert columns(score(model, frame))["dtypes"] == ["a:float32,b:int64"]

    def test_unnamed_columns_without_names_take_request_order(
        self, save: Callable[..., Path]
    ) -> None:
        directory = save(Echo(), ModelSignature(inputs=Schema([ColSpec("float"), ColSpec("long")])))
        model = load(directory)
        assert model.signature.inputs == ()
        frame = Frame({"q": np.array([1.5]), "p": np.array([3.0])})
        assert columns(score(model, frame))["dtypes"] == ["q:float32,p:int64"]
        with pytest.raises(InferenceRequestInvalidError, match="takes 2 unnamed inputs"):
            score(model, Frame({"q": np.array([1.5])}))

    def test_datetime_column_is_refused(self, save: Callable[..., Path]) -> None:
        directory = save(Echo(), ModelSignature(inputs=Schema([ColSpec("datetime", "when")])))
        with pytest.raises(CreateServableRequestInvalidError, match="'datetime'") as caught:
            load(directory)
        assert caught.value.field == FIELD
        assert "column 'when'" in caught.value.message


class TestTensorSignature:
    def test_single_2d_tensor_with_feature_names(self, save: Callable[..., Path]) -> None:
        signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3))]))
        model = load(save(Shaper("matrix"), signature), featureNames=["a", "b", "c"])
        assert [(s.name, s.type) for s in model.signature.inputs] == [
            (name, TensorType.Float32) for name in "abc"
        ]
        frame = Frame({"c": np.array([9.0]), "a": np.array([1.5]), "b": np.array([7.0])})
        assert columns(score(model, frame)) == {
            "prediction_0": [1.5],
            "prediction_1": [3.0],
            "prediction_2": [4.5],
        }

    def test_single_2d_tensor_without_names_takes_request_order(
        self, save: Callable[..., Path]
    ) -> None:
        signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.int64), (-1, 2))]))
        model = load(save(Shaper("ndarray"), signature))
        assert model.signature.inputs == ()
        frame = Frame({"second": np.array([4.0, 5.0]), "first": np.array([1.0, 2.0])})
        assert columns(score(model, frame)) == {"prediction": [8.0, 10.0]}
        with pytest.raises(InferenceRequestInvalidError, match="fractional"):
            score(model, Frame({"a": np.array([1.5]), "b": np.array([1.0])}))

    @pytest.mark.parametrize(
        "inputs",
        [
            [TensorSpec(np.dtype(np.float32), (-1, 2, 2))],
            [
                TensorSpec(np.dtype(np.float32), (-1, 2), "a"),
                TensorSpec(np.dtype(np.float32), (-1, 2), "b"),
            ],
            [TensorSpec(np.dtype(np.str_), (-1, 2))],
        ],
        ids=["3-d", "two-tensors", "strings"],
    )
    def test_other_tensor_layouts_are_refused(
        self, save: Callable[..., Path], inputs: list[TensorSpec]
    ) -> None:
        directory = save(Shaper("ndarray"), ModelSignature(inputs=Schema(inputs)))
        with pytest.raises(CreateServableRequestInvalidError, match="unsupported tensor signature"):
            load(directory)

    def test_wrong_number_of_feature_names_is_refused(self, save: Callable[..., Path]) -> None:
        signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3))]))
        with pytest.raises(CreateServableRequestInvalidError, match="3 columns but 2") as caught:
            load(save(Shaper("matrix"), signature), featureNames=["a", "b"])
        assert caught.value.field == "flavor.PyFunc.featureNames"


class TestResults:
    @pytest.mark.parametrize(
        ("kind", "expected"),
        [
            ("ndarray", {"prediction": [2.0, 4.0]}),
            ("list", {"prediction": [2.0, 4.0]}),
            ("series", {"prediction": [2.0, 4.0]}),
            ("column", {"prediction": [2.0, 4.0]}),
            (
                "matrix",
                {
                    "prediction_0": [1.0, 2.0],
                    "prediction_1": [2.0, 4.0],
                    "prediction_2": [3.0, 6.0],
                },
            ),
            ("dict", {"double": [2.0, 4.0], "pair_0": [1.0, 2.0], "pair_1": [-1.0, -2.0]}),
            ("strings", {"prediction": ["r0", "r1"]}),
        ],
    )
    def test_result_shapes_become_columns(
        self, shaper: Callable[[str], Path], kind: str, expected: dict[str, list[Any]]
    ) -> None:
        result = score(load(shaper(kind)), Frame({"x": np.array([1.0, 2.0])}))
        assert columns(result) == expected

    def test_string_results_are_object_columns(self, shaper: Callable[[str], Path]) -> None:
        result = score(load(shaper("strings")), Frame({"x": np.array([1.0, 2.0])}))
        assert result["prediction"].dtype == object
        assert TensorType.of_column(result["prediction"]) is TensorType.String

    def test_pandas_extension_types_become_plain_columns(
        self, shaper: Callable[[str], Path]
    ) -> None:
        result = score(load(shaper("nullable")), Frame({"x": np.array([1.0, 2.0])}))
        assert result["count"].dtype == np.float64
        assert result["count"][0] == 1.0
        assert np.isnan(result["count"][1])
        assert result["whole"].dtype == np.int64
        assert columns(result)["text"] == ["a", None]
        assert columns(result)["flag"] == [True, None]
        assert all(when.startswith("2024-01-02T00:00:00") for when in columns(result)["when"])
        assert columns(result)["kind"] == ["u", "v"]
        assert {TensorType.of_column(result[n]) for n in ("text", "when", "kind")} == {
            TensorType.String
        }

    def test_result_with_three_dimensions_fails(self, shaper: Callable[[str], Path]) -> None:
        with pytest.raises(TypeError, match="3-D result"):
            score(load(shaper("cube")), Frame({"x": np.array([1.0, 2.0])}))


class TestWithoutSignature:
    def test_request_fields_go_to_the_model_as_they_come(self, save: Callable[..., Path]) -> None:
        model = load(save(Echo(), None))
        assert model.signature == type(model.signature)(inputs=(), outputs=())
        frame = Frame({"b": np.array([1, 2]), "a": np.array(["x", "y"], dtype=object)})
        result = columns(score(model, frame))
        assert result["dtypes"][0] == "b:int64,a:object"
        assert result["a"] == ["x", "y"]


class TestLoadErrors:
    def test_directory_without_mlmodel(self, tmp_path: Path) -> None:
        with pytest.raises(CreateServableRequestInvalidError, match="no MLmodel") as caught:
            PyFuncFlavor().load(tmp_path, TRUSTING)
        assert caught.value.field == FIELD

    def test_model_path_outside_the_artifact(self, tmp_path: Path) -> None:
        (tmp_path / "inner").mkdir()
        with pytest.raises(CreateServableRequestInvalidError, match="outside"):
            PyFuncFlavor("..").load(tmp_path / "inner", TRUSTING)

    def test_mlmodel_without_python_function(self, tmp_path: Path) -> None:
        (tmp_path / "MLmodel").write_text("flavors:\n  keras: {data: data}\n")
        with pytest.raises(CreateServableRequestInvalidError, match=r"no python_function.*keras"):
            PyFuncFlavor().load(tmp_path, TRUSTING)

    def test_model_that_mlflow_cannot_load(self, tmp_path: Path) -> None:
        shutil.copytree(ENSEMBLE, tmp_path / "m")
        (tmp_path / "m" / "python_model.pkl").write_bytes(b"not a pickle")
        with pytest.raises(
            CreateServableRequestInvalidError, match="mlflow could not load"
        ) as caught:
            PyFuncFlavor().load(tmp_path / "m", TRUSTING)
        assert "\n" not in caught.value.message
        assert str(tmp_path) not in caught.value.message

    def test_repeated_feature_names(self, typed: Path) -> None:
        with pytest.raises(CreateServableRequestInvalidError, match="repeat"):
            load(typed, featureNames=["a", "a"])

    def test_missing_mlflow_names_the_extra(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setitem(sys.modules, "mlflow.pyfunc", None)  # makes the import fail
        with pytest.raises(FlavorUnavailable, match=r"'mlflow-skinny'.*forestflow\[mlflow\]"):
            PyFuncFlavor().load(ENSEMBLE, TRUSTING)

    def test_closed_model_refuses_to_predict(self) -> None:
        model = load(ENSEMBLE)
        assert isinstance(model, PyFuncModel)
        model.close()
        with pytest.raises(RuntimeError, match="closed"):
            model.predict(Frame({"x": np.array([1.0])}))


class TestSafeLoading:
    def test_refused_by_default_before_the_model_s_code_runs(
        self, save: Callable[..., Path], tmp_path: Path
    ) -> None:
        marker = tmp_path / "ran"
        directory = save(TouchOnLoad(str(marker)), ModelSignature(Schema([ColSpec("double", "x")])))
        with pytest.raises(CreateServableRequestInvalidError) as caught:
            PyFuncFlavor().load(directory, LoadPolicy())
        assert not marker.exists()
        assert caught.value.field == FIELD
        assert caught.value.message == (
            "'.' is an MLflow python_function model, and python_function models run their own "
            "Python code when loaded; the server refuses them unless the operator sets "
            "security.allow_unsafe_formats (FORESTFLOW_SECURITY__ALLOW_UNSAFE_FORMATS=true)"
        )
        model = PyFuncFlavor().load(directory, TRUSTING)
        assert marker.exists()  # so the policy check is what stopped it above
        assert columns(score(model, Frame({"x": np.array([1.5])}))) == {"x": [1.5]}

    def test_trusting_skops_types_does_not_allow_python_function(self) -> None:
        policy = LoadPolicy(skops_trusted_types=("sklearn.tree._tree.Tree",))
        with pytest.raises(CreateServableRequestInvalidError, match="allow_unsafe_formats"):
            PyFuncFlavor().load(ENSEMBLE, policy)


class TestFlavorValue:
    def test_decodes_camel_and_snake_case_with_defaults(self) -> None:
        assert parse_flavor({"PyFunc": {}}) == PyFuncFlavor(".", ())
        camel = parse_flavor({"PyFunc": {"modelPath": "m", "featureNames": ["a"]}})
        snake = parse_flavor({"type": "pyfunc", "model_path": "m", "feature_names": ["a"]})
        assert camel == snake == PyFuncFlavor("m", ("a",))
