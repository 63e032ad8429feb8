"""The LightGBM flavor on the real MLflow fixture booster and on boosters trained here."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
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
from forestflow.flavors.lightgbm_booster import LightGBMFlavor

FIXTURE = (
    Path(__file__).parents[2] / "fixtures" / "mlflow" / "lightgbm" / "lgbm_wine_multiclass_booster"
)
SEED = 1234
NAMES = ["temperature", "vacuum", "pressure", "humidity"]
FIELD = "flavor.LightGBM.modelPath"
QUIET = {"verbosity": -1, "num_threads": 1, "seed": SEED, "deterministic": True}


def expected_json() -> dict[str, Any]:
    return json.loads((FIXTURE / "expected.json").read_text())


def fixture_rows() -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in expected_json()["rows"]])


def fixture_text() -> str:
    return (FIXTURE / "model.lgb").read_text()


def frame_of(names: Sequence[str], rows: np.ndarray) -> Frame:
    return Frame({name: rows[:, i] for i, name in enumerate(names)})


def score(model: LoadedModel, frame: Frame) -> Frame:
    """What the serving layer does: conform to the signature, then predict."""
    return model.predict(conform(frame, model.signature))


def load(directory: Path, file: str, **fields: object) -> LoadedModel:
    """Decode the flavor from wire JSON, as a serve request would, and load it."""
    return parse_flavor({"LightGBM": {"modelPath": file, **fields}}).load(directory, LoadPolicy())


def data(rows: int = 300) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(SEED)
    features = rng.normal(size=(rows, len(NAMES)))
    target = features @ np.array([1.5, -2.0, 0.5, 1.0]) + rng.normal(0, 0.1, rows)
    return features, target


def classes(count: int) -> np.ndarray:
    _, target = data()
    return np.digitize(target, np.quantile(target, np.linspace(0, 1, count + 1)[1:-1]))


@dataclass(frozen=True)
class Trained:
    """A booster trained here, the directory it was saved to, and rows to score."""

    booster: lgb.Booster
    directory: Path
    file: str
    rows: np.ndarray

    def load(self, **fields: object) -> LoadedModel:
        return load(self.directory, self.file, **fields)

    def reference(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(rows, num_threads=1))


@pytest.fixture(scope="session")
def train(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Trained]:
    """Factory: train a small booster on fixed-seed data and save it as text."""

    def make(
        params: dict[str, Any],
        target: np.ndarray | None = None,
        *,
        names: Sequence[str] | None = NAMES,
        file: str = "model.txt",
        rounds: int = 5,
    ) -> Trained:
        features, regression = data()
        labels = regression if target is None else target
        frame = pd.DataFrame(features, columns=list(names)) if names else features
        dataset = lgb.Dataset(frame, label=labels, params={"min_data_in_bin": 1, **QUIET})
        booster = lgb.train({**QUIET, "min_data_in_leaf": 5, **params}, dataset, rounds)
        directory = tmp_path_factory.mktemp("lightgbm")
        booster.save_model(directory / file)
        return Trained(booster, directory, file, features[:12].copy())

    return make


@pytest.fixture(scope="session")
def regressor(train: Callable[..., Trained]) -> Trained:
    return train({"objective": "regression"})


@pytest.fixture(scope="session")
def unnamed_multiclass(train: Callable[..., Trained]) -> Trained:
    return train({"objective": "multiclass", "num_class": 3}, classes(3), names=None)


@pytest.fixture(scope="session")
def fixture_model() -> LoadedModel:
    return load(FIXTURE, "model.lgb")


class TestWineFixture:
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
            ("2", TensorType.Float64),
        ]

    def test_predictions_equal_the_fixture(self, fixture_model: LoadedModel) -> None:
        facts = expected_json()
        rows = fixture_rows()
        assert np.isnan(rows[9, -1])  # row 9: proline is missing
        result = score(fixture_model, frame_of(facts["features"], rows))
        probabilities = np.column_stack([result["0"], result["1"], result["2"]])
        want = np.array(facts["predictions"])
        np.testing.assert_allclose(probabilities, want, rtol=facts["tolerance_rel"])
        assert result["label"].tolist() == np.argmax(want, axis=1).tolist()
        assert len(set(result["label"].tolist())) == 3

    def test_left_out_feature_is_a_missing_value(self, fixture_model: LoadedModel) -> None:
        facts = expected_json()
        rows = fixture_rows()[9:10]
        frame = Frame({name: rows[:, i] for i, name in enumerate(facts["features"][:-1])})
        result = score(fixture_model, frame)
        probabilities = np.column_stack([result["0"], result["1"], result["2"]])
        np.testing.assert_allclose(probabilities, facts["predictions"][9:10], rtol=1e-9)

    def test_conflicting_feature_names_are_refused(self) -> None:
        with pytest.raises(CreateServableRequestInvalidError, match="differ") as caught:
            load(FIXTURE, "model.lgb", featureNames=[f"f{i}" for i in range(13)])
        assert caught.value.field == "flavor.LightGBM.featureNames"

    def test_concurrent_scoring_gives_the_same_answers(self, fixture_model: LoadedModel) -> None:
        frame = conform(
            frame_of(expected_json()["features"], fixture_rows()), fixture_model.signature
        )
        alone = fixture_model.predict(frame)["2"]
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(lambda _: fixture_model.predict(frame)["2"], range(32)))
        for result in results:
            np.testing.assert_array_equal(result, alone)


OBJECTIVES = [
    pytest.param({"objective": "regression"}, None, ["prediction"], id="regression"),
    pytest.param({"objective": "poisson"}, "counts", ["prediction"], id="poisson"),
    pytest.param({"objective": "cross_entropy"}, "fractions", ["prediction"], id="xentropy"),
    pytest.param({"objective": "binary"}, 2, ["label", "0", "1"], id="binary"),
    pytest.param(
        {"objective": "multiclass", "num_class": 3}, 3, ["label", "0", "1", "2"], id="multiclass"
    ),
    pytest.param(
        {"objective": "multiclassova", "num_class": 3}, 3, ["label", "0", "1", "2"], id="ova"
    ),
]


def target_for(kind: int | str | None) -> np.ndarray | None:
    _, target = data()
    if kind == "counts":
        return np.round(np.exp(target / 4))
    if kind == "fractions":
        return 1 / (1 + np.exp(-target))
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
        if columns[0] == "label":
            probabilities = np.column_stack([result[name] for name in columns[1:]])
            if reference.ndim == 1:  # binary: P(class 1)
                reference = np.column_stack([1 - reference, reference])
            np.testing.assert_allclose(probabilities, reference, rtol=1e-12)
            np.testing.assert_array_equal(result["label"], np.argmax(reference, axis=1))
            assert result["label"].dtype == np.int64
        else:
            np.testing.assert_allclose(result["prediction"], reference, rtol=1e-12)

    def test_custom_objective_gives_raw_scores(self, train: Callable[..., Trained]) -> None:
        def squared_error(scores: np.ndarray, dataset: lgb.Dataset) -> tuple[Any, Any]:
            return scores - dataset.get_label(), np.ones_like(scores)

        trained = train({"objective": squared_error})
        model = trained.load()
        assert [(s.name, s.description) for s in model.signature.outputs] == [
            ("prediction", "custom objective")
        ]
        result = score(model, frame_of(NAMES, trained.rows))
        np.testing.assert_allclose(result["prediction"], trained.reference(trained.rows))


class TestMissingValues:
    def test_null_and_left_out_fields_are_nan(self, regressor: Trained) -> None:
        rows = regressor.rows.copy()
        rows[2, 1] = np.nan
        frame = Frame({name: rows[:, i] for i, name in enumerate(NAMES) if name != "humidity"})
        result = score(regressor.load(), frame)
        rows[:, 3] = np.nan
        np.testing.assert_allclose(result["prediction"], regressor.reference(rows), rtol=1e-12)
        assert np.unique(result["prediction"]).size > 1

    def test_misspelt_field_is_refused_not_taken_as_missing(self, regressor: Trained) -> None:
        frame = frame_of(["temperature", "vacum", "pressure", "humidity"], regressor.rows)
        with pytest.raises(InferenceRequestInvalidError, match="vacum") as caught:
            score(regressor.load(), frame)
        assert caught.value.field == "vacuum"


class TestFeatureNames:
    def test_invented_column_names_count_as_no_names(self, unnamed_multiclass: Trained) -> None:
        assert unnamed_multiclass.booster.feature_name() == [f"Column_{i}" for i in range(4)]
        assert unnamed_multiclass.load().signature.inputs == ()

    def test_feature_names_name_the_inputs(self, unnamed_multiclass: Trained) -> None:
        model = unnamed_multiclass.load(featureNames=["a", "b", "c", "d"])
        assert model.signature.input_names == ["a", "b", "c", "d"]
        rows = unnamed_multiclass.rows
        frame = Frame({name: rows[:, i] for i, name in reversed(list(enumerate("abcd")))})
        result = score(model, frame)
        probabilities = np.column_stack([result["0"], result["1"], result["2"]])
        np.testing.assert_allclose(probabilities, unnamed_multiclass.reference(rows), rtol=1e-12)

    def test_without_names_takes_fields_in_request_order(self, unnamed_multiclass: Trained) -> None:
        rows = unnamed_multiclass.rows.copy()
        rows[1, 0] = np.nan
        result = score(unnamed_multiclass.load(), frame_of(["w", "x", "y", "z"], rows))
        probabilities = np.column_stack([result["0"], result["1"], result["2"]])
        np.testing.assert_allclose(probabilities, unnamed_multiclass.reference(rows), rtol=1e-12)

    def test_without_names_wrong_field_count_is_refused(self, unnamed_multiclass: Trained) -> None:
        frame = frame_of(["w", "x", "y", "z", "extra"], np.ones((2, 5)))
        with pytest.raises(InferenceRequestInvalidError, match="expects 4") as caught:
            score(unnamed_multiclass.load(), frame)
        assert "featureNames" in caught.value.message

    @pytest.mark.parametrize(
        ("names", "message"),
        [(["a", "b"], "4 features but 2"), (["a", "a", "b", "c"], "repeat")],
        ids=["too-few", "repeated"],
    )
    def test_bad_feature_names_are_refused(
        self, unnamed_multiclass: Trained, names: list[str], message: str
    ) -> None:
        with pytest.raises(CreateServableRequestInvalidError, match=message) as caught:
            unnamed_multiclass.load(featureNames=names)
        assert caught.value.field == "flavor.LightGBM.featureNames"

    def test_names_with_spaces_match_lightgbm_s_underscores(
        self, train: Callable[..., Trained]
    ) -> None:
        spaced = ["mean radius", "worst area", "texture", "mean smoothness"]
        trained = train({"objective": "regression"}, names=spaced)
        assert trained.booster.feature_name()[0] == "mean_radius"
        assert trained.load().signature.input_names[0] == "mean_radius"
        model = trained.load(featureNames=spaced)  # as an MLflow signature names them
        assert model.signature.input_names == spaced
        result = score(model, frame_of(spaced, trained.rows))
        np.testing.assert_allclose(result["prediction"], trained.reference(trained.rows))


class TestCategoricalFeatures:
    def test_integer_coded_categories_take_the_code(
        self, tmp_path_factory: pytest.TempPathFactory
    ) -> None:
        features, target = data()
        codes = np.floor(np.abs(features[:, 3]) * 3).clip(0, 5)
        matrix = np.column_stack([features[:, :3], codes])
        dataset = lgb.Dataset(
            pd.DataFrame(matrix, columns=NAMES),
            label=target + np.where(codes == 2, 10.0, 0.0),
            categorical_feature=["humidity"],
            params={"min_data_in_bin": 1, **QUIET},
        )
        booster = lgb.train({**QUIET, "min_data_in_leaf": 5, "min_data_per_group": 5}, dataset, 5)
        assert re.search(r"num_cat=[1-9]", booster.model_to_string())  # splits on categories
        directory = tmp_path_factory.mktemp("categorical-codes")
        booster.save_model(directory / "model.txt")
        model = load(directory, "model.txt")
        assert "category code" in model.signature.inputs[3].description
        assert "category code" not in model.signature.inputs[0].description
        rows = matrix[:40]
        result = score(model, frame_of(NAMES, rows))
        np.testing.assert_allclose(result["prediction"], booster.predict(rows), rtol=1e-12)

    def test_pandas_categories_are_refused(self, tmp_path: Path) -> None:
        features, target = data()
        frame = pd.DataFrame(features[:, :3], columns=NAMES[:3]).assign(
            colour=pd.Categorical(np.where(features[:, 3] > 0, "red", "blue"))
        )
        dataset = lgb.Dataset(frame, label=target, params={"min_data_in_bin": 1, **QUIET})
        lgb.train({**QUIET, "min_data_in_leaf": 5}, dataset, 2).save_model(tmp_path / "m.txt")
        with pytest.raises(CreateServableRequestInvalidError, match="pandas categorical") as caught:
            load(tmp_path, "m.txt")
        assert "['blue', 'red']" in caught.value.message


def glue_trees(text: str, first: int, last: int) -> str:
    # the start of tree `first` glued to tree `last`: LightGBM's tree_sizes no longer match
    start, end = text.index(f"Tree={first}\n"), text.index(f"Tree={last}\n")
    return text[: start + 60] + text[end:]


def loop_in_tree_two(text: str) -> str:
    block = text.index("Tree=2\n")
    line = text.index("left_child=", block)
    values = text[line : text.index("\n", line)].split("=")[1].split()
    values[1] = "1"  # split node 1 names itself as its left child
    return text[:line] + "left_child=" + " ".join(values) + text[text.index("\n", line) :]


def unknown_split_feature(text: str) -> str:
    return re.sub(r"split_feature=\d+", "split_feature=40", text, count=1)


def short_leaf_values(text: str) -> str:
    line = text.index("leaf_value=")
    end = text.index("\n", line)
    return text[: text.rindex(" ", line, end)] + text[end:]  # one leaf value fewer


def cut_parameter_line(text: str) -> str:
    # A cut `[key: value` line made LightGBM read past its end (a crash, not an error).
    return text[: text.index("[cegb_penalty_split") + 12]


class TestLoadErrors:
    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(CreateServableRequestInvalidError, match="not found") as caught:
            LightGBMFlavor("model.lgb").load(tmp_path, LoadPolicy())
        assert caught.value.field == FIELD

    def test_path_escaping_the_directory(self, tmp_path: Path) -> None:
        (tmp_path / "model.lgb").write_text(fixture_text())
        (tmp_path / "inner").mkdir()
        with pytest.raises(CreateServableRequestInvalidError, match="outside") as caught:
            LightGBMFlavor("../model.lgb").load(tmp_path / "inner", LoadPolicy())
        assert caught.value.field == FIELD

    def test_directory_instead_of_file(self, tmp_path: Path) -> None:
        (tmp_path / "model.lgb").mkdir()
        with pytest.raises(CreateServableRequestInvalidError, match="directory"):
            LightGBMFlavor("model.lgb").load(tmp_path, LoadPolicy())

    @pytest.mark.parametrize(
        ("content", "reason"),
        [
            (b"", "does not start with the line 'tree'"),
            (np.random.default_rng(3).bytes(2048), "not text"),
            (b'{"name": "tree", "tree_info": []}', "does not start with the line 'tree'"),
            (fixture_text()[:30000].encode(), "no 'end of trees' line"),
            (cut_parameter_line(fixture_text()).encode(), "'parameters:' section has no"),
            (glue_trees(fixture_text(), 3, 6).encode(), "tree 3 is damaged: a field repeats"),
            (glue_trees(fixture_text(), 3, 5).encode(), "58 trees do not make whole iterations"),
            (loop_in_tree_two(fixture_text()).encode(), "tree 2 is damaged"),
            (unknown_split_feature(fixture_text()).encode(), "feature outside 0..12"),
            (short_leaf_values(fixture_text()).encode(), "Check failed"),
            (fixture_text().replace("[boosting: gbdt]", "[boosting gbdt").encode(), "parameter"),
        ],
        ids=[
            "empty",
            "binary",
            "json-dump",
            "truncated-in-trees",
            "truncated-in-parameters",
            "trees-glued",
            "trees-missing",
            "loop",
            "unknown-feature",
            "short-leaf-values",
            "bad-parameter-line",
        ],
    )
    def test_corrupt_file(self, tmp_path: Path, content: bytes, reason: str) -> None:
        (tmp_path / "model.lgb").write_bytes(content)
        with pytest.raises(CreateServableRequestInvalidError, match=reason) as caught:
            LightGBMFlavor("model.lgb").load(tmp_path, LoadPolicy())
        assert "not a valid LightGBM model" in caught.value.message
        assert "\n" not in caught.value.message
        assert "/__w/" not in caught.value.message  # LightGBM's source paths are cut

    def test_crlf_model_file_loads(self, tmp_path: Path, fixture_model: LoadedModel) -> None:
        (tmp_path / "model.lgb").write_bytes(fixture_text().replace("\n", "\r\n").encode())
        model = LightGBMFlavor("model.lgb").load(tmp_path, LoadPolicy())
        frame = conform(frame_of(expected_json()["features"], fixture_rows()), model.signature)
        np.testing.assert_array_equal(model.predict(frame)["1"], fixture_model.predict(frame)["1"])

    def test_missing_lightgbm_names_the_extra(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        (tmp_path / "model.lgb").write_text("tree\n")
        monkeypatch.setitem(sys.modules, "lightgbm", None)  # makes the import fail
        with pytest.raises(FlavorUnavailable, match=r"'lightgbm'.*forestflow\[lightgbm\]"):
            LightGBMFlavor("model.lgb").load(tmp_path, LoadPolicy())

    def test_closed_model_refuses_to_score(self, regressor: Trained) -> None:
        model = regressor.load()
        frame = conform(frame_of(NAMES, regressor.rows), model.signature)
        model.close()
        with pytest.raises(RuntimeError, match="closed"):
            model.predict(frame)


class TestFlavorValue:
    def test_decodes_camel_and_snake_case(self) -> None:
        camel = parse_flavor({"LightGBM": {"modelPath": "m.txt", "featureNames": ["a"]}})
        snake = parse_flavor({"type": "lightgbm", "model_path": "m.txt", "feature_names": ["a"]})
        assert camel == snake == LightGBMFlavor("m.txt", ("a",))
