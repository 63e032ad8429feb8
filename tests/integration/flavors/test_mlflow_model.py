"""`flavor_from_mlmodel` on the MLflow fixtures (made by mlflow 3.17.2) and on MLmodel files
written here for what the fixtures do not cover: MOJOs, binary H2O models, the scikit-learn
API of xgboost and lightgbm, unsupported flavors, broken or incomplete files."""

from __future__ import annotations

import json
import logging
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from forestflow.domain.codec import encode
from forestflow.domain.frame import TensorType
from forestflow.errors import CreateServableRequestInvalidError
from forestflow.flavors.base import Flavor, LoadPolicy, parse_flavor
from forestflow.flavors.mlflow_model import flavor_from_mlmodel, read_mlmodel

REPO = Path(__file__).parents[3]
MLFLOW = REPO / "tests" / "fixtures" / "mlflow"
MOJO = REPO / "tests" / "fixtures" / "h2o" / "gbm_powerplant_regression"
MOJO_ZIP = MOJO / "gbm_powerplant_regression.zip"
POWERPLANT = [
    "TemperatureCelcius",
    "ExhaustVacuumHg",
    "AmbientPressureMillibar",
    "RelativeHumidity",
]
SIGNATURE = {
    "inputs": json.dumps(
        [{"type": "double", "name": name, "required": True} for name in POWERPLANT]
    ),
    "outputs": json.dumps([{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1]}}]),
}
PYFUNC = {"loader_module": "mlflow.sklearn", "model_path": "model.pkl"}


def expected(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "expected.json").read_text())


def fixture_names(directory: Path) -> list[str]:
    names: list[str] = expected(directory)["features"]
    return names


# What each fixture must be served with, in wire form (as a BasicServeRequest would name it).
FIXTURE_FLAVORS: dict[str, dict[str, Any]] = {
    "lightgbm/lgbm_wine_multiclass_booster": {"LightGBM": {"modelPath": "model.lgb"}},
    "onnx/gbr_powerplant_onnx": {"ONNX": {"modelPath": "model.onnx"}},
    "pyfunc/custom_powerplant_ensemble": {"PyFunc": {}},
    "sklearn/logreg_iris_pipeline": {
        "Sklearn": {"modelPath": "model.pkl", "serializationFormat": "cloudpickle"}
    },
    # the MLmodel's skops_trusted_types are not carried over: only the server trusts types
    "sklearn/rf_diabetes_regression": {
        "Sklearn": {"modelPath": "model.skops", "serializationFormat": "skops"}
    },
    "xgboost/xgb_breast_cancer_booster": {"XGBoost": {"modelPath": "model.ubj"}},
}
WIRE_NAMES = {
    "onnx": "ONNX",
    "sklearn": "Sklearn",
    "xgboost": "XGBoost",
    "lightgbm": "LightGBM",
    "pyfunc": "PyFunc",
}


def wanted(key: str) -> Flavor:
    """The expected flavor value: the wire form above plus the fixture's signature names."""
    ((name, body),) = FIXTURE_FLAVORS[key].items()
    if name != "PyFunc":
        body = {**body, "featureNames": fixture_names(MLFLOW / key)}
    return parse_flavor({name: body})


@pytest.fixture
def model_dir(tmp_path: Path) -> Callable[..., Path]:
    """Factory: a model directory with an MLmodel of `flavors` (+ signature) and data files."""

    def make(
        flavors: dict[str, Any],
        *,
        files: dict[str, bytes] | None = None,
        signature: dict[str, Any] | None = SIGNATURE,
    ) -> Path:
        directory = tmp_path / "model"
        directory.mkdir()
        content: dict[str, Any] = {"flavors": flavors, "mlflow_version": "3.17.2"}
        if signature is not None:
            content["signature"] = signature
        (directory / "MLmodel").write_text(yaml.safe_dump(content))
        for name, data in (files or {}).items():
            (directory / name).parent.mkdir(parents=True, exist_ok=True)
            (directory / name).write_bytes(data)
        return directory

    return make


def refused(directory: Path) -> CreateServableRequestInvalidError:
    with pytest.raises(CreateServableRequestInvalidError) as caught:
        flavor_from_mlmodel(directory)
    assert caught.value.field == "path"
    assert "\n" not in caught.value.message
    return caught.value


