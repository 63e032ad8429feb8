"""What the server answers, as typed values: one frozen dataclass per answer kind.

Each `from_json` reads the body inside the answer's wrapper (`{"ServableMetrics": {...}}`
→ the inner object) and ignores fields it does not know, so a newer server's additions
break nothing. Policies, routers and settings stay in their wire form (`{"KeepLatest":
{"servablesToKeep": 2}}`): they are what a client sends back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from forestflow.client._names import FQRV, Contract

JSON = dict[str, Any]


def unwrap(answer: Any, name: str) -> Any:
    """The body of `{name: body}`; a bare body as it is."""
    if isinstance(answer, Mapping) and len(answer) == 1 and name in answer:
        return answer[name]
    return answer


def _fqrv(body: Mapping[str, Any]) -> FQRV:
    return FQRV.from_json(body["fqrv"])


@dataclass(frozen=True, slots=True)
class ContractSettings:
    """A contract's router and expiration policy, in their wire form."""

    expiration_policy: JSON
    router: JSON

    @classmethod
    def from_json(cls, answer: Any) -> ContractSettings:
        """From `{"ContractSettings": {...}}`."""
        body = unwrap(answer, "ContractSettings")
        return cls(dict(body.get("expirationPolicy") or {}), dict(body.get("router") or {}))


@dataclass(frozen=True, slots=True)
class Release:
    """One servable of a contract as listed: loaded, or recorded but failed to load."""

    fqrv: FQRV
    failure: str | None = None
    """Why the servable could not be loaded; None when it is loaded."""

    @property
    def state(self) -> str:
        """`loaded` or `failed`."""
        return "failed" if self.failure is not None else "loaded"

    @classmethod
    def from_json(cls, item: Mapping[str, Any]) -> Release:
        """From `{"FQRV": {...}, "state"?, "failure"?}`."""
        failure = item.get("failure") if item.get("state") == "failed" else None
        return cls(FQRV.from_json(item["FQRV"]), failure or None)


@dataclass(frozen=True, slots=True)
class ServableMetrics:
    """What the server knows of one servable now (`stats`)."""

    fqrv: FQRV
    created_at_ms: int
    became_valid_at_ms: int | None
    score_count: int
    shade_count: int
    current_phase_in_pct: int
    performance_metrics: dict[str, float]
    shadow_dropped_count: int = 0
    shadow_failed_count: int = 0
    state: str = "loaded"
    failure: str | None = None

    @property
    def valid(self) -> bool:
        """Whether the servable has become valid at least once."""
        return self.became_valid_at_ms is not None

    @classmethod
    def from_json(cls, answer: Any) -> ServableMetrics:
        """From `{"ServableMetrics": {...}}`."""
        body = unwrap(answer, "ServableMetrics")
        return cls(
            fqrv=_fqrv(body),
            created_at_ms=int(body["createdAtMS"]),
            became_valid_at_ms=body.get("becameValidAtMS"),
            score_count=int(body.get("scoreCount", 0)),
            shade_count=int(body.get("shadeCount", 0)),
            current_phase_in_pct=int(body.get("currentPhaseInPct", 0)),
            performance_metrics=dict(body.get("performanceMetrics") or {}),
            shadow_dropped_count=int(body.get("shadowDroppedCount", 0)),
            shadow_failed_count=int(body.get("shadowFailedCount", 0)),
            state=str(body.get("state", "loaded")),
            failure=body.get("failure"),
        )


@dataclass(frozen=True, slots=True)
class ServableSettings:
    """A servable's policy, logging and batching settings, in their wire form."""

    fqrv: FQRV
    policy_settings: JSON
    logging_settings: JSON
    batching_settings: JSON = field(default_factory=dict)

    @classmethod
    def from_json(cls, answer: Any) -> ServableSettings:
        """From `{"ServableSettings": {...}}`."""
        body = unwrap(answer, "ServableSettings")
        return cls(
            _fqrv(body),
            dict(body.get("policySettings") or {}),
            dict(body.get("loggingSettings") or {}),
            dict(body.get("batchingSettings") or {}),
        )


