"""The XGBoost flavor on the real MLflow fixture booster and on boosters trained here."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from forestflow.domain.frame import Frame, TensorType
from forestflow.domain.signature import conform
from forestflow.errors import (
    CreateServableRequestInvalidError,
    FlavorUnavailable,
    InferenceRequestInvalidError,
)
from forestflow.flavors.base import LoadedModel, LoadPolicy, parse_flavor
from forestflow.flavors.xgboost_booster import XGBoostFlavor

FIXTURE = (
    Path(__file__).parents[2] / "fixtures" / "mlflow" / "xgboost" / "xgb_breast_cancer_booster"
)
SEED = 1234
NAMES = ["temperature", "vacuum", "pressure", "humidity"]
FIELD = "flavor.XGBoost.modelPath"


def expected_json() -> dict[str, Any]:
    return json.loads((FIXTURE / "expected.json").read_text())


def fixture_rows() -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in expected_json()["rows"]])


def frame_of(names: Sequence[str], rows: np.ndarray) -> Frame:
    return Frame({name: rows[:, i] for i, name in enumerate(names)})


def score(model: LoadedModel, frame: Frame) -> Frame:
    """What the serving layer does: conform to the signature, then predict."""
    return model.predict(conform(frame, model.signature))


def load(directory: Path, file: str, **fields: object) -> LoadedModel:
    """Decode the flavor from wire JSON, as a serve request would, and load it."""
    return parse_flavor({"XGBoost": {"modelPath": file, **fields}}).load(directory, LoadPolicy())


def data(rows: int = 200) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(SEED)
    features = rng.normal(size=(rows, len(NAMES)))
    target = features @ np.array([1.5, -2.0, 0.5, 1.0]) + rng.normal(0, 0.1, rows)
    return features, target


@dataclass(frozen=True)
class Trained:
    """A booster trained here, the directory it was saved to, and rows to score."""

    booster: xgb.Booster
    directory: Path
    file: str
    names: list[str] | None
    rows: np.ndarray

    def load(self, **fields: object) -> LoadedModel:
        return load(self.directory, self.file, **fields)

    def reference(self, rows: np.ndarray) -> np.ndarray:
        """xgboost's own answer through a DMatrix, NaN = missing."""
        matrix = xgb.DMatrix(rows, missing=np.nan, feature_names=self.names)
        return np.asarray(self.booster.predict(matrix), dtype=np.float64)


@pytest.fixture(scope="session")
def train(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Trained]:
    """Factory: train a small booster on fixed-seed data and save it (UBJSON by default)."""

    def make(
        params: dict[str, Any],
        target: np.ndarray | None = None,
        *,
        names: bool = True,
        file: str = "model.ubj",
        rounds: int = 4,
    ) -> Trained:
        features, regression = data()
        labels = regression if target is None else target
        matrix = xgb.DMatrix(features, label=labels, feature_names=NAMES if names else None)
        booster = xgb.train({"nthread": 1, "seed": SEED, **params}, matrix, rounds)
        directory = tmp_path_factory.mktemp("xgboost")
        raw = booster.save_raw(raw_format="json" if file.endswith(".json") else "ubj")
        (directory / file).write_bytes(bytes(raw))
        rows = features[:12].copy()
        return Trained(booster, directory, file, NAMES if names else None, rows)

    return make


def classes(count: int) -> np.ndarray:
    _, target = data()
    return np.digitize(target, np.quantile(target, np.linspace(0, 1, count + 1)[1:-1]))


@pytest.fixture(scope="session")
def regressor(train: Callable[..., Trained]) -> Trained:
    return train({"objective": "reg:squarederror"})


@pytest.fixture(scope="session")
def unnamed_classifier(train: Callable[..., Trained]) -> Trained:
    return train({"objective": "binary:logistic"}, classes(2), names=False)


@pytest.fixture(scope="session")
def fixture_model() -> LoadedModel:
    return load(FIXTURE, "model.ubj")