class TestFixtures:
    @pytest.mark.parametrize("key", sorted(FIXTURE_FLAVORS))
    def test_chosen_flavor_and_fields(self, key: str) -> None:
        flavor = flavor_from_mlmodel(MLFLOW / key)
        assert flavor == wanted(key)
        assert flavor.wire_name == WIRE_NAMES[expected(MLFLOW / key)["mlflow_flavor"]]

    def test_every_fixture_is_covered(self) -> None:
        keys = {p.parent.relative_to(MLFLOW).as_posix() for p in MLFLOW.glob("*/*/MLmodel")}
        assert keys == set(FIXTURE_FLAVORS)

    def test_chosen_flavor_round_trips_through_its_wire_form(self) -> None:
        # the deploy event stores encode(flavor); recovery decodes it with parse_flavor
        flavor = flavor_from_mlmodel(MLFLOW / "sklearn/rf_diabetes_regression")
        assert parse_flavor(encode(flavor)) == flavor

    def test_onnx_single_2d_input_takes_its_names_from_the_signature(self) -> None:
        directory = MLFLOW / "onnx/gbr_powerplant_onnx"
        model = flavor_from_mlmodel(directory).load(directory, LoadPolicy())
        assert [(s.name, s.type) for s in model.signature.inputs] == [
            (name, TensorType.Float32) for name in POWERPLANT
        ]

    def test_signature_of_the_fixture_is_read(self) -> None:
        mlmodel = read_mlmodel(MLFLOW / "pyfunc/custom_powerplant_ensemble")
        assert mlmodel.column_names == tuple(POWERPLANT)
        assert [spec["name"] for spec in mlmodel.outputs or ()] == ["EnergyOutput", "model_spread"]
        assert set(mlmodel.flavors) == {"python_function"}


class TestPreference:
    def test_native_flavor_wins_over_python_function_listed_first(
        self, model_dir: Callable[..., Path]
    ) -> None:
        directory = model_dir(
            {
                "python_function": PYFUNC,
                "sklearn": {"pickled_model": "model.pkl", "serialization_format": "pickle"},
            },
            files={"model.pkl": b"x"},
        )
        assert flavor_from_mlmodel(directory) == parse_flavor(
            {
                "Sklearn": {
                    "modelPath": "model.pkl",
                    "serializationFormat": "pickle",
                    "featureNames": POWERPLANT,
                }
            }
        )

    def test_onnx_wins_over_sklearn(self, model_dir: Callable[..., Path]) -> None:
        directory = model_dir(
            {"sklearn": {"pickled_model": "model.pkl"}, "onnx": {"data": "model.onnx"}},
            files={"model.pkl": b"x", "model.onnx": b"x"},
        )
        assert flavor_from_mlmodel(directory).wire_name == "ONNX"

    @pytest.mark.parametrize(
        ("flavor", "model_class"),
        [
            ("xgboost", "xgboost.sklearn.XGBClassifier"),
            ("lightgbm", "lightgbm.sklearn.LGBMRegressor"),
        ],
    )
    def test_scikit_learn_api_boosters_fall_back_to_python_function(
        self, model_dir: Callable[..., Path], flavor: str, model_class: str
    ) -> None:
        directory = model_dir(
            {
                flavor: {"data": "model.xgb", "model_class": model_class},
                "python_function": {"loader_module": f"mlflow.{flavor}", "data": "model.xgb"},
            },
            files={"model.xgb": b"x"},
        )
        assert flavor_from_mlmodel(directory) == parse_flavor({"PyFunc": {}})

    def test_scikit_learn_api_booster_alone_is_refused_with_the_reason(
        self, model_dir: Callable[..., Path]
    ) -> None:
        directory = model_dir(
            {"xgboost": {"data": "model.xgb", "model_class": "xgboost.sklearn.XGBRegressor"}},
            files={"model.xgb": b"x"},
        )
        error = refused(directory)
        assert "xgboost (xgboost.sklearn.XGBRegressor is the scikit-learn API" in error.message

    def test_unknown_sklearn_serialization_falls_back_to_python_function(
        self, model_dir: Callable[..., Path]
    ) -> None:
        directory = model_dir(
            {
                "sklearn": {"pickled_model": "model.x", "serialization_format": "dill"},
                "python_function": PYFUNC,
            },
            files={"model.x": b"x"},
        )
        assert flavor_from_mlmodel(directory).wire_name == "PyFunc"

    def test_tensor_signature_gives_no_feature_names(self, model_dir: Callable[..., Path]) -> None:
        tensor = [{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 4]}}]
        directory = model_dir(
            {"onnx": {"data": "model.onnx"}},
            files={"model.onnx": b"x"},
            signature={"inputs": json.dumps(tensor)},
        )
        assert flavor_from_mlmodel(directory) == parse_flavor({"ONNX": {"modelPath": "model.onnx"}})

    def test_model_without_signature_gives_no_feature_names(
        self, model_dir: Callable[..., Path]
    ) -> None:
        directory = model_dir(
            {"onnx": {"data": "model.onnx"}}, files={"model.onnx": b"x"}, signature=None
        )
        assert flavor_from_mlmodel(directory) == parse_flavor({"ONNX": {"modelPath": "model.onnx"}})


