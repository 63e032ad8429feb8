"""The MLflow scoring protocol (`mlflow models serve`): `/invocations`, `/ping`, `/health`
and `/version` per contract and per release, over the BASIC API's inference path."""

from __future__ import annotations

from forestflow.api.mlflow_scoring.rest import build_mlflow_router

__all__ = ["build_mlflow_router"]