class TestBreastCancerFixture:
    def test_inputs_are_the_booster_feature_names(self, fixture_model: LoadedModel) -> None:
        inputs = fixture_model.signature.inputs
        assert [spec.name for spec in inputs] == expected_json()["features"]
        assert {(spec.type, spec.accepts_missing) for spec in inputs} == {
            (TensorType.Float64, True)
        }

    def test_outputs_are_label_and_class_probabilities(self, fixture_model: LoadedModel) -> None:
        assert [(s.name, s.type) for s in fixture_model.signature.outputs] == [
            ("label", TensorType.Int64),
            ("0", TensorType.Float64),
            ("1", TensorType.Float64),
        ]

    def test_predictions_equal_the_fixture(self, fixture_model: LoadedModel) -> None:
        facts = expected_json()
        rows = fixture_rows()
        assert np.isnan(rows[8:10]).any(axis=1).all()  # rows 8 and 9 carry missing values
        result = score(fixture_model, frame_of(facts["features"], rows))
        want = np.array(facts["predictions"])
        np.testing.assert_allclose(result["1"], want, rtol=facts["tolerance_rel"])
        np.testing.assert_allclose(result["0"], 1 - want, rtol=1e-6)
        assert result["label"].tolist() == (want > 0.5).astype(int).tolist()
        assert result["label"].dtype == np.int64

    def test_left_out_feature_is_a_missing_value(self, fixture_model: LoadedModel) -> None:
        facts = expected_json()
        rows = fixture_rows()[8:9]
        assert np.isnan(rows[0, 0])  # row 8 has no "mean radius"
        names = facts["features"]
        frame = Frame({name: rows[:, i] for i, name in enumerate(names) if i != 0})
        result = score(fixture_model, frame)
        np.testing.assert_allclose(result["1"], facts["predictions"][8:9], rtol=1e-9)

    def test_feature_names_equal_to_the_booster_s_are_accepted(self) -> None:
        names = expected_json()["features"]
        model = load(FIXTURE, "model.ubj", featureNames=list(reversed(names)))
        assert model.signature.input_names == names  # the booster's order wins

    def test_conflicting_feature_names_are_refused(self) -> None:
        names = [f"f{i}" for i in range(30)]
        with pytest.raises(CreateServableRequestInvalidError, match="differ") as caught:
            load(FIXTURE, "model.ubj", featureNames=names)
        assert caught.value.field == "flavor.XGBoost.featureNames"

    def test_concurrent_scoring_gives_the_same_answers(self, fixture_model: LoadedModel) -> None:
        frame = conform(
            frame_of(expected_json()["features"], fixture_rows()), fixture_model.signature
        )
        alone = fixture_model.predict(frame)["1"]
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(lambda _: fixture_model.predict(frame)["1"], range(32)))
        for result in results:
            np.testing.assert_array_equal(result, alone)


OBJECTIVES = [
    pytest.param({"objective": "reg:squarederror"}, None, ["prediction"], id="regression"),
    pytest.param({"objective": "count:poisson"}, "counts", ["prediction"], id="poisson"),
    pytest.param({"booster": "gblinear"}, None, ["prediction"], id="gblinear"),
    pytest.param({"objective": "binary:logistic"}, 2, ["label", "0", "1"], id="binary-logistic"),
    pytest.param({"objective": "binary:hinge"}, 2, ["label"], id="binary-hinge"),
    pytest.param(
        {"objective": "multi:softprob", "num_class": 3}, 3, ["label", "0", "1", "2"], id="softprob"
    ),
    pytest.param({"objective": "multi:softmax", "num_class": 3}, 3, ["label"], id="softmax"),
    pytest.param(
        {"objective": "reg:quantileerror", "quantile_alpha": [0.2, 0.8]},
        None,
        ["prediction_0", "prediction_1"],
        id="two-quantiles",
    ),
    pytest.param(
        {"objective": "reg:squarederror", "tree_method": "hist"},
        "two-targets",
        ["prediction_0", "prediction_1"],
        id="multi-target",
    ),
]


def target_for(kind: int | str | None) -> np.ndarray | None:
    _, target = data()
    if kind == "counts":
        return np.round(np.exp(target / 4))
    if kind == "two-targets":
        return np.column_stack([target, -2 * target])
    return classes(kind) if isinstance(kind, int) else None


