"""Save the joblib model as an MLflow model directory (run in the MLflow env)."""

from __future__ import annotations

import sys

import joblib
import mlflow.sklearn

if __name__ == "__main__":
    source, target = sys.argv[1], sys.argv[2]
    # MLflow saves with skops, which refuses tree nodes unless told: we made this model
    mlflow.sklearn.save_model(
        joblib.load(source), target, skops_trusted_types=["sklearn.tree._tree.Tree"]
    )
