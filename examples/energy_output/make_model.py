"""Train the quickstart model: a small GradientBoostingRegressor exported to ONNX.

Synthetic power-plant data (fixed seed): the net hourly energy output (about 420–496 MW) of
a combined-cycle plant from four ambient readings. The ONNX graph has one float input per
feature, each [None, 1] and named like the feature, so it is served without featureNames,
and one output `prediction` [None, 1]. Run: `python examples/energy_output/make_model.py`
(needs scikit-learn and skl2onnx, both in the `test` extra).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.pipeline import Pipeline

FEATURES = ("TemperatureCelcius", "ExhaustVacuumHg", "AmbientPressureMillibar", "RelativeHumidity")
# Uniform ranges of the readings, like the public Combined Cycle Power Plant data set.
RANGES = ((1.8, 37.1), (25.4, 81.6), (992.9, 1033.3), (25.6, 100.0))
SEED = 20240101
OUTPUT = Path(__file__).with_name("model.onnx")


def make_data(rows: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Readings and the energy output they give (a linear plant response plus noise)."""
    low, high = np.array(RANGES).T
    readings = rng.uniform(low, high, size=(rows, len(FEATURES)))
    temperature, vacuum, pressure, humidity = readings.T
    output = (
        454.4
        - 1.98 * (temperature - 19.6)
        - 0.23 * (vacuum - 54.3)
        + 0.06 * (pressure - 1013.3)
        - 0.16 * (humidity - 73.3)
        + rng.normal(0.0, 3.0, size=rows)
    )
    return readings, np.clip(output, 420.0, 496.0)


def main() -> None:
    """Fit the model and write model.onnx next to this script."""
    rng = np.random.default_rng(SEED)
    readings, output = make_data(2000, rng)
    # The pass-through ColumnTransformer makes skl2onnx take one input per feature and
    # concatenate them (in this order) in front of the trees; a bare regressor takes one.
    everything = ColumnTransformer([("readings", "passthrough", list(range(len(FEATURES))))])
    model = Pipeline(
        [
            ("readings", everything),
            ("gbr", GradientBoostingRegressor(n_estimators=40, max_depth=3, random_state=SEED)),
        ]
    )
    model.fit(readings, output)
    onnx_model = convert_sklearn(
        model,
        initial_types=[(name, FloatTensorType([None, 1])) for name in FEATURES],
        final_types=[("prediction", FloatTensorType([None, 1]))],
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    onnx_model.graph.name = "energy_output"  # skl2onnx puts a random uuid here; keep bytes stable
    OUTPUT.write_bytes(onnx_model.SerializeToString())
    print(f"wrote {OUTPUT} ({OUTPUT.stat().st_size} bytes)")  # noqa: T201 - a script's report


if __name__ == "__main__":
    main()