class TestObjectives:
    @pytest.mark.parametrize(("params", "target", "columns"), OBJECTIVES)
    def test_outputs_follow_the_objective(
        self,
        train: Callable[..., Trained],
        params: dict[str, Any],
        target: int | str | None,
        columns: list[str],
    ) -> None:
        trained = train(params, target_for(target))
        model = trained.load()
        assert [spec.name for spec in model.signature.outputs] == columns
        result = score(model, frame_of(NAMES, trained.rows))
        assert result.names == columns
        reference = trained.reference(trained.rows)
        if columns == ["label"]:
            np.testing.assert_array_equal(result["label"], reference.astype(np.int64))
        elif columns[0] == "label":
            probabilities = np.column_stack([result[name] for name in columns[1:]])
            if reference.ndim == 1:  # binary:logistic: P(class 1)
                reference = np.column_stack([1 - reference, reference])
            np.testing.assert_allclose(probabilities, reference, rtol=1e-6)
            np.testing.assert_array_equal(result["label"], np.argmax(reference, axis=1))
        else:
            values = np.column_stack([result[name] for name in columns])
            np.testing.assert_allclose(values, reference.reshape(len(values), -1), rtol=1e-6)
        assert all(result[name].dtype == np.float64 for name in columns if name != "label")


class TestMissingValues:
    def test_null_and_left_out_fields_are_nan(self, regressor: Trained) -> None:
        rows = regressor.rows.copy()
        rows[2, 1] = np.nan
        model = regressor.load()
        frame = Frame({name: rows[:, i] for i, name in enumerate(NAMES) if name != "humidity"})
        result = score(model, frame)
        rows[:, 3] = np.nan
        reference = regressor.reference(rows)
        np.testing.assert_allclose(result["prediction"], reference, rtol=1e-6)
        assert np.unique(result["prediction"]).size > 1

    def test_misspelt_field_is_refused_not_taken_as_missing(self, regressor: Trained) -> None:
        frame = frame_of(["temperature", "vacum", "pressure", "humidity"], regressor.rows)
        with pytest.raises(InferenceRequestInvalidError, match="vacum") as caught:
            score(regressor.load(), frame)
        assert caught.value.field == "vacuum"

    def test_integer_fields_are_cast(self, regressor: Trained) -> None:
        rows = np.round(regressor.rows * 10)
        frame = Frame({name: rows[:, i].astype(np.int64) for i, name in enumerate(NAMES)})
        result = score(regressor.load(), frame)
        np.testing.assert_allclose(result["prediction"], regressor.reference(rows), rtol=1e-6)


class TestUnnamedBooster:
    def test_feature_names_name_the_inputs(self, unnamed_classifier: Trained) -> None:
        model = unnamed_classifier.load(featureNames=["a", "b", "c", "d"])
        assert model.signature.input_names == ["a", "b", "c", "d"]
        rows = unnamed_classifier.rows
        frame = Frame({name: rows[:, i] for i, name in reversed(list(enumerate("abcd")))})
        result = score(model, frame)
        np.testing.assert_allclose(result["1"], unnamed_classifier.reference(rows), rtol=1e-6)

    def test_without_names_takes_fields_in_request_order(self, unnamed_classifier: Trained) -> None:
        model = unnamed_classifier.load()
        assert model.signature.inputs == ()
        rows = unnamed_classifier.rows.copy()
        rows[0, 2] = np.nan
        result = score(model, frame_of(["w", "x", "y", "z"], rows))
        np.testing.assert_allclose(result["1"], unnamed_classifier.reference(rows), rtol=1e-6)

    def test_without_names_wrong_field_count_is_refused(self, unnamed_classifier: Trained) -> None:
        frame = frame_of(["w", "x", "y"], unnamed_classifier.rows[:, :3])
        with pytest.raises(InferenceRequestInvalidError, match="expects 4") as caught:
            score(unnamed_classifier.load(), frame)
        assert "featureNames" in caught.value.message

    @pytest.mark.parametrize(
        ("names", "message"),
        [(["a", "b"], "4 features but 2"), (["a", "a", "b", "c"], "repeat")],
        ids=["too-few", "repeated"],
    )
    def test_bad_feature_names_are_refused(
        self, unnamed_classifier: Trained, names: list[str], message: str
    ) -> None:
        with pytest.raises(CreateServableRequestInvalidError, match=message) as caught:
            unnamed_classifier.load(featureNames=names)
        assert caught.value.field == "flavor.XGBoost.featureNames"


