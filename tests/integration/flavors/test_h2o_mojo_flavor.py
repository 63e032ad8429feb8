"""The H2O MOJO flavor on real MOJOs: the three fixtures made by H2O 3.46.0.11, and MOJOs
derived from them here (a K-means, an isolation forest built from the GBM's trees, a
one-hot encoded GBM) for the categories and encodings the fixtures do not cover. Every
MOJO is read and scored by the real genmodel classes in a real JVM."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from forestflow.domain.frame import Frame, TensorType
from forestflow.domain.signature import conform
from forestflow.errors import CreateServableRequestInvalidError, InferenceRequestInvalidError
from forestflow.flavors.base import LoadPolicy, parse_flavor
from forestflow.flavors.h2o_jvm import genmodel
from forestflow.flavors.h2o_mojo import H2OMojoFlavor, H2OMojoModel

REPO = Path(__file__).parents[3]
H2O = REPO / "tests" / "fixtures" / "h2o"
REGRESSION = H2O / "gbm_powerplant_regression"
BINOMIAL = H2O / "glm_churn_binomial"
MULTINOMIAL = H2O / "gbm_iris_multinomial"
FIXTURES = [REGRESSION, BINOMIAL, MULTINOMIAL]
ONNX_MODEL = REPO / "tests" / "fixtures" / "onnx" / "rf_powerplant_single_input"
FIELD = "flavor.H2OMojo.mojoPath"


def expected(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "expected.json").read_text())


def column(values: Sequence[object], string: bool) -> np.ndarray:
    """A frame column as the REST layer builds it: strings as objects, NaN for missing numbers."""
    if string:
        return np.array(values, dtype=object)
    return np.array([np.nan if value is None else value for value in values], dtype=float)


def fixture_frame(reference: dict[str, Any], rows: Sequence[Sequence[object]]) -> Frame:
    types = {spec["name"]: spec["type"] for spec in reference["feature_types"]}
    return Frame(
        {
            name: column([row[i] for row in rows], types[name] == "String")
            for i, name in enumerate(reference["features"])
        }
    )


def load(directory: Path, **fields: object) -> H2OMojoModel:
    """Decode the flavor from wire JSON, as a serve request would, and load it."""
    body = {"mojoPath": expected(directory)["model_file"], "version": "3.46.0.11", **fields}
    model = parse_flavor({"H2OMojo": body}).load(directory, LoadPolicy())
    assert isinstance(model, H2OMojoModel)
    return model


def score(model: H2OMojoModel, frame: Frame) -> Frame:
    """What the serving layer does: conform to the signature, then predict."""
    return model.predict(conform(frame, model.signature))


def assert_matches(result: Frame, reference: dict[str, Any], rows: slice = slice(None)) -> None:
    tolerance = reference["tolerance_rel"]
    if reference["task"] == "regression":
        assert list(result) == ["Regression"]
        np.testing.assert_allclose(
            result["Regression"], reference["predictions"][rows], rtol=tolerance
        )
        return
    assert list(result) == ["label", *reference["classes"]]
    assert result["label"].tolist() == reference["predictions"][rows]
    probabilities = np.column_stack([result[name] for name in reference["classes"]])
    np.testing.assert_allclose(probabilities, reference["probabilities"][rows], rtol=tolerance)


def model_mojo(path: Path) -> Any:
    """The genmodel MojoModel at `path`, loaded without the flavor."""
    return genmodel().mojo_model.load(str(path))


def raw_mojo(directory: Path) -> Any:
    """The genmodel MojoModel of a fixture, loaded without the flavor."""
    return model_mojo(directory / expected(directory)["model_file"])


def derive_mojo(
    source: Path, target: Path, ini: dict[str, str], files: dict[str, str] | None = None
) -> Path:
    """A copy of the MOJO zip `source`: text replaced in model.ini, files replaced or added."""
    files = files or {}
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as copy:
        for name in original.namelist():
            if name in files:
                continue
            data = original.read(name)
            if name == "model.ini":
                text = data.decode()
                for old, new in ini.items():
                    assert old in text, old
                    text = text.replace(old, new)
                data = text.encode()
            copy.writestr(name, data)
        for name, text in files.items():
            copy.writestr(name, text)
    return target


KMEANS_INI = """\
[info]
h2o_version = 3.46.0.11
mojo_version = 1.00
algo = kmeans
algorithm = K-means
category = {category}
uuid = 42
supervised = false
n_features = 2
n_classes = 1
n_columns = 2
n_domains = 0
balance_classes = false
default_threshold = 0.5
standardize = false
center_num = 3
center_0 = [0.0, 0.0]
center_1 = [10.0, 10.0]
center_2 = [-5.0, 7.5]

