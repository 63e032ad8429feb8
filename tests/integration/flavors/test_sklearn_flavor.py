"""The scikit-learn flavor on real estimators trained here (fixed seeds) and saved with joblib
or skops, and what the load policy lets it read: pickles only when the operator allows them,
skops files with the types the operator trusts."""

from __future__ import annotations

import json
import pickle
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
import skops.io
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import LinearSVC

from forestflow.domain.frame import Frame, TensorType
from forestflow.domain.signature import conform
from forestflow.errors import (
    CreateServableRequestInvalidError,
    FlavorUnavailable,
    InferenceRequestInvalidError,
)
from forestflow.flavors.base import LoadedModel, LoadPolicy, parse_flavor
from forestflow.flavors.mlflow_model import flavor_from_mlmodel
from forestflow.flavors.sklearn import SklearnFlavor

REPO = Path(__file__).parents[3]
MLFLOW_RF = REPO / "tests" / "fixtures" / "mlflow" / "sklearn" / "rf_diabetes_regression"
MLFLOW_LOGREG = REPO / "tests" / "fixtures" / "mlflow" / "sklearn" / "logreg_iris_pipeline"
TREE = "sklearn.tree._tree.Tree"
SEED = 1234
NUMERIC = ["temperature", "vacuum", "pressure"]
CHURN = ["tenure", "charges", "contract"]
# These tests' own pickles are trusted; TestSafeLoading checks what the default refuses.
TRUSTING = LoadPolicy(allow_unsafe_formats=True)


