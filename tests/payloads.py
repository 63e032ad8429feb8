"""Builders for HTTP payloads and paths, shared by the integration and e2e suites."""

from __future__ import annotations

from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures"
EXAMPLES = Path(__file__).parent.parent / "examples"

POWERPLANT_FEATURES = [
    "TemperatureCelcius",
    "ExhaustVacuumHg",
    "AmbientPressureMillibar",
    "RelativeHumidity",
]
POWERPLANT_ROWS = [[14.96, 41.76, 1024.07, 73.17], [25.18, 62.96, 1020.04, 59.08]]
SINGLE_INPUT_MODEL = FIXTURES / "onnx" / "rf_powerplant_single_input"


def contract_json(
    org: str = "samples", project: str = "energy_output", n: int = 0
) -> dict[str, Any]:
    """A contract id as the API emits it."""
    return {"organization": org, "project": project, "contractNumber": n}


def fqrv_json(
    release: str, org: str = "samples", project: str = "energy_output", n: int = 0
) -> dict[str, Any]:
    """An FQRV as the API emits it."""
    return {"contract": contract_json(org, project, n), "releaseVersion": release}


def contract_settings(keep: int = 2, router: str = "LatestPhaseInPctBasedRouter") -> dict[str, Any]:
    """ContractSettings with KeepLatest(keep) and the named router."""
    return {"expirationPolicy": {"KeepLatest": {"servablesToKeep": keep}}, "router": {router: {}}}


def serve_body(
    release: str,
    *,
    path: Path | str = SINGLE_INPUT_MODEL,
    org: str = "samples",
    project: str = "energy_output",
    n: int = 0,
    flavor: dict[str, Any] | None = None,
    validity: list[dict[str, Any]] | None = None,
    phase_in: dict[str, Any] | None = None,
    log_level: str = "FULL",
) -> dict[str, Any]:
    """A BasicServeRequest deploying an ONNX power-plant model by default."""
    return {
        "path": path if isinstance(path, str) else path.as_uri(),
        "fqrv": {
            "contract": {"organization": org, "project": project, "contract_number": n},
            "release_version": release,
        },
        "flavor": flavor
        or {"ONNX": {"modelPath": "model.onnx", "featureNames": POWERPLANT_FEATURES}},
        "servableSettings": {
            "policySettings": {
                "validityPolicy": validity or [{"ImmediatelyValid": {}}],
                "phaseInPolicy": phase_in or {"ImmediatePhaseIn": {}},
            },
            "loggingSettings": {"logLevel": log_level},
        },
    }


def score_body(
    rows: list[list[Any]] | None = None,
    features: list[str] | None = None,
    tensor_type: str = "Float64",
    configs: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A BASIC score request with one schema group of `tensor_type`."""
    rows = POWERPLANT_ROWS if rows is None else rows
    body: dict[str, Any] = {
        "schema": [{"type": tensor_type, "fields": features or POWERPLANT_FEATURES}],
        "datum": [{"tensors": [{tensor_type: {"data": row}}]} for row in rows],
    }
    if configs is not None:
        body["configs"] = configs
    return body


def prediction_values(response_json: dict[str, Any]) -> list[list[Any]]:
    """Per row, every value of a Prediction response in schema order."""
    rows = []
    for datum in response_json["Prediction"]["datum"]:
        values: list[Any] = []
        for tensor in datum["tensors"]:
            (body,) = tensor.values()
            values.extend(body["data"])
        rows.append(values)
    return rows