[columns]
x
y

[domains]
"""
KMEANS_CENTERS = np.array([[0.0, 0.0], [10.0, 10.0], [-5.0, 7.5]])


def kmeans_mojo(directory: Path, category: str = "Clustering") -> Path:
    """A K-means MOJO written out by hand: its model.ini holds the whole model."""
    path = directory / "kmeans.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model.ini", KMEANS_INI.format(category=category))
    return path


def isolation_forest_mojo(directory: Path, flag: bool) -> Path:
    """An isolation forest MOJO made of the regression GBM's trees (same tree format)."""
    anomaly_flag = "output_anomaly_flag = true\n" if flag else ""
    return derive_mojo(
        REGRESSION / "gbm_powerplant_regression.zip",
        directory / f"isolation_forest_{flag}.zip",
        {
            "algo = gbm": "algo = isolationforest",
            "algorithm = Gradient Boosting Machine": "algorithm = Isolation Forest",
            "category = Regression": "category = AnomalyDetection",
            "supervised = true": "supervised = false",
            "n_columns = 5": "n_columns = 4",
            "default_threshold = 0.5": "default_threshold = 4.85",
            "EnergyOutput\n": "",
            "init_f = 453.6803549999995": f"min_path_length = 400\nmax_path_length = 500\n"
            f"{anomaly_flag}",
        },
    )


def one_hot_gbm_mojo(directory: Path) -> Path:
    """The regression GBM declared as trained with one-hot-explicit encoding. Its columns are
    all numeric, so the encoded row is the plain row: predictions must not change."""
    names = [*expected(REGRESSION)["features"], "EnergyOutput"]
    domains = "".join(f"_m_orig_domain_values_{i} = 0\n" for i in range(len(names)))
    return derive_mojo(
        REGRESSION / "gbm_powerplant_regression.zip",
        directory / "one_hot.zip",
        {
            "_genmodel_encoding = AUTO": "_genmodel_encoding = OneHotExplicit\n"
            f"_n_orig_names = {len(names)}\n_n_orig_domain_values = {len(names)}\n{domains}"
        },
        {"_orig_names": "\n".join(names) + "\n"},
    )


def child_processes() -> set[int]:
    """The processes whose parent is this one, from /proc."""
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        if int(fields[1]) == os.getpid():
            children.add(int(stat.parent.name))
    return children


