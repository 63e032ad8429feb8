"""`GET /prediction-log/events`: prediction events as they happen, as JSON Lines.

The events come from the emitter's `RingSink` (predictionlog/ring.py), never from the
serving path: a follower reads what the ring holds after its cursor and waits for more.
Each line is one JSON object naming its kind, as every answer does:

- `{"PredictionEvent": {"seq": 17, ...the record}}` — the record the file sink writes
  (docs/prediction-log.md), with its sequence number;
- `{"PredictionEventsMissed": {"count": 3}}` — events the reader fell behind on (the ring
  no longer holds them), whether or not they match its filter;
- `{"PredictionEventsEnd": {"resumeAfter": 42}}` — always the last line: a follower goes
  on with `after=42`; with `"serverClosing": true` the server is shutting down (its
  followers' streams end at once, they are not waited for as in-flight requests).

A `follow` stream stays open at most `wait` seconds, so that neither a forgotten reader
nor a shutdown waits on it for long; clients reconnect with `after`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable

import orjson
from fastapi import APIRouter
from starlette.responses import StreamingResponse

from forestflow.api.rest.auth import Guard
from forestflow.api.rest.endpoints import route_adder
from forestflow.api.rest.openapi import RouteDoc
from forestflow.api.rest.schemas import ref
from forestflow.domain.fqrv import FQRV
from forestflow.domain.roles import Permission
from forestflow.errors import InvalidField
from forestflow.predictionlog.ring import HeldEvent, RingSink

NDJSON = "application/x-ndjson"
MAX_WAIT_S = 3600.0
DEFAULT_WAIT_S = 60.0
_CONTRACT = re.compile(r"[A-Za-z0-9_.-]+\.[0-9]+")
_SERVABLE = re.compile(r"[A-Za-z0-9_.-]+\.[0-9]+\.[A-Za-z0-9_.-]+")
_LINE = {
    "oneOf": [
        {
            "type": "object",
            "required": ["PredictionEvent"],
            "properties": {
                "PredictionEvent": {
                    "type": "object",
                    "required": ["seq", "fqrv", "servedRequest", "timestampMS"],
                    "properties": {"seq": {"type": "integer"}, "fqrv": ref("FQRV")},
                    "description": "The prediction-log record (docs/prediction-log.md) "
                    "with its sequence number.",
                }
            },
        },
        {
            "type": "object",
            "required": ["PredictionEventsMissed"],
            "properties": {
                "PredictionEventsMissed": {
                    "type": "object",
                    "properties": {"count": {"type": "integer"}},
                }
            },
        },
        {
            "type": "object",
            "required": ["PredictionEventsEnd"],
            "properties": {
                "PredictionEventsEnd": {
                    "type": "object",
                    "properties": {
                        "resumeAfter": {"type": "integer"},
                        "serverClosing": {"type": "boolean"},
                    },
                }
            },
        },
    ]
}
EVENTS_DOC = RouteDoc(
    "PredictionEventLine",
    errors=(InvalidField,),
    summary="Prediction events as they happen, as JSON Lines (what `forestflow tail` reads)",
    tag="Feedback",
    media=NDJSON,
    description="One JSON object per line: `PredictionEvent`s, `PredictionEventsMissed` "
    "when the reader fell behind, and a last `PredictionEventsEnd` naming where to resume",
    schemas={"PredictionEventLine": _LINE},
)


def build_prediction_events_router(ring: RingSink, guard: Guard) -> APIRouter:
    """`GET /prediction-log/events`: the events hold every client's features and predictions,
    so the route is open to the roles that may read the history (as the dashboard's recent
    predictions), not to scorers."""
    router = APIRouter()
    add = route_adder(router, guard, Permission.READ_HISTORY)

    @add("GET", ["/prediction-log/events"], doc=EVENTS_DOC)
    async def prediction_events(  # noqa: PLR0917 - the query parameters
        contract: str | None = None,
        servable: str | None = None,
        after: int | None = None,
        last: int = 0,
        follow: bool = False,
        wait: float = DEFAULT_WAIT_S,
    ) -> StreamingResponse:
        match = _filter(contract, servable)
        if after is not None and after < 0:
            raise InvalidField("must be >= 0", field="after")
        if not 0 <= last <= ring.capacity:
            raise InvalidField(f"must be between 0 and {ring.capacity}", field="last")
        if not 0 <= wait <= MAX_WAIT_S:
            raise InvalidField(f"must be between 0 and {MAX_WAIT_S:g} seconds", field="wait")
        cursor = after if after is not None else ring.last(last, match)
        lines = _lines(ring, match, cursor, wait if follow else 0.0)
        return StreamingResponse(lines, media_type=NDJSON)

    return router


def _filter(contract: str | None, servable: str | None) -> Callable[[FQRV], bool]:
    """Which servables' events a reader wants, by their printed names (`org.project.n`,
    `org.project.n.release`)."""
    if contract is not None and not _CONTRACT.fullmatch(contract):
        raise InvalidField("expected <organization>.<project>.<contract_number>", field="contract")
    if servable is not None and not _SERVABLE.fullmatch(servable):
        raise InvalidField(
            "expected <organization>.<project>.<contract_number>.<release_version>",
            field="servable",
        )

    def match(fqrv: FQRV) -> bool:
        return (contract is None or str(fqrv.contract) == contract) and (
            servable is None or str(fqrv) == servable
        )

    return match


async def _lines(
    ring: RingSink, match: Callable[[FQRV], bool], cursor: int, wait_s: float
) -> AsyncIterator[bytes]:
    """The stream: what the ring holds after `cursor`, then (for `wait_s`) what comes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        part = ring.read(cursor)
        cursor = part.cursor
        chunk = [_event_line(held) for held in part.events if match(held.fqrv)]
        if part.missed:
            chunk.insert(0, _line("PredictionEventsMissed", {"count": part.missed}))
        if chunk:
            yield b"".join(chunk)
        if part.events:
            continue  # there may be more held: read on before waiting
        remaining = deadline - loop.time()
        if remaining <= 0 or not await ring.wait(cursor, remaining):
            break
    end = {"resumeAfter": cursor, **({"serverClosing": True} if ring.closed else {})}
    yield _line("PredictionEventsEnd", end)


def _event_line(held: HeldEvent) -> bytes:
    """The record as a `PredictionEvent` line, its bytes reused as they are."""
    return b'{"PredictionEvent":{"seq":%d,%s}}\n' % (held.seq, held.record[1:-1])


def _line(name: str, body: dict[str, int | bool]) -> bytes:
    return orjson.dumps({name: body}) + b"\n"
