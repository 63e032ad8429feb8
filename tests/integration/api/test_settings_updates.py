"""Settings updates change only what they name (issue 11, scope 1; SPEC §2.4).

Every settings route — a servable's policy and logging settings under both their paths,
and a contract's settings — merges its body into the current settings: a field the body
names replaces the current value, a field left out keeps it, `{}` changes nothing, and a
refused body changes nothing. Over the real app, on a real SQLite file.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from tests.integration.api.conftest import Harness, HarnessFactory
from tests.payloads import serve_body

CONTRACT = "/samples/energy_output/0"
SERVABLE = CONTRACT + "/v1"

# Every field away from its default, so that a field reset by an update shows.
POLICY: dict[str, Any] = {
    "validityPolicy": [{"MinServedEventsBasedValidity": {"validAfterMinServedEvents": 5}}],
    "phaseInPolicy": {"LinearTimeBasedPhaseIn": {"phaseInOverSecs": 3600}},
}
LOGGING: dict[str, Any] = {
    "logLevel": "SAMPLE",
    "keyFeatures": ["reqid", "gameid"],
    "keyFeaturesSeparator": "-",
    "sampleRate": 0.5,
}
CONTRACT_SETTINGS: dict[str, Any] = {
    "expirationPolicy": {
        "KeepTopRanked": {"servablesToKeep": 1, "metricToEvaluate": "mae", "ordering": "ASC"}
    },
    "router": {"FairPhaseInPctBasedRouter": {}},
}
# One new value per field: each field's default, so these also show how to reset a field
# (name it with its default), and a value unlike the deployed one.
NEW_POLICY: dict[str, Any] = {
    "validityPolicy": [{"ImmediatelyValid": {}}],
    "phaseInPolicy": {"ImmediatePhaseIn": {}},
}
NEW_LOGGING: dict[str, Any] = {
    "logLevel": "FULL",
    "keyFeatures": [],
    "keyFeaturesSeparator": ".",
    "sampleRate": 0.01,
}
NEW_CONTRACT: dict[str, Any] = {
    "expirationPolicy": {"KeepLatest": {"servablesToKeep": 2}},
    "router": {"LatestPhaseInPctBasedRouter": {}},
}

SERVABLE_ROUTES = [
    ("/policy-settings", "policySettings", NEW_POLICY),
    ("/policy", "policySettings", NEW_POLICY),
    ("/logging-settings", "loggingSettings", NEW_LOGGING),
    ("/logging", "loggingSettings", NEW_LOGGING),
]
SERVABLE_FIELDS = [
    (route, group, field, new[field]) for route, group, new in SERVABLE_ROUTES for field in new
]


async def deployed(harness: Harness) -> dict[str, Any]:
    """Deploy v1 with every setting away from its default; its settings as read back."""
    body = serve_body("v1", validity=POLICY["validityPolicy"], phase_in=POLICY["phaseInPolicy"])
    body["servableSettings"]["loggingSettings"] = LOGGING
    body["contractSettings"] = CONTRACT_SETTINGS
    answer = await harness.client.post("/servable", json=body)
    assert answer.status_code == 201, answer.text
    return await current(harness)


async def current(harness: Harness) -> dict[str, Any]:
    """The contract's and v1's settings, as the API reads them back."""
    servable = await harness.client.get(SERVABLE + "/settings")
    contract = await harness.client.get(CONTRACT + "/contract-settings")
    assert servable.status_code == 200, servable.text
    assert contract.status_code == 200, contract.text
    settings = servable.json()["ServableSettings"]
    return {
        "policySettings": settings["policySettings"],
        "loggingSettings": settings["loggingSettings"],
        "batchingSettings": settings["batchingSettings"],
        "contractSettings": contract.json()["ContractSettings"],
    }


def shows(emitted: Any, sent: Any) -> bool:
    """Whether the server's answer `emitted` shows the value `sent`: the same, but for
    parameters `sent` leaves to their defaults (the server names every parameter)."""
    if isinstance(sent, dict):
        return isinstance(emitted, dict) and all(
            key in emitted and shows(emitted[key], value) for key, value in sent.items()
        )
    if isinstance(sent, list):
        return (
            isinstance(emitted, list)
            and len(emitted) == len(sent)
            and all(shows(e, v) for e, v in zip(emitted, sent, strict=True))
        )
    return bool(emitted == sent)


def without(settings: dict[str, Any], group: str, field: str) -> dict[str, Any]:
    """`settings` without one field of one group."""
    rest = copy.deepcopy(settings)
    del rest[group][field]
    return rest


def check_only_changed(
    before: dict[str, Any], after: dict[str, Any], group: str, field: str, value: Any
) -> None:
    """`after` is `before` with `group.field` set to `value`, and nothing else changed."""
    assert without(after, group, field) == without(before, group, field)
    assert shows(after[group][field], value), after[group][field]


async def test_deployed_settings_are_away_from_the_defaults(harness: Harness) -> None:
    before = await deployed(harness)
    assert shows(before["policySettings"], POLICY)
    assert shows(before["loggingSettings"], LOGGING)
    assert shows(before["contractSettings"], CONTRACT_SETTINGS)
    for group, new in [
        ("policySettings", NEW_POLICY),
        ("loggingSettings", NEW_LOGGING),
        ("contractSettings", NEW_CONTRACT),
    ]:
        assert all(before[group][field] != value for field, value in new.items()), group


class TestNamingOneField:
    @pytest.mark.parametrize(
        ("route", "group", "field", "value"),
        SERVABLE_FIELDS,
        ids=[f"{route}:{field}" for route, _, field, _ in SERVABLE_FIELDS],
    )
    async def test_changes_only_that_field_of_a_servable(
        self, harness: Harness, route: str, group: str, field: str, value: Any
    ) -> None:
        before = await deployed(harness)
        answer = await harness.client.put(SERVABLE + route, json={field: value})
        assert answer.status_code == 200, answer.text
        check_only_changed(before, await current(harness), group, field, value)

    @pytest.mark.parametrize("field", list(NEW_CONTRACT))
    async def test_changes_only_that_field_of_a_contract(
        self, harness: Harness, field: str
    ) -> None:
        before = await deployed(harness)
        answer = await harness.client.put(CONTRACT, json={field: NEW_CONTRACT[field]})
        assert answer.status_code == 200, answer.text
        after = await current(harness)
        check_only_changed(before, after, "contractSettings", field, NEW_CONTRACT[field])

    async def test_the_issues_three_cases(self, harness: Harness) -> None:
        before = await deployed(harness)
        client = harness.client
        validity: dict[str, Any] = {"validityPolicy": [{"ImmediatelyValid": {}}]}
        assert (await client.put(SERVABLE + "/policy", json=validity)).status_code == 200
        keys = {"keyFeatures": ["reqid"]}
        assert (await client.put(SERVABLE + "/logging", json=keys)).status_code == 200
        router: dict[str, Any] = {"router": {"LatestPhaseInPctBasedRouter": {}}}
        assert (await client.put(CONTRACT, json=router)).status_code == 200

        after = await current(harness)
        assert after["policySettings"]["phaseInPolicy"] == before["policySettings"]["phaseInPolicy"]
        assert after["loggingSettings"]["logLevel"] == "SAMPLE"
        assert after["loggingSettings"]["sampleRate"] == 0.5
        expiration = after["contractSettings"]["expirationPolicy"]
        assert expiration == before["contractSettings"]["expirationPolicy"]
        assert shows(expiration, CONTRACT_SETTINGS["expirationPolicy"])

    async def test_accepts_every_spelling_of_the_field(self, harness: Harness) -> None:
        before = await deployed(harness)
        body = {"phase_in_policy": {"type": "ImmediatePhaseIn"}}
        answer = await harness.client.put(SERVABLE + "/policy-settings", json=body)
        assert answer.status_code == 200, answer.text
        after = await current(harness)
        check_only_changed(
            before, after, "policySettings", "phaseInPolicy", {"ImmediatePhaseIn": {}}
        )


class TestBodiesThatChangeNothing:
    @pytest.mark.parametrize(
        "path",
        [SERVABLE + route for route, _, _ in SERVABLE_ROUTES] + [CONTRACT],
    )
    async def test_an_empty_body(self, harness: Harness, path: str) -> None:
        before = await deployed(harness)
        answer = await harness.client.put(path, json={})
        assert answer.status_code == 200, answer.text
        assert await current(harness) == before

    @pytest.mark.parametrize(
        ("path", "body", "wire", "field"),
        [
            (
                SERVABLE + "/policy-settings",
                {"phaseInPolicy": {"LinearTimeBasedPhaseIn": {"phaseInOverSecs": -1}}},
                "CreateServableRequestInvalidError",
                "phaseInPolicy.LinearTimeBasedPhaseIn.phaseInOverSecs",
            ),
            (
                SERVABLE + "/policy",
                {"phaseInPolicy": {"ImmediatePhaseIn": {}}, "validityPolicy": [{"Soon": {}}]},
                "CreateServableRequestInvalidError",
                "validityPolicy[0]",
            ),
            (
                SERVABLE + "/logging-settings",
                {"logLevel": "NONE", "sampleRate": 2},
                "CreateServableRequestInvalidError",
                "sampleRate",
            ),
            (
                SERVABLE + "/logging",
                {"keyFeatures": "reqid"},
                "CreateServableRequestInvalidError",
                "keyFeatures",
            ),
            (
                CONTRACT,
                {"router": {"LatestPhaseInPctBasedRouter": {}}, "expirationPolicy": "KeepAll"},
                "ContractValidationError",
                "expirationPolicy",
            ),
            (
                CONTRACT,
                {"router": {"FairPhaseInPctBasedRouter": {}}, "routr": {}},
                "ContractValidationError",
                "routr",
            ),
        ],
        ids=[
            "policy-bad-value",
            "policy-one-good-one-bad",
            "logging-rule-of-the-value",
            "logging-wrong-type",
            "contract-unknown-policy",
            "contract-unknown-field",
        ],
    )
    async def test_a_refused_body(
        self, harness: Harness, path: str, body: dict[str, Any], wire: str, field: str
    ) -> None:
        before = await deployed(harness)
        answer = await harness.client.put(path, json=body)
        assert answer.status_code == 422, answer.text
        assert answer.json()[wire]["field"] == field
        assert await current(harness) == before

    @pytest.mark.parametrize("path", [SERVABLE + "/policy", SERVABLE + "/logging", CONTRACT])
    async def test_a_body_that_is_not_an_object(self, harness: Harness, path: str) -> None:
        before = await deployed(harness)
        answer = await harness.client.put(path, json=[])
        assert answer.status_code == 422, answer.text
        assert "expected an object" in answer.text
        assert await current(harness) == before


async def test_concurrent_updates_of_different_fields_all_apply(harness: Harness) -> None:
    before = await deployed(harness)
    updates = [(SERVABLE + "/logging", {field: value}) for field, value in NEW_LOGGING.items()] + [
        (SERVABLE + "/policy", {field: value}) for field, value in NEW_POLICY.items()
    ]
    answers = await asyncio.gather(*(harness.client.put(path, json=body) for path, body in updates))
    assert [a.status_code for a in answers] == [200] * len(updates)
    after = await current(harness)
    assert after["contractSettings"] == before["contractSettings"]
    assert after["batchingSettings"] == before["batchingSettings"]
    assert shows(after["policySettings"], NEW_POLICY)
    assert shows(after["loggingSettings"], NEW_LOGGING)


async def test_merged_settings_survive_a_restart(harness_factory: HarnessFactory) -> None:
    first = await harness_factory()
    before = await deployed(first)
    client = first.client
    assert (await client.put(SERVABLE + "/logging", json={"logLevel": "NONE"})).status_code == 200
    phase_in = {"phaseInPolicy": {"LinearTimeBasedPhaseIn": {"phaseInOverSecs": 60}}}
    assert (await client.put(SERVABLE + "/policy", json=phase_in)).status_code == 200
    router: dict[str, Any] = {"router": {"LatestPhaseInPctBasedRouter": {}}}
    assert (await client.put(CONTRACT, json=router)).status_code == 200
    merged = await current(first)
    await first.app.shutdown()

    again = await harness_factory(data_dir=first.app.settings.data_dir)
    assert await current(again) == merged
    assert merged["loggingSettings"] == {**before["loggingSettings"], "logLevel": "NONE"}
    assert merged["policySettings"] == {**before["policySettings"], **phase_in}
    assert (
        merged["contractSettings"]["expirationPolicy"]
        == (before["contractSettings"]["expirationPolicy"])
    )
    assert shows(merged["contractSettings"]["router"], router["router"])