def run_python(code: str, **env: str) -> dict[str, Any]:
    """Run `code` in a fresh interpreter; it prints one JSON object as its last line."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **env},
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("directory", FIXTURES, ids=lambda d: d.name)
class TestFixturePredictions:
    def test_predictions_equal_h2o_in_cluster_predictions(self, directory: Path) -> None:
        reference = expected(directory)
        result = score(load(directory), fixture_frame(reference, reference["rows"]))
        assert_matches(result, reference)

    def test_missing_values_sent_by_leaving_the_feature_out(self, directory: Path) -> None:
        reference = expected(directory)
        model = load(directory)
        gappy = [i for i, row in enumerate(reference["rows"]) if None in row and any(row)]
        assert gappy, "every H2O fixture has rows with some values missing"
        for i in gappy:
            row = reference["rows"][i]
            present = [j for j, value in enumerate(row) if value is not None]
            narrowed = {**reference, "features": [reference["features"][j] for j in present]}
            frame = fixture_frame(narrowed, [[row[j] for j in present]])
            assert_matches(score(model, frame), reference, slice(i, i + 1))

    def test_the_row_by_row_wrapper_gives_identical_results(self, directory: Path) -> None:
        reference = expected(directory)
        model = load(directory)
        frame = conform(fixture_frame(reference, reference["rows"]), model.signature)
        exact = H2OMojoModel(genmodel(), raw_mojo(directory), row_by_row=True).predict(frame)
        fast = model.predict(frame)
        assert list(fast) == list(exact)
        for name in fast:
            assert fast[name].tolist() == exact[name].tolist(), name
        assert_matches(exact, reference)

    def test_fields_are_matched_by_name_not_position(self, directory: Path) -> None:
        reference = expected(directory)
        flipped = {**reference, "features": list(reversed(reference["features"]))}
        rows = [list(reversed(row)) for row in reference["rows"]]
        assert_matches(score(load(directory), fixture_frame(flipped, rows)), reference)

    def test_an_unpacked_mojo_directory_loads_too(self, directory: Path, tmp_path: Path) -> None:
        reference = expected(directory)
        with zipfile.ZipFile(directory / reference["model_file"]) as archive:
            archive.extractall(tmp_path / "unpacked")
        model = parse_flavor({"H2OMojo": {"mojoPath": "unpacked"}}).load(tmp_path, LoadPolicy())
        assert_matches(score(model, fixture_frame(reference, reference["rows"])), reference)


class TestSignature:
    @pytest.mark.parametrize("directory", FIXTURES, ids=lambda d: d.name)
    def test_inputs_are_the_mojo_columns_with_their_domains(self, directory: Path) -> None:
        reference = expected(directory)
        got = [
            (s.name, s.type, s.domain, s.accepts_missing) for s in load(directory).signature.inputs
        ]
        want = [
            (f["name"], TensorType.String, tuple(f["domain"]), True)
            if f["h2o_type"] == "enum"
            else (f["name"], TensorType.Float64, None, True)
            for f in reference["feature_types"]
        ]
        assert got == want

    def test_regression_outputs_one_float_column_named_regression(self) -> None:
        outputs = [(s.name, s.type) for s in load(REGRESSION).signature.outputs]
        assert outputs == [("Regression", TensorType.Float64)]

    @pytest.mark.parametrize("directory", [BINOMIAL, MULTINOMIAL], ids=lambda d: d.name)
    def test_classifiers_output_the_label_and_one_column_per_class(self, directory: Path) -> None:
        outputs = [(s.name, s.type) for s in load(directory).signature.outputs]
        classes = expected(directory)["classes"]
        assert outputs == [("label", TensorType.String)] + [
            (c, TensorType.Float64) for c in classes
        ]

    def test_feature_names_equal_to_the_mojo_columns_are_accepted(self) -> None:
        names = list(reversed(expected(BINOMIAL)["features"]))
        model = load(BINOMIAL, featureNames=names)
        assert model.signature.input_names == expected(BINOMIAL)["features"]

    def test_feature_names_that_differ_from_the_mojo_columns_are_refused(self) -> None:
        with pytest.raises(CreateServableRequestInvalidError, match="differ") as caught:
            load(REGRESSION, featureNames=["a", "b", "c", "d"])
        assert caught.value.field == "flavor.H2OMojo.featureNames"

    def test_version_is_optional_and_informational(self, caplog: pytest.LogCaptureFixture) -> None:
        flavor = parse_flavor({"H2OMojo": {"mojoPath": "gbm_powerplant_regression.zip"}})
        assert flavor == H2OMojoFlavor(mojo_path="gbm_powerplant_regression.zip")
        with caplog.at_level("INFO", logger="forestflow.flavors.h2o_mojo"):
            load(REGRESSION, version="3.40.0.1")
        assert "made by H2O 3.46.0.11, not 3.40.0.1" in caplog.text

    def test_a_class_named_label_gets_prefixed_probability_columns(self, tmp_path: Path) -> None:
        derive_mojo(
            BINOMIAL / "glm_churn_binomial.zip",
            tmp_path / "m.zip",
            {},
            {"domains/d003.txt": "label\nyes\n"},
        )
        model = parse_flavor({"H2OMojo": {"mojoPath": "m.zip"}}).load(tmp_path, LoadPolicy())
        assert [s.name for s in model.signature.outputs] == ["label", "proba_label", "proba_yes"]
        reference = expected(BINOMIAL)
        result = score(model, fixture_frame(reference, reference["rows"]))
        renamed = ["label" if p == "no" else p for p in reference["predictions"]]
        assert result["label"].tolist() == renamed
        np.testing.assert_allclose(
            result["proba_yes"], [p[1] for p in reference["probabilities"]], rtol=1e-9
        )


class TestValueConversion:
    def test_unseen_levels_score_like_missing_values(self) -> None:
        reference = expected(BINOMIAL)
        model = load(BINOMIAL)
        unseen = score(model, fixture_frame(reference, [["crypto", "atlantis", "3y", 30.0, 80.0]]))
        missing = score(model, fixture_frame(reference, [[None, None, None, 30.0, 80.0]]))
        for name in unseen:
            assert unseen[name].tolist() == missing[name].tolist()
        assert (
            unseen["yes"].tolist()
            != score(
                model, fixture_frame(reference, [["credit-card", "east", "two-year", 30.0, 80.0]])
            )["yes"].tolist()
        )

    def test_a_level_also_matches_a_domain_entry_prefixed_with_its_column(
        self, tmp_path: Path
    ) -> None:
        # genmodel's EnumEncoder looks `east` up as `east`, then as `region.east`.
        derive_mojo(
            BINOMIAL / "glm_churn_binomial.zip",
            tmp_path / "prefixed.zip",
            {},
            {"domains/d001.txt": "region.east\nregion.north\nregion.south\nregion.west\n"},
        )
        model = parse_flavor({"H2OMojo": {"mojoPath": "prefixed.zip"}}).load(tmp_path, LoadPolicy())
        assert model.signature.inputs[1].domain == (
            "region.east",
            "region.north",
            "region.south",
            "region.west",
        )
        reference = expected(BINOMIAL)
        frame = fixture_frame(reference, reference["rows"])
        assert_matches(score(model, frame), reference)
        exact = H2OMojoModel(genmodel(), model_mojo(tmp_path / "prefixed.zip"), row_by_row=True)
        assert score(exact, frame)["yes"].tolist() == score(model, frame)["yes"].tolist()

    def test_infinite_numbers_reach_the_model_as_genmodel_takes_them(self) -> None:
        reference = expected(REGRESSION)
        frame = fixture_frame(reference, [[float("inf"), 41.76, float("-inf"), 73.17]])
        exact = H2OMojoModel(genmodel(), raw_mojo(REGRESSION), row_by_row=True)
        assert score(load(REGRESSION), frame)["Regression"].tolist() == (
            score(exact, frame)["Regression"].tolist()
        )


def churn_batch(size: int) -> Frame:
    """`size` churn rows with every kind of value: known and unseen levels, gaps, numbers."""
    rng = np.random.default_rng(11)
    reference = expected(BINOMIAL)
    columns = {}
    for spec in reference["feature_types"]:
        if spec["type"] == "String":
            levels = np.array([*spec["domain"], "unseen", None], dtype=object)
            columns[spec["name"]] = levels[rng.integers(0, len(levels), size)]
        else:
            values = rng.uniform(0, 120, size)
            values[rng.random(size) < 0.1] = np.nan
            columns[spec["name"]] = values
    return Frame(columns)


class TestBatch:
    def test_1000_rows_score_in_process(self) -> None:
        reference = expected(REGRESSION)
        rng = np.random.default_rng(3)
        rows = rng.uniform([0, 25, 990, 20], [35, 80, 1035, 100], (1000, 4)).tolist()
        model = load(REGRESSION)
        frame = conform(fixture_frame(reference, rows), model.signature)
        model.predict(frame)  # the first call JIT-compiles the Java scorer
        before = child_processes()
        result = model.predict(frame)
        # how fast is the benchmark suite's to say: a timed test fails on a busy machine
        assert child_processes() == before
        assert result["Regression"].shape == (1000,)
        assert np.all((result["Regression"] > 400) & (result["Regression"] < 500))

    def test_a_large_mixed_batch_equals_the_row_by_row_wrapper(self) -> None:
        model = load(BINOMIAL)
        frame = conform(churn_batch(1000), model.signature)
        exact = H2OMojoModel(genmodel(), raw_mojo(BINOMIAL), row_by_row=True).predict(frame)
        fast = model.predict(frame)
        for name in fast:
            assert fast[name].tolist() == exact[name].tolist(), name

    def test_worker_threads_score_one_model_at_once(self) -> None:
        model = load(BINOMIAL)
        frame = conform(churn_batch(200), model.signature)
        alone = model.predict(frame)["yes"].tolist()
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(lambda _: model.predict(frame)["yes"].tolist(), range(16)))
        assert all(result == alone for result in results)

    def test_a_closed_model_refuses_to_score(self) -> None:
        reference = expected(REGRESSION)
        model = load(REGRESSION)
        model.close()
        with pytest.raises(RuntimeError, match="closed"):
            score(model, fixture_frame(reference, reference["rows"][:1]))


class TestOtherCategoriesAndEncodings:
    def test_kmeans_outputs_the_nearest_cluster_as_int32(self, tmp_path: Path) -> None:
        kmeans_mojo(tmp_path)
        model = parse_flavor({"H2OMojo": {"mojoPath": "kmeans.zip"}}).load(tmp_path, LoadPolicy())
        assert [(s.name, s.type) for s in model.signature.outputs] == [
            ("Clustering", TensorType.Int32)
        ]
        points = np.random.default_rng(5).uniform(-8, 12, (50, 2))
        frame = Frame({"x": points[:, 0], "y": points[:, 1]})
        nearest = np.argmin(((points[:, None, :] - KMEANS_CENTERS) ** 2).sum(axis=2), axis=1)
        result = score(model, frame)["Clustering"]
        assert result.dtype == np.int32
        assert result.tolist() == nearest.tolist()
        exact = H2OMojoModel(genmodel(), model_mojo(tmp_path / "kmeans.zip"), row_by_row=True)
        assert score(exact, frame)["Clustering"].tolist() == nearest.tolist()

    @pytest.mark.parametrize("flag", [False, True], ids=["no-flag", "anomaly-flag"])
    def test_isolation_forest_outputs_match_genmodel_wrapper_fields(
        self, tmp_path: Path, flag: bool
    ) -> None:
        path = isolation_forest_mojo(tmp_path, flag)
        model = parse_flavor({"H2OMojo": {"mojoPath": path.name}}).load(tmp_path, LoadPolicy())
        names = ["isAnomaly", "score", "normalizedScore"] if flag else ["score", "normalizedScore"]
        assert [s.name for s in model.signature.outputs] == names
        reference = expected(REGRESSION)
        result = score(model, fixture_frame(reference, reference["rows"]))
        java = genmodel()
        config = java.wrapper.Config().setModel(model_mojo(path))
        wrapper = java.wrapper(config.setConvertUnknownCategoricalLevelsToNa(True))
        for i, row in enumerate(reference["rows"]):
            data = java.row_data()
            for name, value in zip(reference["features"], row, strict=True):
                if value is not None:
                    data.put(name, java.jpype.JDouble(value))
            want = wrapper.predictAnomalyDetection(data)
            assert result["score"][i] == want.score
            assert result["normalizedScore"][i] == want.normalizedScore
            if flag:
                assert bool(result["isAnomaly"][i]) == bool(want.isAnomaly)
        if flag:  # the threshold splits these rows: both answers occur
            assert set(result["isAnomaly"].tolist()) == {True, False}

    def test_a_one_hot_encoded_mojo_is_scored_through_the_wrapper(self, tmp_path: Path) -> None:
        one_hot_gbm_mojo(tmp_path)
        model = parse_flavor({"H2OMojo": {"mojoPath": "one_hot.zip"}}).load(tmp_path, LoadPolicy())
        reference = expected(REGRESSION)
        assert model.signature.input_names == reference["features"]
        assert_matches(score(model, fixture_frame(reference, reference["rows"])), reference)


class TestOffsetColumn:
    def offset_model(self, tmp_path: Path) -> H2OMojoModel:
        derive_mojo(
            BINOMIAL / "glm_churn_binomial.zip",
            tmp_path / "offset.zip",
            {"beta = ": "offset_column = exposure\nbeta = "},
        )
        model = parse_flavor({"H2OMojo": {"mojoPath": "offset.zip"}}).load(tmp_path, LoadPolicy())
        assert isinstance(model, H2OMojoModel)
        return model

    def test_the_offset_is_a_required_float_input(self, tmp_path: Path) -> None:
        offset = self.offset_model(tmp_path).signature.inputs[-1]
        assert (offset.name, offset.type, offset.accepts_missing) == (
            "exposure",
            TensorType.Float64,
            False,
        )

    def test_the_offset_shifts_the_linear_predictor(self, tmp_path: Path) -> None:
        model = self.offset_model(tmp_path)
        reference = expected(BINOMIAL)
        frame = fixture_frame(reference, reference["rows"])
        n = frame.n_rows
        at_zero = score(model, Frame({**frame.columns, "exposure": np.zeros(n)}))
        assert_matches(at_zero, reference)
        shifted = score(model, Frame({**frame.columns, "exposure": np.full(n, 1.5)}))
        p = np.array([row[1] for row in reference["probabilities"]])
        want = 1 / (1 + np.exp(-(np.log(p / (1 - p)) + 1.5)))
        np.testing.assert_allclose(shifted["yes"], want, rtol=1e-9)
        threshold = reference["default_threshold"]
        assert shifted["label"].tolist() == ["yes" if q >= threshold else "no" for q in want]

    def test_a_missing_offset_is_refused(self, tmp_path: Path) -> None:
        model = self.offset_model(tmp_path)
        reference = expected(BINOMIAL)
        with pytest.raises(InferenceRequestInvalidError) as caught:
            score(model, fixture_frame(reference, reference["rows"]))
        assert caught.value.field == "exposure"


class TestBadArtifacts:
    def refused(self, directory: Path, mojo_path: str) -> CreateServableRequestInvalidError:
        with pytest.raises(CreateServableRequestInvalidError) as caught:
            parse_flavor({"H2OMojo": {"mojoPath": mojo_path}}).load(directory, LoadPolicy())
        assert caught.value.field == FIELD
        assert str(directory) not in caught.value.message
        assert "Traceback" not in caught.value.message
        return caught.value

    def test_random_bytes_are_not_a_mojo(self, tmp_path: Path) -> None:
        (tmp_path / "model.zip").write_bytes(np.random.default_rng(1).bytes(4096))
        error = self.refused(tmp_path, "model.zip")
        assert error.message == "'model.zip' is not a zip archive: not an H2O MOJO"

    def test_a_truncated_zip_is_not_a_mojo(self, tmp_path: Path) -> None:
        content = (REGRESSION / "gbm_powerplant_regression.zip").read_bytes()
        (tmp_path / "model.zip").write_bytes(content[: len(content) * 2 // 3])
        error = self.refused(tmp_path, "model.zip")
        assert error.message == "'model.zip' is not a zip archive: not an H2O MOJO"

    def test_a_zip_without_model_ini_is_not_a_mojo(self, tmp_path: Path) -> None:
        with zipfile.ZipFile(tmp_path / "model.zip", "w") as archive:
            archive.writestr("notes.txt", "hello")
        error = self.refused(tmp_path, "model.zip")
        assert error.message == "'model.zip' is a zip archive without model.ini: not an H2O MOJO"

    def test_a_directory_without_model_ini_is_not_a_mojo(self, tmp_path: Path) -> None:
        (tmp_path / "unpacked").mkdir()
        error = self.refused(tmp_path, "unpacked")
        assert error.message == "'unpacked' is a directory without model.ini: not an H2O MOJO"

    def test_a_mojo_with_a_short_domain_file_is_not_a_mojo(self, tmp_path: Path) -> None:
        derive_mojo(
            BINOMIAL / "glm_churn_binomial.zip",
            tmp_path / "model.zip",
            {"0: 4 d000.txt": "0: 5 d000.txt"},  # promises one level more than the file has
        )
        error = self.refused(tmp_path, "model.zip")
        assert error.message == (
            "'model.zip' is not a valid H2O MOJO (IOException: Not enough elements in the "
            "domain file)"
        )

    def test_a_missing_file_is_named(self, tmp_path: Path) -> None:
        error = self.refused(tmp_path, "absent.zip")
        assert "'absent.zip' not found" in error.message

    def test_a_path_leaving_the_artifact_is_refused(self, tmp_path: Path) -> None:
        (tmp_path / "outside.zip").write_bytes(b"x")
        (tmp_path / "artifact").mkdir()
        error = self.refused(tmp_path / "artifact", "../outside.zip")
        assert "outside the model directory" in error.message

    def test_an_unsupported_category_is_refused(self, tmp_path: Path) -> None:
        kmeans_mojo(tmp_path, category="DimReduction")
        error = self.refused(tmp_path, "kmeans.zip")
        assert "category DimReduction are not supported" in error.message
        assert "Regression, Binomial, Multinomial" in error.message

    def test_an_offset_column_with_an_encoding_the_fast_path_cannot_build_is_refused(
        self, tmp_path: Path
    ) -> None:
        one_hot_gbm_mojo(tmp_path)
        derive_mojo(
            tmp_path / "one_hot.zip",
            tmp_path / "offset.zip",
            {"init_f = ": "offset_column = w\ninit_f = "},
        )
        error = self.refused(tmp_path, "offset.zip")
        assert "offset column ('w') and categorical encoding OneHotExplicit" in error.message


class TestJvm:
    def test_the_jvm_starts_with_the_first_h2o_load_and_keeps_signals_python_s(
        self, tmp_path: Path
    ) -> None:
        code = f"""
            import json, os, signal, sys, threading
            from pathlib import Path
            import forestflow.flavors.h2o_mojo
            from forestflow.flavors.base import LoadPolicy, parse_flavor
            facts = {{"jpype_on_import": "jpype" in sys.modules}}
            onnx = {{"modelPath": "model.onnx", "featureNames": ["a", "b", "c", "d"]}}
            parse_flavor({{"ONNX": onnx}}).load(Path({str(ONNX_MODEL)!r}), LoadPolicy())
            facts["jpype_after_onnx"] = "jpype" in sys.modules
            h2o = {{"H2OMojo": {{"mojoPath": "gbm_powerplant_regression.zip"}}}}
            parse_flavor(h2o).load(Path({str(REGRESSION)!r}), LoadPolicy())
            import jpype
            facts["started"] = jpype.isJVMStarted()
            system = jpype.JClass("java.lang.System")
            facts["classpath"] = str(system.getProperty("java.class.path"))
            parse_flavor(h2o).load(Path({str(REGRESSION)!r}), LoadPolicy())  # reuses the JVM
            handled = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: handled.set())
            os.kill(os.getpid(), signal.SIGTERM)
            facts["sigterm_reached_python"] = handled.wait(10)
            print(json.dumps(facts))
        """
        facts = run_python(code, HOME=str(tmp_path))
        assert facts["jpype_on_import"] is False
        assert facts["jpype_after_onnx"] is False
        assert facts["started"] is True
        cache = tmp_path / ".cache" / "forestflow"
        (jar,) = cache.iterdir()  # extracted once, no temporary file left behind
        assert jar.name.startswith("h2o-genmodel-")
        assert jar.suffix == ".jar"
        assert str(jar) in facts["classpath"].split(os.pathsep)
        assert "h2o.jar" not in facts["classpath"]
        assert zipfile.ZipFile(jar).getinfo("hex/genmodel/MojoModel.class").file_size > 0
        assert facts["sigterm_reached_python"] is True

    def test_a_java_runtime_that_cannot_start_is_a_clear_error(self, tmp_path: Path) -> None:
        fake = tmp_path / "java"
        (fake / "lib" / "server").mkdir(parents=True)
        (fake / "lib" / "server" / "libjvm.so").write_bytes(b"")
        code = f"""
            import json
            from pathlib import Path
            from forestflow.errors import CreateServableRequestInvalidError
            from forestflow.flavors.base import LoadPolicy, parse_flavor
            h2o = {{"H2OMojo": {{"mojoPath": "gbm_powerplant_regression.zip"}}}}
            try:
                parse_flavor(h2o).load(Path({str(REGRESSION)!r}), LoadPolicy())
            except CreateServableRequestInvalidError as error:
                print(json.dumps({{"message": error.message}}))
        """
        facts = run_python(code, HOME=str(tmp_path), JAVA_HOME=str(fake))
        assert "could not start (JVM DLL not found" in facts["message"]
        assert "needs Java 11 or newer" in facts["message"]
        assert "JAVA_HOME" in facts["message"]

    def test_missing_libraries_name_the_package_to_install(self) -> None:
        code = f"""
            import json, sys
            from pathlib import Path
            from forestflow.errors import FlavorUnavailable
            from forestflow.flavors.base import LoadPolicy, parse_flavor
            h2o = {{"H2OMojo": {{"mojoPath": "gbm_powerplant_regression.zip"}}}}
            messages = []
            for blocked in ("jpype", "h2o"):
                sys.modules[blocked] = None  # what an uninstalled package looks like to import
                try:
                    parse_flavor(h2o).load(Path({str(REGRESSION)!r}), LoadPolicy())
                except FlavorUnavailable as error:
                    messages.append(error.message)
                del sys.modules[blocked]
            print(json.dumps({{"messages": messages}}))
        """
        first, second = run_python(code)["messages"]
        assert "needs the 'jpype1' package" in first
        assert "needs the 'h2o' package" in second
        assert "pip install 'forestflow[h2o]'" in second
