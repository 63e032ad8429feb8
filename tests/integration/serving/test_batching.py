"""Micro-batching never changes a result: every flavor, on its fixture rows, scored one
request at a time and with requests batched, through the real in-process runner.

Labels, integers and strings are equal exactly, and so are the numbers of tree models.
Linear algebra kernels (BLAS, ONNX Runtime's MatMul) may round the last bit differently
for a different number of rows, as they do inside the libraries themselves: numbers are
held to float rounding (relative 1e-5 for float32, 1e-12 for float64)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from forestflow.domain.frame import Block, Frame, TensorType
from forestflow.domain.signature import FeatureSpec, ModelSignature
from forestflow.errors import InferenceRequestInvalidError, ModelFailedError
from forestflow.flavors.base import Flavor, LoadedModel, LoadPolicy, parse_flavor
from forestflow.flavors.mlflow_model import flavor_from_mlmodel
from forestflow.serving.runner import InProcessRunner, _by_layout
from forestflow.serving.scheduler import WorkScheduler
from tests.builders import make_fqrv
from tests.payloads import FIXTURES

TRUSTING = LoadPolicy(allow_unsafe_formats=True, skops_trusted_types=("sklearn.tree._tree.Tree",))


def explicit(wire: dict[str, Any]) -> Callable[[Path, dict[str, Any]], Flavor]:
    return lambda _directory, reference: parse_flavor(
        {name: {**body, "featureNames": reference["features"]} for name, body in wire.items()}
        if "ONNX" in wire
        else wire
    )


def h2o(_directory: Path, reference: dict[str, Any]) -> Flavor:
    return parse_flavor({"H2OMojo": {"mojoPath": reference["model_file"], "version": "3.46.0.11"}})


def mlflow(directory: Path, _reference: dict[str, Any]) -> Flavor:
    return flavor_from_mlmodel(directory)


CASES: dict[str, Callable[[Path, dict[str, Any]], Flavor]] = {
    "onnx/rf_powerplant_single_input": explicit({"ONNX": {"modelPath": "model.onnx"}}),
    "onnx/churn_pipeline_named_inputs": explicit({"ONNX": {"modelPath": "model.onnx"}}),
    "onnx/logreg_iris_zipmap": explicit({"ONNX": {"modelPath": "model.onnx"}}),
    "h2o/gbm_powerplant_regression": h2o,
    "h2o/glm_churn_binomial": h2o,
    "h2o/gbm_iris_multinomial": h2o,
    "mlflow/sklearn/rf_diabetes_regression": mlflow,
    "mlflow/sklearn/logreg_iris_pipeline": mlflow,
    "mlflow/xgboost/xgb_breast_cancer_booster": mlflow,
    "mlflow/lightgbm/lgbm_wine_multiclass_booster": mlflow,
    "mlflow/onnx/gbr_powerplant_onnx": mlflow,
    "mlflow/pyfunc/custom_powerplant_ensemble": mlflow,
}


def row_frames(reference: dict[str, Any]) -> list[Frame]:
    """One single-row frame per fixture row, built as the REST layer builds them."""
    types = {spec["name"]: spec["type"] for spec in reference["feature_types"]}
    frames = []
    for row in reference["rows"]:
        columns = {}
        for name, value in zip(reference["features"], row, strict=True):
            if types[name] == "String":
                columns[name] = np.array([value], dtype=object)
            else:
                columns[name] = np.array([np.nan if value is None else value], dtype=float)
        frames.append(Frame(columns))
    return frames


# float32: ONNX Runtime's MatMul + softmax moved probabilities by up to 24 ULP, which
# for values near 4e-8 is 1e-13 absolute; float64 (scikit-learn): 1 ULP seen.
TOLERANCE = {4: {"rtol": 1e-5, "atol": 1e-7}, 8: {"rtol": 1e-12, "atol": 1e-15}}


def assert_same(alone: Frame, batched: Frame, row: int) -> None:
    assert batched.names == alone.names, f"row {row}"
    for name in alone.names:
        expected, actual = alone[name], batched[name]
        assert actual.dtype == expected.dtype, f"row {row}, {name}"
        if expected.dtype.kind == "f":
            np.testing.assert_allclose(actual, expected, **TOLERANCE[expected.dtype.itemsize])
        else:
            assert actual.tolist() == expected.tolist(), f"row {row}, {name}"


async def score_all(runner: InProcessRunner, frames: list[Frame]) -> list[Frame | BaseException]:
    fqrv = make_fqrv("v1")
    return await asyncio.gather(
        *(runner.predict(fqrv, frame) for frame in frames), return_exceptions=True
    )


@pytest.mark.parametrize("fixture", sorted(CASES))
async def test_batched_results_equal_unbatched_ones(fixture: str) -> None:
    directory = FIXTURES / fixture
    reference = json.loads((directory / "expected.json").read_text())
    flavor = CASES[fixture](directory, reference)
    frames = row_frames(reference)
    outcomes = {}
    for max_batch_size in (1, 64):
        # one worker: while the first request runs, all the others wait and form a batch
        scheduler = WorkScheduler(workers=1, shadow_queue_size=0, max_shadow_workers=1)
        runner = InProcessRunner(scheduler, TRUSTING, max_batch_size=max_batch_size)
        try:
            await runner.start(make_fqrv("v1"), flavor, directory)
            outcomes[max_batch_size] = await score_all(runner, frames)
            batches = runner.batch_stats(make_fqrv("v1"))
        finally:
            await runner.stop(make_fqrv("v1"))
            scheduler.close()
        if max_batch_size > 1:
            assert batches.calls < len(frames), "the requests were not batched"

    for row, (alone, batched) in enumerate(zip(outcomes[1], outcomes[64], strict=True)):
        if isinstance(alone, BaseException):
            assert type(batched) is type(alone), f"row {row}: {batched!r} vs {alone!r}"
            assert str(batched) == str(alone)
        else:
            assert isinstance(batched, Frame), f"row {row}: {batched!r}"
            assert_same(alone, batched, row)


class PickyModel(LoadedModel):
    """Doubles `x`; refuses (crashes on) any batch holding a negative value."""

    signature = ModelSignature(
        inputs=(FeatureSpec("x", TensorType.Float64),),
        outputs=(FeatureSpec("y", TensorType.Float64),),
    )

    def __init__(self) -> None:
        self.calls: list[int] = []

    def predict(self, frame: Frame) -> Frame:
        self.calls.append(frame.n_rows)
        if (frame["x"] < 0).any():
            raise ValueError("negative input")
        return Frame({"y": frame["x"] * 2})


@dataclass(frozen=True)
class PickyFlavor(Flavor):
    model: PickyModel = field(default_factory=PickyModel)

    def load(self, directory: Path, policy: LoadPolicy) -> LoadedModel:
        return self.model


class TestBatchFailures:
    async def test_one_bad_request_fails_alone(self, tmp_path: Path) -> None:
        flavor = PickyFlavor()
        scheduler = WorkScheduler(workers=1, shadow_queue_size=0, max_shadow_workers=1)
        runner = InProcessRunner(scheduler, max_batch_size=64)
        fqrv = make_fqrv("v1")
        await runner.start(fqrv, flavor, tmp_path)
        values = [1.0, 2.0, 3.0, -4.0, 5.0, 6.0]
        try:
            outcomes = await asyncio.gather(
                *(runner.predict(fqrv, Frame({"x": np.array([v])})) for v in values),
                return_exceptions=True,
            )
        finally:
            scheduler.close()

        bad = outcomes[3]
        assert isinstance(bad, ModelFailedError)
        good = [o for i, o in enumerate(outcomes) if i != 3]
        assert [o["y"].tolist() for o in good] == [[2.0], [4.0], [6.0], [10.0], [12.0]]
        # the first alone, the other five together, then one by one after that failed
        assert flavor.model.calls == [1, 5, 1, 1, 1, 1, 1]
        assert runner.batch_stats(fqrv).largest == 5

    async def test_matrix_requests_conform_together_and_one_with_a_gap_fails_alone(
        self, tmp_path: Path
    ) -> None:
        # requests as the BASIC and Open Inference routes build them: one matrix each
        flavor = PickyFlavor()
        scheduler = WorkScheduler(workers=1, shadow_queue_size=0, max_shadow_workers=1)
        runner = InProcessRunner(scheduler, max_batch_size=64)
        fqrv = make_fqrv("v1")
        await runner.start(fqrv, flavor, tmp_path)
        values = [1.0, 2.0, 3.0, np.nan, 5.0, 6.0]
        frames = [Frame.of_blocks((Block(("x",), np.array([[v]])),)) for v in values]
        try:
            outcomes = await asyncio.gather(
                *(runner.predict(fqrv, frame) for frame in frames), return_exceptions=True
            )
            alone = await asyncio.gather(runner.predict(fqrv, frames[3]), return_exceptions=True)
        finally:
            scheduler.close()

        assert isinstance(outcomes[3], InferenceRequestInvalidError)
        assert str(outcomes[3]) == str(alone[0])
        assert outcomes[3].field == "x"
        good = [o for i, o in enumerate(outcomes) if i != 3]
        assert [o["y"].tolist() for o in good] == [[2.0], [4.0], [6.0], [10.0], [12.0]]
        # the first alone; the four good ones that waited behind it in one call
        assert flavor.model.calls == [1, 4]


class TestPerServableBatchSize:
    async def test_a_servable_batches_no_more_than_its_own_setting(self, tmp_path: Path) -> None:
        scheduler = WorkScheduler(workers=1, shadow_queue_size=0, max_shadow_workers=1)
        runner = InProcessRunner(scheduler, max_batch_size=64)
        small, default = PickyFlavor(), PickyFlavor()
        await runner.start(make_fqrv("small"), small, tmp_path, max_batch_size=2)
        await runner.start(make_fqrv("default"), default, tmp_path)
        try:
            for fqrv in (make_fqrv("small"), make_fqrv("default")):
                await asyncio.gather(
                    *(runner.predict(fqrv, Frame({"x": np.array([float(v)])})) for v in range(7))
                )
        finally:
            scheduler.close()
        # the first call alone; the six that queued behind it in calls of at most 2 (or 64)
        assert small.model.calls == [1, 2, 2, 2]
        assert default.model.calls == [1, 6]


def test_frames_of_one_layout_are_grouped_whether_or_not_they_share_their_names() -> None:
    def matrix_frame(names: list[str], dtype: type = np.float64) -> Frame:
        return Frame.of_blocks((Block(tuple(names), np.zeros((1, len(names)), dtype=dtype)),))

    shared = ("x", "y")
    frames = [
        Frame.of_blocks((Block(shared, np.zeros((1, 2))),)),
        matrix_frame(["x", "y"]),  # equal names, another tuple
        matrix_frame(["x", "y"], np.float32),
        Frame({"x": np.zeros(1), "y": np.zeros(1)}),  # columns, not a matrix
        Frame.of_blocks((Block(shared, np.ones((2, 2))),)),
        matrix_frame(["y", "x"]),
    ]

    assert _by_layout(frames) == [[0, 1, 4], [2], [3], [5]]