class TestH2O:
    def test_mojo_named_by_h2o_yaml_is_served_as_h2o_mojo(
        self, model_dir: Callable[..., Path]
    ) -> None:
        directory = model_dir(
            {"h2o": {"data": "model.h2o", "h2o_version": "3.46.0.11"}, "python_function": PYFUNC},
            files={
                "model.h2o/gbm.zip": MOJO_ZIP.read_bytes(),
                "model.h2o/h2o.yaml": yaml.safe_dump({"model_file": "gbm.zip"}).encode(),
            },
        )
        flavor = flavor_from_mlmodel(directory)
        assert flavor == parse_flavor(
            {"H2OMojo": {"mojoPath": "model.h2o/gbm.zip", "version": "3.46.0.11"}}
        )
        model = flavor.load(directory, LoadPolicy())
        assert model.signature.input_names == [
            spec["name"] for spec in expected(MOJO)["feature_types"]
        ]
        model.close()

    def test_data_that_is_a_mojo_zip(self, model_dir: Callable[..., Path]) -> None:
        directory = model_dir(
            {"h2o": {"data": "gbm.zip"}}, files={"gbm.zip": MOJO_ZIP.read_bytes()}
        )
        assert flavor_from_mlmodel(directory) == parse_flavor({"H2OMojo": {"mojoPath": "gbm.zip"}})

    def test_unpacked_mojo_directory(self, model_dir: Callable[..., Path]) -> None:
        directory = model_dir({"h2o": {"data": "model.h2o"}})
        with zipfile.ZipFile(MOJO_ZIP) as archive:
            archive.extractall(directory / "model.h2o")
        assert flavor_from_mlmodel(directory) == parse_flavor(
            {"H2OMojo": {"mojoPath": "model.h2o"}}
        )

    def test_binary_h2o_model_is_refused_and_its_h2o_pyfunc_too(
        self, model_dir: Callable[..., Path]
    ) -> None:
        directory = model_dir(
            {
                "h2o": {"data": "model.h2o", "h2o_version": "3.46.0.11"},
                "python_function": {"loader_module": "mlflow.h2o", "data": "model.h2o"},
            },
            files={
                "model.h2o/GBM_model_python_1": b"\x00binary H2O model",
                "model.h2o/h2o.yaml": yaml.safe_dump({"model_file": "GBM_model_python_1"}).encode(),
            },
        )
        error = refused(directory)
        assert "h2o (a binary H2O model, not a MOJO" in error.message
        assert "python_function (its loader mlflow.h2o starts an H2O cluster" in error.message

    def test_binary_h2o_model_falls_through_to_sklearn(
        self, model_dir: Callable[..., Path]
    ) -> None:
        directory = model_dir(
            {"h2o": {"data": "model.h2o"}, "sklearn": {"pickled_model": "model.pkl"}},
            files={"model.h2o/GBM_1": b"\x00binary", "model.pkl": b"x"},
        )
        assert flavor_from_mlmodel(directory).wire_name == "Sklearn"