@dataclass(frozen=True, slots=True)
class Feature:
    """One input or output of a model: its name, type, shape and missing-value support."""

    name: str
    type: str
    shape: list[int]
    accepts_missing: bool

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Feature:
        """From a `features` or `outputs` entry of `BasicMetaData`."""
        shape = [int(n) for n in body.get("shape", [])]
        return cls(body["name"], body["type"], shape, bool(body.get("acceptsMissing", False)))


@dataclass(frozen=True, slots=True)
class Metadata:
    """What a loaded servable's model takes and answers (`BasicMetaData`)."""

    fqrv: FQRV
    description: str
    inputs: list[JSON]
    """Inputs grouped by type: ready to copy into a score request's `schema`."""
    features: list[Feature]
    outputs: list[Feature]

    @classmethod
    def from_json(cls, answer: Any) -> Metadata:
        """From `{"BasicMetaData": {...}}`."""
        body = unwrap(answer, "BasicMetaData")
        return cls(
            _fqrv(body),
            str(body.get("description", "")),
            [dict(entry) for entry in body.get("inputs", [])],
            [Feature.from_json(entry) for entry in body.get("features", [])],
            [Feature.from_json(entry) for entry in body.get("outputs", [])],
        )


@dataclass(frozen=True, slots=True)
class Deployed:
    """A deploy the server acknowledged: durable, its model loaded."""

    fqrv: FQRV
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, answer: Any) -> Deployed:
        """From `{"ServableCreatedSuccessfully": {"fqrv", "warnings"?}}`."""
        body = unwrap(answer, "ServableCreatedSuccessfully")
        return cls(_fqrv(body), [str(w) for w in body.get("warnings", [])])


@dataclass(frozen=True, slots=True)
class Prediction:
    """A scored request: the servable that answered and its columns, row by row."""

    fqrv: FQRV
    servable_fqrv: str
    schema: list[JSON]
    datum: list[JSON]

    @property
    def columns(self) -> list[str]:
        """The output names, in order."""
        return [name for entry in self.schema for name in entry.get("fields", [])]

    def rows(self) -> list[dict[str, Any]]:
        """One `{output: value}` per row."""
        columns = self.columns
        found = []
        for datum in self.datum:
            values = [
                v for tensor in datum["tensors"] for body in tensor.values() for v in body["data"]
            ]
            found.append(dict(zip(columns, values, strict=True)))
        return found

    @classmethod
    def from_json(cls, answer: Any) -> Prediction:
        """From `{"Prediction": {...}}`."""
        body = unwrap(answer, "Prediction")
        return cls(
            _fqrv(body),
            str(body.get("servableFQRV", "")),
            [dict(e) for e in body["schema"]],
            [dict(d) for d in body["datum"]],
        )


@dataclass(frozen=True, slots=True)
class Refusal:
    """A feedback record the server refused: which, and why."""

    index: int
    key: str | None
    field: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class FeedbackAccepted:
    """What became of a batch of ground-truth records."""

    contract: Contract
    records: int
    matched: int
    unknown: int
    mismatched: int
    refused: list[Refusal]
    servables: dict[FQRV, dict[str, float]]
    """The rolling metrics of each servable the records moved."""

    @classmethod
    def from_json(cls, answer: Any) -> FeedbackAccepted:
        """From `{"FeedbackAccepted": {...}}`."""
        body = unwrap(answer, "FeedbackAccepted")
        return cls(
            Contract.from_json(body["contract"]),
            int(body["records"]),
            int(body["matched"]),
            int(body["unknown"]),
            int(body.get("mismatched", 0)),
            [
                Refusal(int(r["index"]), r.get("key"), r.get("field"), str(r["reason"]))
                for r in body.get("refused", [])
            ],
            {_fqrv(s): dict(s.get("metrics") or {}) for s in body.get("servables", [])},
        )


@dataclass(frozen=True, slots=True)
class SinkCounters:
    """One prediction sink's counters since the server started."""

    emitted: int
    written: int
    dropped: int


