"""How a gradient-boosting booster's raw output becomes named response columns.

XGBoost and LightGBM answer the same shapes: one value per row (regression, or the
probability of class 1 for a binary objective), one value per class (multiclass), or
several values per row. Each flavor decides the kind from its objective; this module
names the columns and fills them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from forestflow.domain.frame import Column, TensorType
from forestflow.domain.signature import FeatureSpec

OutputKind = Literal["label", "binary", "classes", "values"]

_LABEL = FeatureSpec("label", TensorType.Int64, description="predicted class index")


@dataclass(frozen=True, slots=True)
class BoosterOutputs:
    """The response columns for one booster, and how to fill them from its raw output."""

    kind: OutputKind
    specs: tuple[FeatureSpec, ...]

    @classmethod
    def of(cls, kind: OutputKind, width: int, objective: str) -> BoosterOutputs:
        """Columns for `kind` with `width` raw values per row.

        label: `label` only; binary: `label` (1 when P(class 1) > 0.5) plus `0` and `1`;
        classes: `label` (argmax) plus one probability column per class; values:
        `prediction`, or `prediction_0 …` for several values per row.
        """
        if kind == "label":
            return cls(kind, (_LABEL,))
        if kind in ("binary", "classes"):
            classes = range(2 if kind == "binary" else width)
            return cls(kind, (_LABEL, *(_probability(i) for i in classes)))
        return cls(kind, _value_specs(objective, width))

    def columns(self, raw: Column) -> dict[str, Column]:
        """Named columns from the booster's raw prediction array."""
        values = np.asarray(raw).astype(np.float64, copy=False)
        if self.kind == "label":
            return {"label": values.reshape(-1).astype(np.int64)}
        if self.kind == "binary":
            positive = values.reshape(-1)
            return {"label": (positive > 0.5).astype(np.int64), "0": 1.0 - positive, "1": positive}
        if self.kind == "classes":
            labels = np.argmax(values, axis=1).astype(np.int64)
            return {"label": labels, **{str(i): values[:, i] for i in range(values.shape[1])}}
        if len(self.specs) == 1:
            return {"prediction": values.reshape(-1)}
        return {spec.name: values[:, i] for i, spec in enumerate(self.specs)}


def _probability(index: int) -> FeatureSpec:
    return FeatureSpec(str(index), TensorType.Float64, description=f"probability of class {index}")


def _value_specs(objective: str, width: int) -> tuple[FeatureSpec, ...]:
    if width == 1:
        return (FeatureSpec("prediction", TensorType.Float64, description=objective),)
    return tuple(
        FeatureSpec(f"prediction_{i}", TensorType.Float64, description=f"{objective}, output {i}")
        for i in range(width)
    )