class TestRefused:
    def test_no_supported_flavor_names_the_flavors_found(
        self, model_dir: Callable[..., Path]
    ) -> None:
        directory = model_dir(
            {"keras": {"data": "data"}, "pytorch": {"model_data": "data"}}, files={"data/x": b"x"}
        )
        error = refused(directory)
        assert "no flavor this server can serve" in error.message
        assert "keras (not supported); pytorch (not supported)" in error.message
        assert "python_function" in error.message  # the supported ones are listed

    def test_missing_mlmodel(self, tmp_path: Path) -> None:
        (tmp_path / "model.pkl").write_bytes(b"x")
        assert "no MLmodel file" in refused(tmp_path).message

    @pytest.mark.parametrize(
        "content",
        ["flavors: [unclosed\n  - x: {", "flavors:\n  onnx: {data: a}\n bad-indent: 1\n"],
        ids=["unclosed", "indentation"],
    )
    def test_broken_yaml(self, tmp_path: Path, content: str) -> None:
        (tmp_path / "MLmodel").write_text(content)
        assert "MLmodel is not valid YAML" in refused(tmp_path).message

    @pytest.mark.parametrize("content", ["just text", "flavors: {}", "flavors: [onnx]"])
    def test_mlmodel_without_flavors(self, tmp_path: Path, content: str) -> None:
        (tmp_path / "MLmodel").write_text(content)
        assert "no 'flavors' mapping" in refused(tmp_path).message

    def test_missing_data_file(self, model_dir: Callable[..., Path]) -> None:
        error = refused(model_dir({"onnx": {"data": "model.onnx"}, "python_function": PYFUNC}))
        assert error.message == (
            "MLmodel flavor 'onnx': model file 'model.onnx' not found in the artifact "
            "(flavors in the MLmodel: onnx, python_function)"
        )

    def test_flavor_without_data_entry(self, model_dir: Callable[..., Path]) -> None:
        error = refused(model_dir({"sklearn": {"serialization_format": "pickle"}}))
        assert "flavor 'sklearn' has no 'pickled_model' entry" in error.message

    def test_data_outside_the_model_directory(self, model_dir: Callable[..., Path]) -> None:
        directory = model_dir({"onnx": {"data": "../model.onnx"}})
        (directory.parent / "model.onnx").write_bytes(b"x")
        assert "points outside the model directory" in refused(directory).message

    @pytest.mark.parametrize("data", ["s3://bucket/models/model.onnx", "/srv/models/model.onnx"])
    def test_data_at_an_absolute_location(self, model_dir: Callable[..., Path], data: str) -> None:
        error = refused(model_dir({"onnx": {"data": data}}))
        assert f"absolute location {data!r}" in error.message

    def test_signature_that_is_not_json(self, model_dir: Callable[..., Path]) -> None:
        directory = model_dir(
            {"onnx": {"data": "m.onnx"}}, files={"m.onnx": b"x"}, signature={"inputs": "[{"}
        )
        assert "signature.inputs is not valid JSON" in refused(directory).message

    @pytest.mark.parametrize("trusted", [["sklearn.tree._tree.Tree"], "sklearn.tree"])
    def test_mlmodel_trusted_types_are_ignored_and_logged(
        self, model_dir: Callable[..., Path], caplog: pytest.LogCaptureFixture, trusted: object
    ) -> None:
        directory = model_dir(
            {"sklearn": {"pickled_model": "m.skops", "skops_trusted_types": trusted}},
            files={"m.skops": b"x"},
        )
        with caplog.at_level(logging.INFO, logger="forestflow.flavors.mlflow_model"):
            flavor = flavor_from_mlmodel(directory)
        assert flavor == parse_flavor(
            {"Sklearn": {"modelPath": "m.skops", "featureNames": POWERPLANT}}
        )
        (record,) = caplog.records
        assert record.levelno == logging.INFO
        assert "ignored" in record.getMessage()
        assert "security.skops_trusted_types" in record.getMessage()

    def test_fixture_copy_without_its_model_file(self, tmp_path: Path) -> None:
        directory = tmp_path / "rf"
        shutil.copytree(MLFLOW / "sklearn/rf_diabetes_regression", directory)
        (directory / "model.skops").unlink()
        error = refused(directory)
        assert "flavor 'sklearn'" in error.message
        assert "'model.skops' not found" in error.message
