"""The two reference models (GB, LR) on 30 synthetic features, saved as joblib and ONNX."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import onnxruntime as ort
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import make_regression
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.linear_model import LinearRegression

N_FEATURES = 30
FEATURES = [f"f{i}" for i in range(N_FEATURES)]
SEED = 20240917


@dataclass(frozen=True, slots=True)
class ReferenceModel:
    """A fitted model, where its files are, and rows to score it on."""

    name: str
    directory: Path
    estimator: object
    rows: np.ndarray  # held-out rows the servers are checked and loaded with

    @property
    def joblib_path(self) -> Path:
        return self.directory / "model.joblib"

    @property
    def onnx_path(self) -> Path:
        return self.directory / "model.onnx"

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """In-process predictions: what every server must answer."""
        return np.asarray(self.estimator.predict(rows), dtype=np.float64).ravel()  # type: ignore[attr-defined]

    def predict_onnx(self, rows: np.ndarray) -> np.ndarray:
        """In-process predictions of the ONNX export (float32 inputs)."""
        session = ort.InferenceSession(str(self.onnx_path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        out = session.run(None, {name: rows.astype(np.float32)})[0]
        return np.asarray(out, dtype=np.float64).ravel()


def _dataset() -> tuple[np.ndarray, np.ndarray]:
    # generated, not downloaded: the same seed gives the same data on every machine
    x, y = make_regression(
        n_samples=4000, n_features=N_FEATURES, n_informative=20, noise=5.0, random_state=SEED
    )
    return x, y


def _export_onnx(estimator: object, path: Path) -> None:
    onx = convert_sklearn(
        estimator, initial_types=[("input", FloatTensorType([None, N_FEATURES]))], target_opset=17
    )
    path.write_bytes(onx.SerializeToString())


def build(root: Path) -> dict[str, ReferenceModel]:
    """Train GB and LR, write model.joblib and model.onnx under root/<name>/."""
    x, y = _dataset()
    train, test = slice(0, 3500), slice(3500, None)
    estimators = {
        "GB": GradientBoostingRegressor(n_estimators=100, random_state=SEED),
        "LR": LinearRegression(),
    }
    models = {}
    for name, estimator in estimators.items():
        estimator.fit(x[train], y[train])
        directory = root / name.lower()
        directory.mkdir(parents=True, exist_ok=True)
        joblib.dump(estimator, directory / "model.joblib")
        _export_onnx(estimator, directory / "model.onnx")
        models[name] = ReferenceModel(name, directory, estimator, x[test])
    return models