class TestModelFiles:
    @pytest.mark.parametrize("file", ["model.json", "model.bin", "booster"])
    def test_json_and_any_file_name_load(self, train: Callable[..., Trained], file: str) -> None:
        trained = train({"objective": "reg:squarederror"}, file=file)
        result = score(trained.load(), frame_of(NAMES, trained.rows))
        np.testing.assert_allclose(result["prediction"], trained.reference(trained.rows))

    def test_closed_model_refuses_to_score(self, regressor: Trained) -> None:
        model = regressor.load()
        frame = conform(frame_of(NAMES, regressor.rows), model.signature)
        model.close()
        with pytest.raises(RuntimeError, match="closed"):
            model.predict(frame)


class TestCategoricalFeatures:
    def test_integer_coded_categories_take_the_code(
        self, tmp_path_factory: pytest.TempPathFactory
    ) -> None:
        features, target = data()
        codes = np.floor(np.abs(features[:, 3]) * 2).clip(0, 3)
        matrix = np.column_stack([features[:, :3], codes])
        dmatrix = xgb.DMatrix(
            matrix,
            label=target + codes,
            feature_names=NAMES,
            feature_types=["q", "q", "q", "c"],
            enable_categorical=True,
        )
        booster = xgb.train({"nthread": 1, "tree_method": "hist"}, dmatrix, 4)
        directory = tmp_path_factory.mktemp("categorical-codes")
        (directory / "model.ubj").write_bytes(bytes(booster.save_raw(raw_format="ubj")))
        model = load(directory, "model.ubj")
        humidity = model.signature.inputs[3]
        assert (humidity.type, humidity.accepts_missing) == (TensorType.Float64, True)
        assert "category code" in humidity.description
        result = score(model, frame_of(NAMES, matrix[:12]))
        reference = booster.predict(
            xgb.DMatrix(
                matrix[:12],
                feature_names=NAMES,
                feature_types=["q", "q", "q", "c"],
                enable_categorical=True,
            )
        )
        np.testing.assert_allclose(result["prediction"], reference, rtol=1e-6)

    def test_stored_categories_are_refused(self, tmp_path: Path) -> None:
        features, target = data()
        frame = pd.DataFrame(features[:, :3], columns=NAMES[:3]).assign(
            colour=pd.Categorical(np.where(features[:, 3] > 0, "red", "blue"))
        )
        dmatrix = xgb.DMatrix(frame, label=target, enable_categorical=True)
        booster = xgb.train({"nthread": 1, "tree_method": "hist"}, dmatrix, 2)
        (tmp_path / "model.ubj").write_bytes(bytes(booster.save_raw(raw_format="ubj")))
        with pytest.raises(CreateServableRequestInvalidError, match=r"\['colour'\]") as caught:
            load(tmp_path, "model.ubj")
        assert "integer category codes" in caught.value.message


def damaged_json(trained: Trained, damage: Callable[[dict[str, Any]], None]) -> bytes:
    model = json.loads(bytes(trained.booster.save_raw(raw_format="json")))
    damage(model["learner"]["gradient_booster"]["model"]["trees"][1])
    return json.dumps(model).encode()


def loop_to_root(tree: dict[str, Any]) -> None:
    tree["left_children"][1] = 0  # node 1 leads back to the root


def unknown_feature(tree: dict[str, Any]) -> None:
    tree["split_indices"][0] = 99


