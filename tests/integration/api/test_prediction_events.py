"""`GET /prediction-log/events`: the latest prediction events as JSON Lines, filtered, from
a cursor, followed as they happen (what `forestflow tail` reads)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.integration.api.conftest import Harness
from tests.payloads import POWERPLANT_FEATURES, contract_settings, score_body, serve_body

EVENTS = "/prediction-log/events"
NDJSON = "application/x-ndjson"


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def events_of(text: str) -> list[dict[str, Any]]:
    return [line["PredictionEvent"] for line in lines(text) if "PredictionEvent" in line]


@pytest.fixture
async def two_contracts(harness: Harness) -> Harness:
    """samples.energy_output.0 with v1 serving and v2 shadowing; samples.other.0 with v1."""
    client = harness.client
    for body in (
        serve_body("v1"),
        serve_body("v1", project="other"),
    ):
        assert (await client.post("/servable", json=body)).status_code == 201
    await harness.tick(seconds=1)
    shadow = serve_body("v2", validity=[{"NeverValid": {}}])
    assert (await client.post("/servable", json=shadow)).status_code == 201
    await harness.tick()
    return harness


async def score(harness: Harness, project: str = "energy_output", reqid: str = "r") -> None:
    body = score_body(configs={"reqid": reqid})
    response = await harness.client.post(f"/samples/{project}/0/score", json=body)
    assert response.status_code == 200, response.text
    await harness.settle()
    assert await harness.app.sink.flush()


class TestReading:
    async def test_the_held_events_come_as_records_with_their_sequence_numbers(
        self, two_contracts: Harness
    ) -> None:
        await score(two_contracts, reqid="a")

        response = await two_contracts.client.get(EVENTS, params={"last": 10})

        assert response.status_code == 200
        assert response.headers["content-type"] == NDJSON
        found = events_of(response.text)
        assert [(e["seq"], e["fqrv"]["releaseVersion"], e["servedRequest"]) for e in found] == [
            (1, "v1", True),
            (2, "v2", False),
        ]
        event = found[0]
        assert event["schemaVersion"] == 1
        assert event["request"]["configs"] == {"reqid": "a"}
        assert list(event["request"]["features"]) == POWERPLANT_FEATURES
        assert [len(column) for column in event["prediction"].values()] == [2]  # two rows
        assert lines(response.text)[-1] == {"PredictionEventsEnd": {"resumeAfter": 2}}

    async def test_by_default_a_reader_starts_now(self, two_contracts: Harness) -> None:
        await score(two_contracts)

        response = await two_contracts.client.get(EVENTS)

        assert lines(response.text) == [{"PredictionEventsEnd": {"resumeAfter": 2}}]

    async def test_after_a_cursor_only_later_events_come(self, two_contracts: Harness) -> None:
        await score(two_contracts, reqid="a")
        await score(two_contracts, reqid="b")

        response = await two_contracts.client.get(EVENTS, params={"after": 2})

        assert [e["request"]["configs"]["reqid"] for e in events_of(response.text)] == ["b", "b"]
        assert lines(response.text)[-1] == {"PredictionEventsEnd": {"resumeAfter": 4}}

    async def test_filters_by_contract_and_by_servable(self, two_contracts: Harness) -> None:
        await score(two_contracts, reqid="a")
        await score(two_contracts, "other", reqid="o")
        client = two_contracts.client

        by_contract = await client.get(EVENTS, params={"last": 10, "contract": "samples.other.0"})
        by_servable = await client.get(
            EVENTS, params={"last": 10, "servable": "samples.energy_output.0.v2"}
        )

        assert [e["seq"] for e in events_of(by_contract.text)] == [3]
        assert [e["seq"] for e in events_of(by_servable.text)] == [2]
        assert [e["servedRequest"] for e in events_of(by_servable.text)] == [False]

    async def test_last_counts_only_matching_events(self, two_contracts: Harness) -> None:
        for reqid in "abc":
            await score(two_contracts, reqid=reqid)

        response = await two_contracts.client.get(
            EVENTS, params={"last": 2, "servable": "samples.energy_output.0.v1"}
        )

        assert [e["request"]["configs"]["reqid"] for e in events_of(response.text)] == ["b", "c"]

    async def test_a_reader_that_fell_behind_is_told_how_many_it_missed(
        self, two_contracts: Harness
    ) -> None:
        await score(two_contracts)
        two_contracts.app.events.count_dropped(3)  # as the emitter does when its buffer is full

        response = await two_contracts.client.get(EVENTS, params={"after": 1})

        assert lines(response.text)[0] == {"PredictionEventsMissed": {"count": 3}}
        assert [e["seq"] for e in events_of(response.text)] == [2]
        assert lines(response.text)[-1] == {"PredictionEventsEnd": {"resumeAfter": 5}}


class TestFollowing:
    async def test_a_follower_gets_new_events_until_the_stream_ends(
        self, two_contracts: Harness
    ) -> None:
        client = two_contracts.client
        params = {
            "follow": "true",
            "after": 0,
            "wait": 60,
            "servable": "samples.energy_output.0.v1",
        }
        follower = asyncio.create_task(client.get(EVENTS, params=params))
        await score(two_contracts, reqid="a")
        await score(two_contracts, reqid="b")

        two_contracts.app.end_streams()  # as on SIGTERM: every stream ends at once
        response = await follower

        assert [e["request"]["configs"]["reqid"] for e in events_of(response.text)] == ["a", "b"]
        assert lines(response.text)[-1] == {
            "PredictionEventsEnd": {"resumeAfter": 4, "serverClosing": True}
        }

    async def test_wait_zero_ends_a_follow_stream_at_once(self, two_contracts: Harness) -> None:
        response = await two_contracts.client.get(EVENTS, params={"follow": True, "wait": 0})

        assert lines(response.text) == [{"PredictionEventsEnd": {"resumeAfter": 0}}]


class TestRefusals:
    @pytest.mark.parametrize(
        ("params", "field"),
        [
            ({"contract": "samples.energy_output"}, "contract"),
            ({"servable": "samples.energy_output.0"}, "servable"),
            ({"after": -1}, "after"),
            ({"last": 1001}, "last"),
            ({"wait": 3601}, "wait"),
            ({"follow": "maybe"}, "query.follow"),
        ],
    )
    async def test_bad_parameters_are_a_422_naming_them(
        self, harness: Harness, params: dict[str, Any], field: str
    ) -> None:
        response = await harness.client.get(EVENTS, params=params)

        assert response.status_code == 422
        assert response.json()["InvalidRequestError"]["field"] == field


async def test_the_route_needs_no_contract(harness: Harness) -> None:
    """Nothing deployed, nothing scored: an empty stream, not an error."""
    await harness.client.post("/contract/samples/energy_output/0", json=contract_settings())

    response = await harness.client.get(EVENTS, params={"last": 5})

    assert lines(response.text) == [{"PredictionEventsEnd": {"resumeAfter": 0}}]