@dataclass(frozen=True, slots=True)
class PredictionLogStats:
    """The prediction sinks' counters, and the feedback join's."""

    sinks: dict[str, SinkCounters]
    feedback: JSON

    @classmethod
    def from_json(cls, answer: Any) -> PredictionLogStats:
        """From `{"PredictionLogStats": {...}}`."""
        body = unwrap(answer, "PredictionLogStats")
        sinks = {
            name: SinkCounters(int(c["emitted"]), int(c["written"]), int(c["dropped"]))
            for name, c in body.get("sinks", {}).items()
        }
        return cls(sinks, dict(body.get("feedback") or {}))


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One control command or automatic change, and the token that made it."""

    seq: int
    kind: str
    recorded_at_ms: int
    actor: str | None
    event: JSON

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> HistoryEntry:
        """From an entry of `{"History": {"entries": [...]}}`."""
        return cls(
            int(body["seq"]),
            str(body["kind"]),
            int(body["recordedAtMS"]),
            body.get("actor"),
            dict(body.get("event") or {}),
        )


@dataclass(frozen=True, slots=True)
class Token:
    """A bearer token as listed (never its secret)."""

    name: str
    role: str
    created_at_ms: int
    revoked_at_ms: int | None

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Token:
        """From an entry of `{"Tokens": {"tokens": [...]}}`."""
        return cls(
            str(body["name"]), str(body["role"]), int(body["createdAtMS"]), body.get("revokedAtMS")
        )


@dataclass(frozen=True, slots=True)
class CreatedToken:
    """A token just made: the only time its secret is shown."""

    name: str
    role: str
    token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class PredictionEvent:
    """One prediction as the prediction log records it, with its sequence number."""

    seq: int
    fqrv: FQRV
    served_request: bool
    timestamp_ms: int
    latency_ms: float
    key: str | None
    row_keys: list[str] | None
    features: dict[str, list[Any]]
    """The request's columns, by feature name."""
    configs: dict[str, str]
    prediction: dict[str, list[Any]]
    """The prediction's columns, by output name."""
    record: JSON = field(repr=False, compare=False)
    """The record as the server sent it (docs/prediction-log.md), `seq` included."""

    @property
    def rows(self) -> int:
        """Rows of the request."""
        return max((len(column) for column in self.features.values()), default=0)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> PredictionEvent:
        """From the body of a `{"PredictionEvent": {...}}` line."""
        request = body.get("request") or {}
        return cls(
            seq=int(body["seq"]),
            fqrv=_fqrv(body),
            served_request=bool(body["servedRequest"]),
            timestamp_ms=int(body["timestampMS"]),
            latency_ms=float(body.get("latencyMS", 0.0)),
            key=body.get("key"),
            row_keys=body.get("rowKeys"),
            features=dict(request.get("features") or {}),
            configs=dict(request.get("configs") or {}),
            prediction=dict(body.get("prediction") or {}),
            record=dict(body),
        )


@dataclass(frozen=True, slots=True)
class EventsMissed:
    """Events a follower fell behind on: the server no longer held them (matching or not)."""

    count: int


@dataclass(frozen=True, slots=True)
class EventsEnd:
    """The last line of a stream of events: where to resume, and whether the server is
    shutting down (then there is nothing to resume)."""

    resume_after: int
    server_closing: bool = False


def event_item(line: Mapping[str, Any]) -> PredictionEvent | EventsMissed | EventsEnd:
    """One line of `GET /prediction-log/events`: an event, a gap, or the end."""
    ((name, body),) = line.items()
    if name == "PredictionEvent":
        return PredictionEvent.from_json(body)
    if name == "PredictionEventsMissed":
        return EventsMissed(int(body["count"]))
    if name == "PredictionEventsEnd":
        return EventsEnd(int(body["resumeAfter"]), bool(body.get("serverClosing", False)))
    raise ValueError(f"unexpected line in the prediction events: {name}")


@dataclass(frozen=True, slots=True)
class EventsPage:
    """The prediction events the server holds after a cursor, at one moment."""

    events: list[PredictionEvent]
    missed: int
    """Events after the cursor the server no longer held."""
    resume_after: int
    """The sequence number to read after next."""

    @classmethod
    def from_json(cls, lines: list[Mapping[str, Any]]) -> EventsPage:
        """From the lines of a `GET /prediction-log/events` answer."""
        events, missed, resume = [], 0, 0
        for line in lines:
            item = event_item(line)
            if isinstance(item, PredictionEvent):
                events.append(item)
            elif isinstance(item, EventsMissed):
                missed += item.count
            else:
                resume = item.resume_after
        return cls(events, missed, resume)
