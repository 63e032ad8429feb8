"""The feedback routes (SPEC §6): evaluator metrics in, ground truth in, log counters out."""

from __future__ import annotations

import math
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request

from forestflow.api.rest import route_docs as docs
from forestflow.api.rest.auth import Guard
from forestflow.api.rest.bodies import read_json
from forestflow.api.rest.endpoints import CONTRACT, SERVABLE, actor, check_owner, route_adder
from forestflow.api.rest.responses import JSONResponse, wrapped
from forestflow.control.plane import ControlPlane
from forestflow.domain.codec import encode
from forestflow.domain.fqrv import FQRV, MAX_NAME_LENGTH, Contract
from forestflow.domain.roles import Permission
from forestflow.errors import InvalidField
from forestflow.feedback.joiner import FeedbackJoiner
from forestflow.feedback.records import parse_feedback
from forestflow.predictionlog.sinks import PredictionSink

MAX_METRICS = 100
"""Most metrics one `PUT …/metrics` may set."""


def build_feedback_router(
    control: ControlPlane,
    joiner: FeedbackJoiner,
    sinks: dict[str, PredictionSink],
    max_request_bytes: int,
    guard: Guard,
) -> APIRouter:
    """`PUT …/metrics`, `POST …/feedback` and `GET /prediction-log/stats`."""
    router = APIRouter()
    add = route_adder(router, guard, Permission.READ)

    async def update_metrics(
        request: Request,
        organization: str,
        project: str,
        contract_number: int,
        release_version: str,
    ) -> JSONResponse:
        fqrv = FQRV(Contract(organization, project, contract_number), release_version)
        check_owner(request, control, fqrv)
        metrics = parse_metrics(await read_json(request, max_request_bytes))
        await control.update_metrics(fqrv, metrics, actor=actor(request))
        performance = control.performance_metrics(fqrv)
        return wrapped(
            "PerformanceMetricsUpdatedSuccessfully",
            {"fqrv": encode(fqrv), "performanceMetrics": performance},
        )

    async def feedback(
        request: Request, organization: str, project: str, contract_number: int
    ) -> JSONResponse:
        contract = Contract(organization, project, contract_number)
        records = parse_feedback(await read_json(request, max_request_bytes))
        control.contract_settings(contract)  # 404 for an unknown contract
        outcome = joiner.join(contract, records)
        if outcome.updates:
            await control.record_feedback(outcome.updates, actor=actor(request))
        return wrapped(
            "FeedbackAccepted",
            {
                "contract": encode(contract),
                "records": len(records),
                "matched": outcome.matched,
                "unknown": outcome.unknown,
                "mismatched": outcome.mismatched,
                "refused": [
                    {
                        "index": refusal.index,
                        "key": refusal.key,
                        "field": refusal.field,
                        "reason": refusal.reason,
                    }
                    for refusal in outcome.refused
                ],
                "servables": [
                    {"fqrv": encode(fqrv), "metrics": dict(outcome.updates[fqrv].values)}
                    for fqrv in sorted(outcome.updates)
                ],
            },
        )

    async def log_stats() -> JSONResponse:
        return wrapped(
            "PredictionLogStats",
            {
                "sinks": {name: encode(sink.stats()) for name, sink in sinks.items()},
                "feedback": encode(joiner.joiner_stats()),
            },
        )

    add("PUT", [SERVABLE + "/metrics"], Permission.DEPLOY, doc=docs.UPDATE_METRICS)(update_metrics)
    add("POST", [CONTRACT + "/feedback"], Permission.MANAGE_CONTRACTS, doc=docs.FEEDBACK_DOC)(
        feedback
    )
    add("GET", ["/prediction-log/stats"], doc=docs.LOG_STATS)(log_stats)
    return router


def parse_metrics(body: Any) -> dict[str, float]:
    """`{"metrics": {name: number}}` → the metrics; anything else is a 422 naming the field."""
    if not isinstance(body, dict) or not isinstance(body.get("metrics"), dict):
        raise InvalidField('expected {"metrics": {"<name>": <number>, ...}}', field="metrics")
    metrics: dict[str, Any] = body["metrics"]
    if not metrics:
        raise InvalidField("no metrics given", field="metrics")
    if len(metrics) > MAX_METRICS:
        raise InvalidField(f"at most {MAX_METRICS} metrics per request", field="metrics")
    parsed: dict[str, float] = {}
    for name, value in metrics.items():
        field = f"metrics.{name}"
        if not name or len(name) > MAX_NAME_LENGTH:
            raise InvalidField(f"names are 1 to {MAX_NAME_LENGTH} characters", field=field)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidField(f"expected a number, got {value!r}", field=field)
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise InvalidField(f"expected a finite number, got {value!r}", field=field)
        parsed[name] = number
    return parsed