class TestLoadErrors:
    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(CreateServableRequestInvalidError, match="not found") as caught:
            XGBoostFlavor("model.ubj").load(tmp_path, LoadPolicy())
        assert caught.value.field == FIELD

    def test_path_escaping_the_directory(self, tmp_path: Path) -> None:
        (tmp_path / "model.ubj").write_bytes((FIXTURE / "model.ubj").read_bytes())
        (tmp_path / "inner").mkdir()
        with pytest.raises(CreateServableRequestInvalidError, match="outside") as caught:
            XGBoostFlavor("../model.ubj").load(tmp_path / "inner", LoadPolicy())
        assert caught.value.field == FIELD

    def test_directory_instead_of_file(self, tmp_path: Path) -> None:
        (tmp_path / "model.ubj").mkdir()
        with pytest.raises(CreateServableRequestInvalidError, match="directory"):
            XGBoostFlavor("model.ubj").load(tmp_path, LoadPolicy())

    @pytest.mark.parametrize(
        ("content", "reason"),
        [
            (b"", "empty"),
            (b"{", "too short"),
            (b"not a model at all", "Unknown construct"),
            (np.random.default_rng(3).bytes(2048), "Invalid model format"),
            (b'{"learner": {"attributes": {}}', "EOF"),
        ],
        ids=["empty", "one-byte", "text", "random-bytes", "truncated-json"],
    )
    def test_corrupt_file(self, tmp_path: Path, content: bytes, reason: str) -> None:
        (tmp_path / "model.ubj").write_bytes(content)
        with pytest.raises(CreateServableRequestInvalidError, match=reason) as caught:
            XGBoostFlavor("model.ubj").load(tmp_path, LoadPolicy())
        assert "not a valid XGBoost model" in caught.value.message
        assert "\n" not in caught.value.message
        assert "workspace" not in caught.value.message  # xgboost's source paths are cut

    # Cut points where xgboost itself, fed the bytes, crashes (1000), hangs (100, read from a
    # file) or loads a part of the model (23600): each must be a clean refusal instead.
    @pytest.mark.parametrize("size", [2, 3, 100, 1000, 5000, 23600])
    def test_truncated_ubjson_is_refused(self, tmp_path: Path, size: int) -> None:
        (tmp_path / "model.ubj").write_bytes((FIXTURE / "model.ubj").read_bytes()[:size])
        with pytest.raises(CreateServableRequestInvalidError, match="malformed UBJSON"):
            XGBoostFlavor("model.ubj").load(tmp_path, LoadPolicy())

    def test_trailing_bytes_after_ubjson_are_refused(self, tmp_path: Path) -> None:
        (tmp_path / "model.ubj").write_bytes((FIXTURE / "model.ubj").read_bytes() + b"\x00\x01")
        with pytest.raises(CreateServableRequestInvalidError, match="stray bytes"):
            XGBoostFlavor("model.ubj").load(tmp_path, LoadPolicy())

    @pytest.mark.parametrize(
        ("damage", "reason"),
        [(loop_to_root, "points outside the tree"), (unknown_feature, "outside 0..3")],
        ids=["loop", "unknown-feature"],
    )
    def test_damaged_tree_is_refused_before_it_scores(
        self,
        regressor: Trained,
        tmp_path: Path,
        damage: Callable[[dict[str, Any]], None],
        reason: str,
    ) -> None:
        (tmp_path / "model.json").write_bytes(damaged_json(regressor, damage))
        with pytest.raises(CreateServableRequestInvalidError, match=reason) as caught:
            XGBoostFlavor("model.json").load(tmp_path, LoadPolicy())
        assert "tree 1 is damaged" in caught.value.message

    def test_feature_name_that_is_not_utf8_is_refused(
        self, regressor: Trained, tmp_path: Path
    ) -> None:
        raw = bytes(regressor.booster.save_raw(raw_format="json"))
        (tmp_path / "model.json").write_bytes(raw.replace(b'"vacuum"', b'"vac\xffum"'))
        with pytest.raises(CreateServableRequestInvalidError, match="utf-8"):
            XGBoostFlavor("model.json").load(tmp_path, LoadPolicy())

    def test_missing_xgboost_names_the_extra(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        (tmp_path / "model.ubj").write_bytes(b"{}")
        monkeypatch.setitem(sys.modules, "xgboost", None)  # makes the import fail
        with pytest.raises(FlavorUnavailable, match=r"'xgboost'.*forestflow\[xgboost\]"):
            XGBoostFlavor("model.ubj").load(tmp_path, LoadPolicy())


class TestFlavorValue:
    def test_decodes_camel_and_snake_case(self) -> None:
        camel = parse_flavor({"XGBoost": {"modelPath": "m.ubj", "featureNames": ["a"]}})
        snake = parse_flavor({"type": "xgboost", "model_path": "m.ubj", "feature_names": ["a"]})
        assert camel == snake == XGBoostFlavor("m.ubj", ("a",))
