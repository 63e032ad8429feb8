"""ForestFlow itself: `forestflow serve` on a scratch data dir, models deployed over REST."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.models import FEATURES, ReferenceModel
from benchmarks.protocols import FORESTFLOW_BASIC, OPEN_INFERENCE_V2
from benchmarks.servers import PROJECT, Launch, ServerSpec, http

FORESTFLOW = PROJECT / ".venv" / "bin" / "forestflow"
ORG = "bench"


def _contract(model: ReferenceModel) -> str:
    return f"{ORG}/{model.name.lower()}/0"


def _deploy(model: ReferenceModel, runtime: str, log_level: str, releases: int):
    flavor = (
        {"Sklearn": {"modelPath": "model.joblib", "featureNames": FEATURES}}
        if runtime == "sklearn"
        else {"ONNX": {"modelPath": "model.onnx", "featureNames": FEATURES}}
    )

    def after_ready(base: str) -> None:
        settings = {
            "expirationPolicy": {"KeepLatest": {"servablesToKeep": releases}},
            "router": {"LatestPhaseInPctBasedRouter": {}},
        }
        http("POST", f"{base}/contract/{_contract(model)}", json.dumps(settings).encode())
        # the newest release serves; with logging on, the older ones shadow every request
        for n in range(1, releases + 1):
            body = {
                "path": model.directory.as_uri(),
                "fqrv": {
                    "contract": {
                        "organization": ORG,
                        "project": model.name.lower(),
                        "contract_number": 0,
                    },
                    "release_version": f"v{n}",
                },
                "flavor": flavor,
                "servableSettings": {
                    "policySettings": {
                        "validityPolicy": [{"ImmediatelyValid": {}}],
                        "phaseInPolicy": {"ImmediatePhaseIn": {}},
                    },
                    "loggingSettings": {"logLevel": log_level},
                },
            }
            http("POST", f"{base}/servable", json.dumps(body).encode(), timeout=120)

    return after_ready


def _shadow_note(model: ReferenceModel):
    def note(base: str) -> str:
        stats = json.loads(http("GET", f"{base}/{_contract(model)}/stats"))
        shadows = [s["ServableMetrics"] for s in stats if s["ServableMetrics"]["shadeCount"]]
        shaded = sum(s["shadeCount"] for s in shadows)
        dropped = sum(s.get("shadowDroppedCount", 0) for s in shadows)
        failed = sum(s.get("shadowFailedCount", 0) for s in shadows)
        offered = shaded + dropped + failed
        share = 100 * shaded / offered if offered else 0.0
        return f"shadows scored {share:.0f}% of {offered} ({dropped} dropped, {failed} failed)"

    return note


def forestflow(
    model: ReferenceModel, runtime: str, log_level: str, shadows: int = 0, *, v2: bool = False
) -> ServerSpec:
    """ForestFlow serving `model`; scored with the BASIC API, or with `v2` the Open
    Inference Protocol over REST (one 2-D tensor in the model's feature order)."""

    def launch(port: int, scratch: Path) -> Launch:
        argv = [
            str(FORESTFLOW),
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(scratch / "data"),
            "--log-level",
            "WARNING",
            "--no-access-log",
        ]
        # joblib files are pickles; the operator allows them for this trusted, local model.
        # Local paths deploy from under the working directory: the models are under cwd.
        env = {
            "FORESTFLOW_SECURITY__ALLOW_UNSAFE_FORMATS": "true",
            "FORESTFLOW_SERVER__GRPC_PORT": "0",
        }
        return Launch(argv, env, cwd=model.directory.parent.parent)

    label = f"ForestFlow {runtime}, log {log_level}" + (f", {shadows} shadows" if shadows else "")
    if v2:
        label += ", Open Inference REST"
    model_name = _contract(model).replace("/", ".")
    return ServerSpec(
        label,
        model,
        runtime,
        OPEN_INFERENCE_V2 if v2 else FORESTFLOW_BASIC,
        f"/v2/models/{model_name}/infer" if v2 else f"/{_contract(model)}/score",
        "/health/ready",
        launch,
        after_ready=_deploy(model, runtime, log_level, shadows + 1),
        note=_shadow_note(model) if shadows else None,
    )