class Halver(RegressorMixin, BaseEstimator):
    """An estimator of this module: a type skops does not trust unless told to."""

    def fit(self, features: np.ndarray, target: np.ndarray) -> Halver:
        self.n_features_in_ = features.shape[1]
        return self

    def predict(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(features, dtype=float)[:, 0] / 2


HALVER = f"{Halver.__module__}.Halver"


class TouchOnLoad:
    """Unpickling it creates `marker`: proof that code in the pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (Path.touch, (self.marker,))


@dataclass(frozen=True)
class Trained:
    """A fitted estimator, the artifact directory it was dumped to, and rows to score."""

    estimator: Any
    directory: Path
    file: str
    rows: pd.DataFrame

    def load(self, policy: LoadPolicy = TRUSTING, **fields: object) -> LoadedModel:
        """Decode the flavor from wire JSON, as a serve request would, and load it."""
        flavor = parse_flavor({"Sklearn": {"modelPath": self.file, **fields}})
        return flavor.load(self.directory, policy)


def numeric_data(rows: int = 80) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(SEED)
    features = pd.DataFrame(rng.normal(size=(rows, 3)), columns=NUMERIC)
    target = features.to_numpy() @ np.array([1.5, -2.0, 0.5]) + rng.normal(0, 0.1, rows)
    return features, target


def churn_data(rows: int = 120) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(SEED + 1)
    features = pd.DataFrame(
        {
            "tenure": rng.integers(0, 72, rows).astype(float),
            "charges": rng.uniform(20, 120, rows),
            "contract": rng.choice(["monthly", "yearly", "two-year"], rows),
        }
    )
    churned = (features["charges"] / 120 - features["tenure"] / 72 + rng.normal(0, 0.2, rows)) > 0
    return features, churned.astype(int).to_numpy()


@pytest.fixture(scope="session")
def train(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Trained]:
    """Factory: fit `estimator`, save it (joblib for `.joblib`, skops for `.skops`, else plain
    pickle), return it."""

    def make(
        estimator: Any,
        features: pd.DataFrame,
        target: np.ndarray,
        *,
        as_array: bool = False,
        file: str = "model.joblib",
    ) -> Trained:
        estimator.fit(features.to_numpy() if as_array else features, target)
        directory = tmp_path_factory.mktemp(type(estimator).__name__)
        if file.endswith(".joblib"):
            joblib.dump(estimator, directory / file)
        elif file.endswith(".skops"):
            skops.io.dump(estimator, directory / file)
        else:
            (directory / file).write_bytes(pickle.dumps(estimator))
        return Trained(estimator, directory, file, features.head(10).reset_index(drop=True))

    return make


@pytest.fixture(scope="session")
def dataframe_regressor(train: Callable[..., Trained]) -> Trained:
    return train(LinearRegression(), *numeric_data())


@pytest.fixture(scope="session")
def array_regressor(train: Callable[..., Trained]) -> Trained:
    forest = RandomForestRegressor(n_estimators=8, max_depth=4, n_jobs=2, random_state=SEED)
    return train(forest, *numeric_data(), as_array=True)


@pytest.fixture(scope="session")
def string_classifier(train: Callable[..., Trained]) -> Trained:
    features, target = numeric_data()
    labels = np.select([target < -1, target > 1], ["low", "high"], "mid")
    return train(LogisticRegression(), features, labels, as_array=True)


@pytest.fixture(scope="session")
def imputing_pipeline(train: Callable[..., Trained]) -> Trained:
    return train(make_pipeline(SimpleImputer(), LinearRegression()), *numeric_data())


@pytest.fixture(scope="session")
def churn_pipeline(train: Callable[..., Trained]) -> Trained:
    columns = ColumnTransformer(
        [
            ("numbers", make_pipeline(SimpleImputer(), StandardScaler()), ["tenure", "charges"]),
            ("contract", OneHotEncoder(handle_unknown="ignore"), ["contract"]),
        ]
    )
    return train(make_pipeline(columns, LogisticRegression()), *churn_data())


def frame_of(rows: pd.DataFrame, names: list[str] | None = None) -> Frame:
    """A frame as the REST layer builds it: float columns, strings as object columns."""
    columns = {}
    for column, name in zip(rows.columns, names or list(rows.columns), strict=True):
        values = rows[column].to_numpy()
        columns[name] = values.astype(object) if values.dtype.kind not in "fi" else values
    return Frame(columns)


def score(model: LoadedModel, frame: Frame) -> Frame:
    """What the serving layer does: conform to the signature, then predict."""
    return model.predict(conform(frame, model.signature))


def describe(model: LoadedModel) -> list[tuple[str, TensorType, bool]]:
    return [(s.name, s.type, s.accepts_missing) for s in model.signature.inputs]


class TestDataFrameRegressor:
    def test_names_come_from_feature_names_in(self, dataframe_regressor: Trained) -> None:
        model = dataframe_regressor.load()
        assert describe(model) == [(name, TensorType.Float64, False) for name in NUMERIC]
        assert [(s.name, s.type) for s in model.signature.outputs] == [
            ("prediction", TensorType.Float64)
        ]

    def test_predictions_equal_the_estimator(self, dataframe_regressor: Trained) -> None:
        rows = dataframe_regressor.rows
        result = score(dataframe_regressor.load(), frame_of(rows[list(reversed(NUMERIC))]))
        np.testing.assert_allclose(
            result["prediction"], dataframe_regressor.estimator.predict(rows), rtol=1e-12
        )

    def test_missing_value_is_refused(self, dataframe_regressor: Trained) -> None:
        rows = dataframe_regressor.rows.copy()
        rows.loc[3, "vacuum"] = np.nan
        with pytest.raises(InferenceRequestInvalidError, match="row 3") as caught:
            score(dataframe_regressor.load(), frame_of(rows))
        assert caught.value.field == "vacuum"

    def test_conflicting_feature_names_are_refused(self, dataframe_regressor: Trained) -> None:
        with pytest.raises(CreateServableRequestInvalidError, match="differ") as caught:
            dataframe_regressor.load(featureNames=["a", "b", "c"])
        assert caught.value.field == "flavor.Sklearn.featureNames"

    def test_needs_pandas(
        self, dataframe_regressor: Trained, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setitem(sys.modules, "pandas", None)  # makes the import fail
        with pytest.raises(FlavorUnavailable, match=r"'pandas'.*forestflow\[sklearn\]"):
            dataframe_regressor.load()


class TestArrayRegressor:
    def test_names_come_from_feature_names(self, array_regressor: Trained) -> None:
        model = array_regressor.load(featureNames=["t", "v", "p"])
        # scikit-learn trees take NaN (they learn a side for missing values)
        assert describe(model) == [(name, TensorType.Float64, True) for name in "tvp"]

    def test_predictions_equal_the_estimator(self, array_regressor: Trained) -> None:
        rows = array_regressor.rows
        result = score(array_regressor.load(featureNames=NUMERIC), frame_of(rows))
        expected = array_regressor.estimator.predict(rows.to_numpy())
        np.testing.assert_allclose(result["prediction"], expected, rtol=1e-12)

    def test_missing_value_reaches_the_trees(self, array_regressor: Trained) -> None:
        rows = array_regressor.rows.copy()
        rows.loc[0, "pressure"] = np.nan
        result = score(array_regressor.load(featureNames=NUMERIC), frame_of(rows))
        expected = array_regressor.estimator.predict(rows.to_numpy())
        np.testing.assert_allclose(result["prediction"], expected, rtol=1e-12)

    def test_without_names_takes_fields_in_request_order(self, array_regressor: Trained) -> None:
        model = array_regressor.load()
        assert model.signature.inputs == ()
        rows = array_regressor.rows
        result = score(model, frame_of(rows, ["x", "y", "z"]))
        expected = array_regressor.estimator.predict(rows.to_numpy())
        np.testing.assert_allclose(result["prediction"], expected, rtol=1e-12)

    def test_without_names_wrong_field_count_is_refused(self, array_regressor: Trained) -> None:
        rows = array_regressor.rows[NUMERIC[:2]]
        with pytest.raises(InferenceRequestInvalidError, match="expects 3") as caught:
            score(array_regressor.load(), frame_of(rows))
        assert "featureNames" in caught.value.message

    def test_wrong_number_of_feature_names_is_refused(self, array_regressor: Trained) -> None:
        with pytest.raises(CreateServableRequestInvalidError, match="3 features but 2"):
            array_regressor.load(featureNames=["a", "b"])


class TestStringClassifier:
    def test_outputs_label_and_one_probability_per_class(self, string_classifier: Trained) -> None:
        model = string_classifier.load(featureNames=NUMERIC)
        assert [(s.name, s.type) for s in model.signature.outputs] == [
            ("label", TensorType.String),
            ("high", TensorType.Float64),
            ("low", TensorType.Float64),
            ("mid", TensorType.Float64),
        ]

    def test_predictions_equal_the_estimator(self, string_classifier: Trained) -> None:
        estimator, rows = string_classifier.estimator, string_classifier.rows
        result = score(string_classifier.load(featureNames=NUMERIC), frame_of(rows))
        assert result["label"].dtype == object
        assert result["label"].tolist() == estimator.predict(rows.to_numpy()).tolist()
        probabilities = np.column_stack([result[str(c)] for c in estimator.classes_])
        np.testing.assert_allclose(
            probabilities, estimator.predict_proba(rows.to_numpy()), rtol=1e-12
        )

    def test_classifier_without_predict_proba_gives_only_the_label(
        self, train: Callable[..., Trained]
    ) -> None:
        features, target = numeric_data()
        trained = train(LinearSVC(random_state=SEED), features, (target > 0).astype(int))
        model = trained.load()
        assert [(s.name, s.type) for s in model.signature.outputs] == [("label", TensorType.Int64)]
        result = score(model, frame_of(trained.rows))
        assert result["label"].tolist() == trained.estimator.predict(trained.rows).tolist()


class TestImputingPipeline:
    def test_float_inputs_accept_missing(self, imputing_pipeline: Trained) -> None:
        model = imputing_pipeline.load()
        assert describe(model) == [(name, TensorType.Float64, True) for name in NUMERIC]

    def test_missing_and_left_out_values_are_imputed(self, imputing_pipeline: Trained) -> None:
        rows = imputing_pipeline.rows.copy()
        rows.loc[1, "temperature"] = np.nan
        expected = imputing_pipeline.estimator.predict(rows.assign(pressure=np.nan))
        result = score(imputing_pipeline.load(), frame_of(rows[["temperature", "vacuum"]]))
        np.testing.assert_allclose(result["prediction"], expected, rtol=1e-12)

    def test_pickle_file_with_other_suffix(self, train: Callable[..., Trained]) -> None:
        trained = train(
            make_pipeline(SimpleImputer(), LinearRegression()), *numeric_data(), file="model.bin"
        )
        result = score(trained.load(), frame_of(trained.rows))
        np.testing.assert_allclose(result["prediction"], trained.estimator.predict(trained.rows))


class TestColumnTransformerPipeline:
    def test_encoded_column_is_a_string_input(self, churn_pipeline: Trained) -> None:
        assert describe(churn_pipeline.load()) == [
            ("tenure", TensorType.Float64, True),
            ("charges", TensorType.Float64, True),
            ("contract", TensorType.String, False),
        ]

    def test_predictions_equal_the_estimator(self, churn_pipeline: Trained) -> None:
        estimator, rows = churn_pipeline.estimator, churn_pipeline.rows.copy()
        rows.loc[0, "tenure"] = np.nan
        rows.loc[2, "contract"] = "weekly"  # unseen: the encoder ignores it
        result = score(churn_pipeline.load(), frame_of(rows))
        assert [(s.name, s.type) for s in churn_pipeline.load().signature.outputs] == [
            ("label", TensorType.Int64),
            ("0", TensorType.Float64),
            ("1", TensorType.Float64),
        ]
        assert result["label"].tolist() == estimator.predict(rows).tolist()
        probabilities = np.column_stack([result["0"], result["1"]])
        np.testing.assert_allclose(probabilities, estimator.predict_proba(rows), rtol=1e-12)

    def test_missing_string_is_refused(self, churn_pipeline: Trained) -> None:
        frame = frame_of(churn_pipeline.rows[["tenure", "charges"]])
        with pytest.raises(InferenceRequestInvalidError) as caught:
            score(churn_pipeline.load(), frame)
        assert caught.value.field == "contract"

    def test_number_for_string_input_is_refused(self, churn_pipeline: Trained) -> None:
        frame = frame_of(churn_pipeline.rows.assign(contract=1.0))
        with pytest.raises(InferenceRequestInvalidError, match="String") as caught:
            score(churn_pipeline.load(), frame)
        assert caught.value.field == "contract"


class TestOtherShapes:
    def test_hist_gradient_boosting_takes_missing(self, train: Callable[..., Trained]) -> None:
        trained = train(
            HistGradientBoostingRegressor(max_iter=10, random_state=SEED), *numeric_data()
        )
        model = trained.load()
        assert all(spec.accepts_missing for spec in model.signature.inputs)
        rows = trained.rows.assign(vacuum=np.nan)
        result = score(model, frame_of(rows))
        np.testing.assert_allclose(
            result["prediction"], trained.estimator.predict(rows), rtol=1e-12
        )

    def test_multi_output_regressor(self, train: Callable[..., Trained]) -> None:
        features, target = numeric_data()
        trained = train(LinearRegression(), features, np.column_stack([target, -target]))
        model = trained.load()
        assert [s.name for s in model.signature.outputs] == ["prediction_0", "prediction_1"]
        result = score(model, frame_of(trained.rows))
        expected = trained.estimator.predict(trained.rows)
        np.testing.assert_allclose(
            np.column_stack([result["prediction_0"], result["prediction_1"]]), expected
        )


class TestLoadErrors:
    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(CreateServableRequestInvalidError, match="not found") as caught:
            SklearnFlavor("model.joblib").load(tmp_path, TRUSTING)
        assert caught.value.field == "flavor.Sklearn.modelPath"

    def test_path_escaping_the_directory(self, dataframe_regressor: Trained) -> None:
        inner = dataframe_regressor.directory / "inner"
        inner.mkdir(exist_ok=True)
        with pytest.raises(CreateServableRequestInvalidError, match="outside"):
            SklearnFlavor("../model.joblib").load(inner, TRUSTING)

    @pytest.mark.parametrize(
        ("file", "content"),
        [
            ("model.joblib", np.random.default_rng(5).bytes(1024)),
            ("model.pkl", b"not a pickle at all"),
            ("model.pickle", pickle.dumps(LinearRegression())[:40]),
            ("model.sav", b"\x80\x05garbage"),
        ],
        ids=["random-joblib", "text-pkl", "truncated-pickle", "garbage-other-suffix"],
    )
    def test_corrupt_file_warns_about_trust(
        self, file: str, content: bytes, tmp_path: Path
    ) -> None:
        (tmp_path / file).write_bytes(content)
        with pytest.raises(
            CreateServableRequestInvalidError, match="could not be unpickled"
        ) as caught:
            SklearnFlavor(file).load(tmp_path, TRUSTING)
        assert "execute code when loaded" in caught.value.message
        assert "trusted source" in caught.value.message
        assert "\n" not in caught.value.message

    def test_object_without_predict(self, tmp_path: Path) -> None:
        joblib.dump({"weights": [1.0, 2.0]}, tmp_path / "model.joblib")
        with pytest.raises(CreateServableRequestInvalidError, match="no predict method"):
            SklearnFlavor("model.joblib").load(tmp_path, TRUSTING)

    def test_directory_instead_of_file(self, tmp_path: Path) -> None:
        (tmp_path / "model.joblib").mkdir()
        with pytest.raises(CreateServableRequestInvalidError, match="directory"):
            SklearnFlavor("model.joblib").load(tmp_path, TRUSTING)

    def test_missing_scikit_learn_names_the_extra(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        (tmp_path / "model.joblib").write_bytes(b"")
        monkeypatch.setitem(sys.modules, "joblib", None)  # makes the import fail
        with pytest.raises(FlavorUnavailable, match=r"'joblib'.*forestflow\[sklearn\]"):
            SklearnFlavor("model.joblib").load(tmp_path, TRUSTING)


class TestSkops:
    def test_skops_file_loads_under_the_default_policy(self, train: Callable[..., Trained]) -> None:
        trained = train(
            make_pipeline(StandardScaler(), LinearRegression()), *numeric_data(), file="m.skops"
        )
        model = trained.load(LoadPolicy())
        assert describe(model) == [(name, TensorType.Float64, False) for name in NUMERIC]
        result = score(model, frame_of(trained.rows))
        np.testing.assert_allclose(
            result["prediction"], trained.estimator.predict(trained.rows), rtol=1e-12
        )

    def test_untrusted_types_are_refused_naming_them(self, train: Callable[..., Trained]) -> None:
        forest = RandomForestRegressor(n_estimators=3, max_depth=3, random_state=SEED)
        trained = train(forest, *numeric_data(), file="forest.skops")
        with pytest.raises(CreateServableRequestInvalidError) as caught:
            trained.load(TRUSTING)  # allowing pickles trusts no skops type
        assert caught.value.field == "flavor.Sklearn.modelPath"
        assert f"holds types skops does not trust: {TREE}" in caught.value.message
        assert "server setting security.skops_trusted_types" in caught.value.message

    def test_the_servers_trusted_types_let_the_model_load(
        self, train: Callable[..., Trained]
    ) -> None:
        forest = RandomForestRegressor(n_estimators=3, max_depth=3, random_state=SEED)
        trained = train(forest, *numeric_data(), file="forest.skops")
        result = score(
            trained.load(LoadPolicy(skops_trusted_types=(TREE,))), frame_of(trained.rows)
        )
        np.testing.assert_allclose(
            result["prediction"], trained.estimator.predict(trained.rows), rtol=1e-12
        )

    def test_custom_type_loads_only_when_the_server_trusts_it(self, tmp_path: Path) -> None:
        features, target = numeric_data()
        estimator = Halver().fit(features.to_numpy(), target)
        skops.io.dump(estimator, tmp_path / "model.skops")
        with pytest.raises(CreateServableRequestInvalidError) as caught:
            SklearnFlavor("model.skops").load(tmp_path, LoadPolicy(skops_trusted_types=(TREE,)))
        assert f"does not trust: {HALVER}" in caught.value.message
        model = SklearnFlavor("model.skops").load(
            tmp_path, LoadPolicy(skops_trusted_types=(HALVER,))
        )
        result = score(model, frame_of(features.head(3)))
        np.testing.assert_allclose(result["prediction"], features["temperature"].head(3) / 2)

    def test_skops_content_is_read_whatever_the_name(self, tmp_path: Path) -> None:
        estimator = LinearRegression().fit(*numeric_data())
        skops.io.dump(estimator, tmp_path / "model.bin")
        for flavor in (
            SklearnFlavor("model.bin"),
            SklearnFlavor("model.bin", serialization_format="skops"),
        ):
            model = flavor.load(tmp_path, LoadPolicy())
            assert [s.name for s in model.signature.inputs] == NUMERIC

    def test_forced_pickle_format_reads_a_skops_file_as_a_pickle(self, tmp_path: Path) -> None:
        skops.io.dump(LinearRegression().fit(*numeric_data()), tmp_path / "model.skops")
        flavor = SklearnFlavor("model.skops", serialization_format="pickle")
        with pytest.raises(CreateServableRequestInvalidError, match="could not be unpickled"):
            flavor.load(tmp_path, TRUSTING)

    @pytest.mark.parametrize("fmt", ["cloudpickle", "pickle", "PICKLE"])
    def test_pickle_formats(self, dataframe_regressor: Trained, fmt: str) -> None:
        model = dataframe_regressor.load(serializationFormat=fmt)
        assert [s.name for s in model.signature.inputs] == NUMERIC
        with pytest.raises(CreateServableRequestInvalidError, match="is a pickle"):
            dataframe_regressor.load(LoadPolicy(), serializationFormat=fmt)

    def test_unknown_format_is_refused(self, dataframe_regressor: Trained) -> None:
        with pytest.raises(CreateServableRequestInvalidError, match="'dill'") as caught:
            dataframe_regressor.load(serializationFormat="dill")
        assert caught.value.field == "flavor.Sklearn.serializationFormat"
        assert "cloudpickle, pickle, skops" in caught.value.message

    @pytest.mark.parametrize(
        "content",
        [b"not a zip file", b"PK\x03\x04truncated"],
        ids=["text", "truncated-zip"],
    )
    def test_corrupt_skops_file(self, tmp_path: Path, content: bytes) -> None:
        (tmp_path / "model.skops").write_bytes(content)
        with pytest.raises(CreateServableRequestInvalidError, match="as a skops file") as caught:
            SklearnFlavor("model.skops").load(tmp_path, TRUSTING)
        assert caught.value.field == "flavor.Sklearn.modelPath"
        assert "\n" not in caught.value.message
        assert str(tmp_path) not in caught.value.message

    def test_missing_skops_names_the_extra(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        (tmp_path / "model.skops").write_bytes(b"")
        monkeypatch.setitem(sys.modules, "skops.io", None)  # makes the import fail
        with pytest.raises(FlavorUnavailable, match=r"'skops'.*forestflow\[mlflow\]"):
            SklearnFlavor("model.skops").load(tmp_path, TRUSTING)

    def test_mlflow_skops_fixture_with_the_servers_trusted_types(self) -> None:
        reference = json.loads((MLFLOW_RF / "expected.json").read_text())
        # its MLmodel lists the tree type in skops_trusted_types: that trusts nothing here
        flavor = flavor_from_mlmodel(MLFLOW_RF)
        with pytest.raises(CreateServableRequestInvalidError, match=f"does not trust: {TREE}"):
            flavor.load(MLFLOW_RF, LoadPolicy())
        model = flavor.load(MLFLOW_RF, LoadPolicy(skops_trusted_types=(TREE,)))
        assert model.signature.input_names == reference["features"]
        rows = pd.DataFrame(reference["rows"], columns=reference["features"])
        result = score(model, frame_of(rows))
        np.testing.assert_allclose(
            result["prediction"], reference["predictions"], rtol=reference["tolerance_rel"]
        )

    def test_mlflow_cloudpickle_fixture(self) -> None:
        reference = json.loads((MLFLOW_LOGREG / "expected.json").read_text())
        flavor = SklearnFlavor("model.pkl", serialization_format="cloudpickle")
        rows = pd.DataFrame(reference["rows"], columns=reference["features"])
        result = score(flavor.load(MLFLOW_LOGREG, TRUSTING), frame_of(rows))
        assert result["label"].tolist() == reference["predictions"]
        probabilities = np.column_stack([result[name] for name in reference["native"]["classes"]])
        np.testing.assert_allclose(
            probabilities, reference["native"]["predict_proba"], rtol=reference["tolerance_rel"]
        )


UNSAFE_SETTING = (
    "; the server refuses them unless the operator sets security.allow_unsafe_formats "
    "(FORESTFLOW_SECURITY__ALLOW_UNSAFE_FORMATS=true)"
)
# A pickle that would create a marker file as it is unpickled, as each file and format.
MALICIOUS = [
    ("model.joblib", {}),
    ("model.pkl", {}),
    ("model.bin", {}),
    ("model.skops", {}),  # a pickle renamed: the content says what it is
    ("model.skops", {"serializationFormat": "pickle"}),
    ("model.joblib", {"serializationFormat": "cloudpickle"}),
]
MALICIOUS_IDS = ["joblib", "pkl", "other-suffix", "named-skops", "forced-pickle", "cloudpickle"]


class TestSafeLoading:
    @staticmethod
    def artifact(tmp_path: Path, file: str, content: bytes) -> Path:
        directory = tmp_path / "artifact"
        directory.mkdir()
        (directory / file).write_bytes(content)
        return directory

    @pytest.mark.parametrize(("file", "fields"), MALICIOUS, ids=MALICIOUS_IDS)
    def test_a_pickle_is_refused_by_default_before_it_runs(
        self, tmp_path: Path, file: str, fields: dict[str, str]
    ) -> None:
        marker = tmp_path / "ran"
        directory = self.artifact(tmp_path, file, pickle.dumps(TouchOnLoad(marker)))
        flavor = parse_flavor({"Sklearn": {"modelPath": file, **fields}})
        with pytest.raises(CreateServableRequestInvalidError) as caught:
            flavor.load(directory, LoadPolicy())
        assert not marker.exists()
        assert caught.value.field == "flavor.Sklearn.modelPath"
        forced = fields.get("serializationFormat")
        given = f" (serializationFormat {forced!r})" if forced else ""
        assert caught.value.message == (
            f"{file!r} is a pickle{given}, and pickles run code when loaded{UNSAFE_SETTING}"
        )

    @pytest.mark.parametrize(("file", "fields"), MALICIOUS, ids=MALICIOUS_IDS)
    def test_the_same_pickle_runs_when_the_operator_allows_it(
        self, tmp_path: Path, file: str, fields: dict[str, str]
    ) -> None:
        marker = tmp_path / "ran"
        directory = self.artifact(tmp_path, file, pickle.dumps(TouchOnLoad(marker)))
        flavor = parse_flavor({"Sklearn": {"modelPath": file, **fields}})
        with pytest.raises(CreateServableRequestInvalidError, match="NoneType, which has no"):
            flavor.load(directory, TRUSTING)  # Path.touch returns None: not a model
        assert marker.exists()  # so the policy check is what stopped it above

    def test_the_exact_message(self, tmp_path: Path) -> None:
        directory = self.artifact(tmp_path, "model.joblib", pickle.dumps(TouchOnLoad(tmp_path)))
        with pytest.raises(CreateServableRequestInvalidError) as caught:
            SklearnFlavor("model.joblib").load(directory, LoadPolicy())
        assert caught.value.message == (
            "'model.joblib' is a pickle, and pickles run code when loaded; the server refuses "
            "them unless the operator sets security.allow_unsafe_formats "
            "(FORESTFLOW_SECURITY__ALLOW_UNSAFE_FORMATS=true)"
        )

    def test_a_pickle_with_a_zip_appended_is_still_a_pickle(self, tmp_path: Path) -> None:
        marker = tmp_path / "ran"
        archive = skops.io.dumps(LinearRegression().fit(*numeric_data()))
        content = pickle.dumps(TouchOnLoad(marker)) + archive  # also a valid zip archive
        directory = self.artifact(tmp_path, "model.skops", content)
        assert zipfile.is_zipfile(directory / "model.skops")
        with pytest.raises(CreateServableRequestInvalidError, match="is a pickle"):
            SklearnFlavor("model.skops").load(directory, LoadPolicy())
        assert not marker.exists()

    @pytest.mark.parametrize("policy", [LoadPolicy(), TRUSTING], ids=["default", "trusting"])
    def test_the_skops_format_never_unpickles(self, tmp_path: Path, policy: LoadPolicy) -> None:
        marker = tmp_path / "ran"
        directory = self.artifact(tmp_path, "model.pkl", pickle.dumps(TouchOnLoad(marker)))
        flavor = SklearnFlavor("model.pkl", serialization_format="skops")
        with pytest.raises(CreateServableRequestInvalidError, match="as a skops file"):
            flavor.load(directory, policy)
        assert not marker.exists()

    def test_a_skops_file_forced_to_pickle_is_refused(self, tmp_path: Path) -> None:
        content = skops.io.dumps(LinearRegression().fit(*numeric_data()))
        directory = self.artifact(tmp_path, "model.skops", content)
        flavor = SklearnFlavor("model.skops", serialization_format="cloudpickle")
        with pytest.raises(CreateServableRequestInvalidError, match="is a pickle"):
            flavor.load(directory, LoadPolicy())

    @pytest.mark.parametrize(
        "policy",
        [LoadPolicy(), LoadPolicy(allow_unsafe_formats=True, skops_trusted_types=(TREE,))],
        ids=["default", "trusting"],
    )
    def test_trusted_types_in_the_request_are_refused(
        self, dataframe_regressor: Trained, policy: LoadPolicy
    ) -> None:
        with pytest.raises(CreateServableRequestInvalidError) as caught:
            dataframe_regressor.load(policy, skopsTrustedTypes=[TREE])
        assert caught.value.field == "flavor.Sklearn.skopsTrustedTypes"
        assert "server setting security.skops_trusted_types" in caught.value.message
        assert "FORESTFLOW_SECURITY__SKOPS_TRUSTED_TYPES" in caught.value.message


class TestFlavorValue:
    def test_decodes_camel_and_snake_case(self) -> None:
        camel = parse_flavor({"Sklearn": {"modelPath": "m.joblib", "featureNames": ["a"]}})
        snake = parse_flavor({"type": "sklearn", "model_path": "m.joblib", "feature_names": ["a"]})
        assert camel == snake == SklearnFlavor("m.joblib", ("a",))

    def test_decodes_the_serialization_fields(self) -> None:
        camel = parse_flavor(
            {
                "Sklearn": {
                    "modelPath": "m.skops",
                    "serializationFormat": "skops",
                    "skopsTrustedTypes": [TREE],
                }
            }
        )
        snake = parse_flavor(
            {
                "type": "Sklearn",
                "model_path": "m.skops",
                "serialization_format": "skops",
                "skops_trusted_types": [TREE],
            }
        )
        assert camel == snake == SklearnFlavor("m.skops", (), "skops", (TREE,))
