"""Bad input to a real server: each request is refused with the status of SPEC §3 and a
message naming the problem, and leaves the server up, still scoring, and its state unchanged.

One server serves the whole module (starting one costs about 1.5 s). It holds contract
`samples/energy_output/0` with servable `v1` (scored once through the router) and an empty
contract `samples/empty/0`. Before each test a fresh client takes a *fingerprint* of
everything the API shows (contracts, releases, settings, metadata, stats with their counts)
plus the artifact cache; after each refusal the fingerprint must be the same, and `v1` must
still answer through the direct route (which does not count toward `scoreCount`).
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import ServerProcess
from tests.payloads import (
    POWERPLANT_FEATURES,
    SINGLE_INPUT_MODEL,
    contract_json,
    contract_settings,
    fqrv_json,
    prediction_values,
    score_body,
    serve_body,
)

pytestmark = pytest.mark.e2e

LIMIT = 65536
"""`server.max_request_bytes` of the module's server."""
CONTRACT = "/samples/energy_output/0"
SERVABLE = CONTRACT + "/v1"
ROUTED = CONTRACT + "/score"
DIRECT = SERVABLE + "/score"
EMPTY_CONTRACT = "/samples/empty/0"
NEW_CONTRACT = 3
"""Refused deploys mostly target this contract, which does not exist: it must not appear."""
REFUSED = ("samples", "energy_output", str(NEW_CONTRACT), "bad")
"""The artifact-cache key of those refused deploys."""
FIRST = POWERPLANT_FEATURES[0]
JSON_HEADERS = {"content-type": "application/json"}

Json = dict[str, Any]


# ------------------------------------------------------------------------------ helpers


def fingerprint(client: httpx.Client, data_dir: Path) -> Json:
    """Everything the API shows about every contract, and the files of the artifact cache."""
    contracts = _get(client, "/contracts/list")
    state: Json = {"contracts": contracts}
    for contract in contracts["Contracts"]["contracts"]:
        base = "/{organization}/{project}/{contractNumber}".format(**contract)
        for view in ("list", "contract-settings", "servable-settings", "stats", "metadata"):
            state[f"{base}/{view}"] = _get(client, f"{base}/{view}")
    # release directories and files; empty parent directories come and go with cleanups
    root = data_dir / "artifacts" / "servables"
    kept = {*root.glob("*/*/*/*"), *(p for p in root.rglob("*") if p.is_file())}
    state["artifacts"] = sorted(str(p.relative_to(root)) for p in kept)
    return state


def _get(client: httpx.Client, path: str) -> Any:
    response = client.get(path)
    assert response.status_code == 200, f"GET {path}: {response.text}"
    return response.json()


def assert_error(
    response: httpx.Response,
    *,
    status: int,
    wire: str | tuple[str, ...],
    field: str | None,
    mentions: tuple[str, ...] = (),
) -> Json:
    """Assert a single-key error answer; `field=None` means the answer names no field."""
    assert response.status_code == status, response.text
    body = response.json()
    names = (wire,) if isinstance(wire, str) else wire
    assert len(body) == 1, body
    (name,) = body
    assert name in names, body
    error: Json = body[name]
    assert error["StatusCode"] == status
    message = error["errorMessage"]
    if field is None:
        assert "field" not in error, error
    else:
        assert error.get("field") == field, error
        assert field in message, message
    for text in mentions:
        assert text in message, f"{text!r} not in {message!r}"
    assert "Traceback" not in response.text
    return error


@dataclass
class Probe:
    """A fresh client, and the state before the test's bad request."""

    server: ServerProcess
    client: httpx.Client
    predictions: list[list[Any]]
    before: Json

    def refused(
        self,
        response: httpx.Response,
        *,
        status: int,
        wire: str | tuple[str, ...],
        field: str | None,
        mentions: tuple[str, ...] = (),
        artifact: tuple[str, ...] | None = None,
    ) -> Json:
        """Assert the error answer, then that nothing changed (see `assert_unchanged`)."""
        error = assert_error(response, status=status, wire=wire, field=field, mentions=mentions)
        self.assert_unchanged(artifact)
        return error

    def assert_unchanged(self, artifact: tuple[str, ...] | None = None) -> None:
        """The server is up, `v1` still scores the same, the state and cache are as before,
        and no copy of the refused `artifact` (org, project, n, release) is left behind."""
        assert self.server.alive()
        good = self.client.post(DIRECT, json=score_body())
        assert good.status_code == 200, good.text
        assert prediction_values(good.json()) == self.predictions
        assert fingerprint(self.client, self.server.data_dir) == self.before
        artifacts = self.server.data_dir / "artifacts"
        incoming = artifacts / "incoming"
        assert not incoming.exists() or not any(incoming.iterdir())
        if artifact is not None:
            assert not artifacts.joinpath("servables", *artifact).exists()


@dataclass(frozen=True)
class Deployment:
    """The module's server and `v1`'s predictions for `score_body()`."""

    server: ServerProcess
    predictions: list[list[Any]]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    env = {"FORESTFLOW_SERVER__MAX_REQUEST_BYTES": str(LIMIT)}
    server = ServerProcess(tmp_path_factory.mktemp("bad") / "data", env)
    try:
        server.start()
        client = server.client
        for response in (
            client.post("/contract" + CONTRACT, json=contract_settings(keep=2)),
            client.post("/servable", json=serve_body("v1")),
            client.post("/contract" + EMPTY_CONTRACT, json=contract_settings()),
            client.post(ROUTED, json=score_body()),
        ):
            assert response.status_code in (200, 201), response.text
        direct = client.post(DIRECT, json=score_body())
        assert direct.status_code == 200, direct.text
        yield Deployment(server, prediction_values(direct.json()))
    finally:
        server.close()


@pytest.fixture
def probe(deployment: Deployment) -> Iterator[Probe]:
    # A fresh connection per test: an answer that breaks its connection stays in its test.
    server = deployment.server
    with httpx.Client(base_url=server.base_url, timeout=30.0) as client:
        before = fingerprint(client, server.data_dir)
        yield Probe(server, client, deployment.predictions, before)


@pytest.fixture(scope="module")
def broken_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Model directories whose `model.onnx` is not a usable ONNX model, by kind of damage."""
    root = tmp_path_factory.mktemp("broken-models")
    good = (SINGLE_INPUT_MODEL / "model.onnx").read_bytes()
    contents = {
        "random-bytes": random.Random(7).randbytes(4096),
        "truncated": good[: len(good) // 2],
        "empty": b"",
        "json": (SINGLE_INPUT_MODEL / "expected.json").read_bytes(),
    }
    directories = {}
    for kind, content in contents.items():
        directory = root / kind
        directory.mkdir()
        (directory / "model.onnx").write_bytes(content)
        directories[kind] = directory
    return directories


def _with(body: Json, dotted: str, value: Any) -> Json:
    """A deep copy of `body` with the value at `dotted` (keys joined by '.') replaced."""
    copy = json.loads(json.dumps(body))
    *parents, last = dotted.split(".")
    target = copy
    for key in parents:
        target = target[key]
    target[last] = value
    return copy


def _refused_deploy(**overrides: Any) -> Json:
    """A serve request to the not-yet-existing contract, release `bad`."""
    return serve_body("bad", n=NEW_CONTRACT, **overrides)


def _padded(body: Json, size: int) -> bytes:
    """`body` as JSON, padded with trailing spaces (still valid JSON) to exactly `size` bytes."""
    raw = json.dumps(body).encode()
    assert len(raw) <= size
    return raw.ljust(size)


def _chunks(raw: bytes, size: int = 16 * 1024) -> Iterator[bytes]:
    # a generator body makes httpx send `Transfer-Encoding: chunked`, with no Content-Length
    for start in range(0, len(raw), size):
        yield raw[start : start + size]


def _score(
    rows: list[list[Any]], tensor_type: str = "Float64", features: list[str] | None = None
) -> Json:
    return score_body(rows=rows, tensor_type=tensor_type, features=features)


# -------------------------------------------------------------------------------- tests

MALFORMED_ROUTES = [
    ("POST", "/contract/samples/energy_output/1"),
    ("PUT", CONTRACT),
    ("POST", "/servable"),
    ("POST", "/servable/samples/energy_output/0/v2"),
    ("PUT", SERVABLE + "/policy-settings"),
    ("PUT", SERVABLE + "/policy"),
    ("PUT", SERVABLE + "/logging-settings"),
    ("PUT", SERVABLE + "/logging"),
    ("POST", ROUTED),
    ("POST", DIRECT),
]
MALFORMED_BODIES = {
    "truncated": (b'{"expirationPolicy": {"KeepLatest": ', "malformed JSON"),
    "not-json": (b"servablesToKeep=2", "malformed JSON"),
    "nan": (b'{"schema": NaN}', "malformed JSON"),
    "not-utf8": (b'{"path": "\xff\xfe"}', "UTF-8"),
    "empty": (b"", "empty"),
    "whitespace": (b" \n\t ", "empty"),
}


class TestMalformedJson:
    @pytest.mark.parametrize(("method", "path"), MALFORMED_ROUTES)
    @pytest.mark.parametrize("kind", MALFORMED_BODIES)
    def test_is_refused_with_400(self, probe: Probe, method: str, path: str, kind: str) -> None:
        raw, mention = MALFORMED_BODIES[kind]
        response = probe.client.request(method, path, content=raw, headers=JSON_HEADERS)
        probe.refused(
            response, status=400, wire="MalformedRequestError", field=None, mentions=(mention,)
        )


UNKNOWN_CONTRACT_NAMES = {
    "router": (
        {"expirationPolicy": {"KeepLatest": {"servablesToKeep": 2}}, "router": {"Bogus": {}}},
        "router",
        ("'Bogus'", "FairPhaseInPctBasedRouter", "LatestPhaseInPctBasedRouter"),
    ),
    "expiration-policy": (
        {"expirationPolicy": {"KeepOldest": {"servablesToKeep": 2}}},
        "expirationPolicy",
        ("'KeepOldest'", "KeepLatest", "KeepTopRanked"),
    ),
    "expiration-policy-type-form": (
        {"expirationPolicy": {"type": "KeepOldest", "servablesToKeep": 2}},
        "expirationPolicy",
        ("'KeepOldest'", "KeepLatest", "KeepTopRanked"),
    ),
    "bare-router-name": (
        {"router": "RoundRobinRouter"},
        "router",
        ("'RoundRobinRouter'", "LatestPhaseInPctBasedRouter"),
    ),
}
CONTRACT_COMMANDS = [("POST", "/contract/samples/energy_output/1"), ("PUT", CONTRACT)]


class TestUnknownNames:
    @pytest.mark.parametrize(("method", "path"), CONTRACT_COMMANDS)
    @pytest.mark.parametrize("case", UNKNOWN_CONTRACT_NAMES)
    def test_in_contract_settings(self, probe: Probe, method: str, path: str, case: str) -> None:
        body, field, mentions = UNKNOWN_CONTRACT_NAMES[case]
        response = probe.client.request(method, path, json=body)
        probe.refused(
            response, status=422, wire="ContractValidationError", field=field, mentions=mentions
        )

    @pytest.mark.parametrize(
        ("dotted", "value", "field", "mentions"),
        [
            ("flavor", {"Bogus": {"modelPath": "model.onnx"}}, "flavor", ("'Bogus'", "ONNX")),
            ("flavor", {"type": "Pickle", "modelPath": "m"}, "flavor", ("'Pickle'", "Sklearn")),
            (
                "servableSettings.policySettings.validityPolicy",
                [{"ImmediatelyValid": {}}, {"SometimesValid": {}}],
                "servableSettings.policySettings.validityPolicy[1]",
                ("'SometimesValid'", "NeverValid", "TimeBasedValidity"),
            ),
            (
                "servableSettings.policySettings.phaseInPolicy",
                {"SlowPhaseIn": {}},
                "servableSettings.policySettings.phaseInPolicy",
                ("'SlowPhaseIn'", "ImmediatePhaseIn", "LinearTimeBasedPhaseIn"),
            ),
            (
                "servableSettings.loggingSettings.logLevel",
                "LOUD",
                "servableSettings.loggingSettings.logLevel",
                ("'LOUD'", "NONE", "FULL", "SAMPLE"),
            ),
            (
                "contractSettings",
                {"router": {"Bogus": {}}},
                "contractSettings.router",
                ("'Bogus'", "LatestPhaseInPctBasedRouter"),
            ),
        ],
        ids=["flavor", "flavor-type-form", "validity", "phase-in", "log-level", "router"],
    )
    def test_in_a_serve_request(
        self, probe: Probe, dotted: str, value: Any, field: str, mentions: tuple[str, ...]
    ) -> None:
        response = probe.client.post("/servable", json=_with(_refused_deploy(), dotted, value))
        probe.refused(
            response,
            status=422,
            wire="CreateServableRequestInvalidError",
            field=field,
            mentions=mentions,
            artifact=REFUSED,
        )

    @pytest.mark.parametrize(
        ("route", "body", "field", "mentions"),
        [
            (
                "/policy-settings",
                {"validityPolicy": [{"EventuallyValid": {}}]},
                "validityPolicy[0]",
                ("'EventuallyValid'", "ImmediatelyValid"),
            ),
            (
                "/policy",
                {"phaseInPolicy": {"type": "ExponentialPhaseIn"}},
                "phaseInPolicy",
                ("'ExponentialPhaseIn'", "LinearTimeBasedPhaseIn"),
            ),
            ("/logging-settings", {"logLevel": "LOUD"}, "logLevel", ("'LOUD'", "FULL")),
            ("/logging", {"logLevel": {"type": "Verbose"}}, "logLevel", ("'Verbose'", "SAMPLE")),
        ],
        ids=["validity", "phase-in", "log-level", "log-level-type-form"],
    )
    def test_in_a_settings_update(
        self, probe: Probe, route: str, body: Json, field: str, mentions: tuple[str, ...]
    ) -> None:
        response = probe.client.put(SERVABLE + route, json=body)
        probe.refused(
            response,
            status=422,
            wire="CreateServableRequestInvalidError",
            field=field,
            mentions=mentions,
        )


KEEP = "expirationPolicy.KeepLatest.servablesToKeep"


class TestOutOfRange:
    @pytest.mark.parametrize(("method", "path"), CONTRACT_COMMANDS)
    @pytest.mark.parametrize(
        ("policy", "field"),
        [
            ({"KeepLatest": {"servablesToKeep": 0}}, KEEP),
            ({"KeepLatest": {"servablesToKeep": -1}}, KEEP),
            (
                {"KeepTopRanked": {"servablesToKeep": 0, "metricToEvaluate": "auc"}},
                "expirationPolicy.KeepTopRanked.servablesToKeep",
            ),
        ],
        ids=["keep-latest-0", "keep-latest-negative", "keep-top-ranked-0"],
    )
    def test_servables_to_keep_below_one(
        self, probe: Probe, method: str, path: str, policy: Json, field: str
    ) -> None:
        body = {"expirationPolicy": policy, "router": {"LatestPhaseInPctBasedRouter": {}}}
        response = probe.client.request(method, path, json=body)
        probe.refused(
            response, status=422, wire="ContractValidationError", field=field, mentions=(">= 1",)
        )

    @pytest.mark.parametrize(
        ("dotted", "value", "field", "mention"),
        [
            (
                "servableSettings.policySettings.phaseInPolicy",
                {"LinearTimeBasedPhaseIn": {"phaseInOverSecs": -5}},
                "servableSettings.policySettings.phaseInPolicy.LinearTimeBasedPhaseIn"
                ".phaseInOverSecs",
                ">= 0",
            ),
            (
                "servableSettings.policySettings.validityPolicy",
                [{"MinServedEventsBasedValidity": {"validAfterMinServedEvents": -1}}],
                "servableSettings.policySettings.validityPolicy[0]"
                ".MinServedEventsBasedValidity.validAfterMinServedEvents",
                ">= 0",
            ),
            (
                "servableSettings.loggingSettings",
                {"logLevel": "SAMPLE", "sampleRate": 1.5},
                "servableSettings.loggingSettings.sampleRate",
                "between 0 and 1",
            ),
            (
                "contractSettings",
                {"expirationPolicy": {"KeepLatest": {"servablesToKeep": 0}}},
                "contractSettings.expirationPolicy.KeepLatest.servablesToKeep",
                ">= 1",
            ),
            ("fqrv.contract.contract_number", -1, "fqrv.contract.contractNumber", ">= 0"),
        ],
        ids=["phase-in-negative", "min-served-negative", "sample-rate", "keep-0", "contract-n"],
    )
    def test_in_a_serve_request(
        self, probe: Probe, dotted: str, value: Any, field: str, mention: str
    ) -> None:
        response = probe.client.post("/servable", json=_with(_refused_deploy(), dotted, value))
        probe.refused(
            response,
            status=422,
            wire="CreateServableRequestInvalidError",
            field=field,
            mentions=(mention,),
            artifact=REFUSED,
        )

    @pytest.mark.parametrize(
        ("route", "body", "field", "mention"),
        [
            (
                "/policy-settings",
                {"phaseInPolicy": {"LinearTimeBasedPhaseIn": {"phaseInOverSecs": -0.5}}},
                "phaseInPolicy.LinearTimeBasedPhaseIn.phaseInOverSecs",
                ">= 0",
            ),
            ("/logging-settings", {"sampleRate": -0.1}, "sampleRate", "between 0 and 1"),
        ],
        ids=["phase-in-negative", "sample-rate"],
    )
    def test_in_a_settings_update(
        self, probe: Probe, route: str, body: Json, field: str, mention: str
    ) -> None:
        response = probe.client.put(SERVABLE + route, json=body)
        probe.refused(
            response,
            status=422,
            wire="CreateServableRequestInvalidError",
            field=field,
            mentions=(mention,),
        )

    # Integers beyond 64 bits cannot be stored: they must be refused naming the field, not
    # answered with a 500 when the event is written.
    def test_servables_to_keep_beyond_64_bits(self, probe: Probe) -> None:
        raw = b'{"expirationPolicy": {"KeepLatest": {"servablesToKeep": 100000000000000000000000}}}'
        response = probe.client.post(
            "/contract/samples/energy_output/1", content=raw, headers=JSON_HEADERS
        )
        probe.refused(response, status=422, wire="ContractValidationError", field=KEEP)

    def test_valid_after_ms_beyond_64_bits(self, probe: Probe) -> None:
        body = {"validityPolicy": [{"TimeBasedValidity": {"validAfterMS": 1e30}}]}
        response = probe.client.put(SERVABLE + "/policy-settings", json=body)
        probe.refused(
            response,
            status=422,
            wire="CreateServableRequestInvalidError",
            field="validityPolicy[0].TimeBasedValidity.validAfterMS",
        )

    def test_contract_number_beyond_64_bits_in_the_path(self, probe: Probe) -> None:
        response = probe.client.post(
            f"/contract/samples/energy_output/{2**70}", json=contract_settings()
        )
        probe.refused(response, status=422, wire="InvalidRequestError", field="contractNumber")

    def test_contract_number_beyond_64_bits_in_the_body(self, probe: Probe) -> None:
        body = _with(_refused_deploy(), "fqrv.contract.contract_number", 2**70)
        response = probe.client.post("/servable", json=body)
        probe.refused(
            response,
            status=422,
            wire="CreateServableRequestInvalidError",
            field="fqrv.contract.contractNumber",
        )


WRONG_CONTRACT_TYPES = {
    "keep-string": ({"expirationPolicy": {"KeepLatest": {"servablesToKeep": "two"}}}, KEEP),
    "keep-fraction": ({"expirationPolicy": {"KeepLatest": {"servablesToKeep": 2.5}}}, KEEP),
    "keep-boolean": ({"expirationPolicy": {"KeepLatest": {"servablesToKeep": True}}}, KEEP),
    "router-number": ({"router": 5}, "router"),
    "policy-array": (
        {"expirationPolicy": [{"KeepLatest": {"servablesToKeep": 2}}]},
        "expirationPolicy",
    ),
    "body-array": ([contract_settings()], None),
    "body-null": (None, None),
}
WRONG_SERVE_TYPES = {
    "phase-in-string": (
        "servableSettings.policySettings.phaseInPolicy",
        {"LinearTimeBasedPhaseIn": {"phaseInOverSecs": "soon"}},
        "servableSettings.policySettings.phaseInPolicy.LinearTimeBasedPhaseIn.phaseInOverSecs",
    ),
    "validity-object": (
        "servableSettings.policySettings.validityPolicy",
        {"ImmediatelyValid": {}},
        "servableSettings.policySettings.validityPolicy",
    ),
    "key-features-string": (
        "servableSettings.loggingSettings.keyFeatures",
        "reqid",
        "servableSettings.loggingSettings.keyFeatures",
    ),
    "model-path-number": ("flavor", {"ONNX": {"modelPath": 5}}, "flavor.ONNX.modelPath"),
    "model-path-missing": ("flavor", "ONNX", "flavor.ONNX.modelPath"),
    "path-number": ("path", 5, "path"),
    "fqrv-string": ("fqrv", "samples.energy_output.3.bad", "fqrv"),
    "release-number": ("fqrv.release_version", 7, "fqrv.releaseVersion"),
}


class TestWrongTypes:
    @pytest.mark.parametrize(("method", "path"), CONTRACT_COMMANDS)
    @pytest.mark.parametrize("case", WRONG_CONTRACT_TYPES)
    def test_in_contract_settings(self, probe: Probe, method: str, path: str, case: str) -> None:
        body, field = WRONG_CONTRACT_TYPES[case]
        raw = json.dumps(body).encode()
        response = probe.client.request(method, path, content=raw, headers=JSON_HEADERS)
        error = probe.refused(response, status=422, wire="ContractValidationError", field=field)
        assert "expected" in error["errorMessage"]

    def test_a_string_count_names_the_field_path_and_the_value(self, probe: Probe) -> None:
        body = {"expirationPolicy": {"KeepLatest": {"servablesToKeep": "two"}}}
        response = probe.client.post("/contract/samples/energy_output/1", json=body)
        probe.refused(
            response,
            status=422,
            wire="ContractValidationError",
            field=KEEP,
            mentions=("integer", "'two'"),
        )

    @pytest.mark.parametrize("case", WRONG_SERVE_TYPES)
    def test_in_a_serve_request(self, probe: Probe, case: str) -> None:
        dotted, value, field = WRONG_SERVE_TYPES[case]
        response = probe.client.post("/servable", json=_with(_refused_deploy(), dotted, value))
        probe.refused(
            response,
            status=422,
            wire="CreateServableRequestInvalidError",
            field=field,
            artifact=REFUSED,
        )

    @pytest.mark.parametrize("body", [[], "ONNX", 5], ids=["array", "string", "number"])
    def test_a_serve_request_that_is_not_an_object(self, probe: Probe, body: Any) -> None:
        response = probe.client.post("/servable", json=body)
        probe.refused(
            response,
            status=422,
            wire="CreateServableRequestInvalidError",
            field=None,
            mentions=("expected an object",),
        )

    @pytest.mark.parametrize(
        ("route", "body", "field"),
        [
            ("/policy-settings", {"validityPolicy": {"NeverValid": {}}}, "validityPolicy"),
            ("/policy-settings", {"phaseInPolicy": 100}, "phaseInPolicy"),
            ("/logging-settings", {"logLevel": 7}, "logLevel"),  # numbers 1 to 3 name levels
            ("/logging-settings", {"keyFeatures": "reqid"}, "keyFeatures"),
            ("/logging-settings", {"sampleRate": "often"}, "sampleRate"),
        ],
        ids=["validity-object", "phase-in-number", "log-level-number", "key-features", "rate"],
    )
    def test_in_a_settings_update(self, probe: Probe, route: str, body: Json, field: str) -> None:
        response = probe.client.put(SERVABLE + route, json=body)
        probe.refused(response, status=422, wire="CreateServableRequestInvalidError", field=field)


class TestUnknownFields:
    @pytest.mark.parametrize(("method", "path"), CONTRACT_COMMANDS)
    @pytest.mark.parametrize(
        ("body", "field", "allowed"),
        [
            ({**contract_settings(), "extra": 1}, "extra", "router"),
            (
                {"expirationPolicy": {"KeepLatest": {"servablesToKeep": 2, "keep": 3}}},
                "expirationPolicy.KeepLatest.keep",
                "servablesToKeep",
            ),
        ],
        ids=["top-level", "in-policy"],
    )
    def test_in_contract_settings(
        self, probe: Probe, method: str, path: str, body: Json, field: str, allowed: str
    ) -> None:
        response = probe.client.request(method, path, json=body)
        probe.refused(
            response,
            status=422,
            wire="ContractValidationError",
            field=field,
            mentions=("unknown field", allowed),
        )

    @pytest.mark.parametrize(
        ("dotted", "value", "field", "allowed"),
        [
            ("bogus", 1, "bogus", "servableSettings"),
            (
                "servableSettings.policySettings.validity",
                [],
                "servableSettings.policySettings.validity",
                "validityPolicy",
            ),
            (
                "flavor",
                {"ONNX": {"modelPath": "model.onnx", "path": "x"}},
                "flavor.ONNX.path",
                "modelPath",
            ),
        ],
        ids=["top-level", "policy", "flavor"],
    )
    def test_in_a_serve_request(
        self, probe: Probe, dotted: str, value: Any, field: str, allowed: str
    ) -> None:
        response = probe.client.post("/servable", json=_with(_refused_deploy(), dotted, value))
        probe.refused(
            response,
            status=422,
            wire="CreateServableRequestInvalidError",
            field=field,
            mentions=("unknown field", allowed),
            artifact=REFUSED,
        )

    @pytest.mark.parametrize(
        ("route", "body", "field", "allowed"),
        [
            ("/policy-settings", {"phaseIn": {"ImmediatePhaseIn": {}}}, "phaseIn", "phaseInPolicy"),
            ("/logging-settings", {"logLevel": "FULL", "colour": "red"}, "colour", "logLevel"),
        ],
        ids=["policy", "logging"],
    )
    def test_in_a_settings_update(
        self, probe: Probe, route: str, body: Json, field: str, allowed: str
    ) -> None:
        response = probe.client.put(SERVABLE + route, json=body)
        probe.refused(
            response,
            status=422,
            wire="CreateServableRequestInvalidError",
            field=field,
            mentions=("unknown field", allowed),
        )


BAD_NAMES = [
    ("fqrv.release_version", "v/9", "fqrv.releaseVersion"),
    ("fqrv.release_version", "v 9", "fqrv.releaseVersion"),
    ("fqrv.release_version", "..", "fqrv.releaseVersion"),
    ("fqrv.release_version", ".", "fqrv.releaseVersion"),
    ("fqrv.release_version", "", "fqrv.releaseVersion"),
    ("fqrv.contract.organization", "a b", "fqrv.contract.organization"),
    ("fqrv.contract.organization", "../samples", "fqrv.contract.organization"),
    ("fqrv.contract.project", "x/y", "fqrv.contract.project"),
    ("fqrv.contract.project", "energy output", "fqrv.contract.project"),
]
BAD_PATH_NAMES = [
    ("POST", "/servable/samples/energy_output/0/v%209", serve_body("v9"), "releaseVersion", "v 9"),
    ("POST", "/contract/a%20b/energy_output/1", contract_settings(), "organization", "a b"),
    ("PUT", "/samples/energy%20output/0", contract_settings(), "project", "energy output"),
    ("POST", "/a%20b/energy_output/0/score", score_body(), "organization", "a b"),
    ("POST", "/samples/energy_output/0/v%201/score", score_body(), "releaseVersion", "v 1"),
    ("PUT", "/samples/energy_output/0/v%201/policy", {}, "releaseVersion", "v 1"),
    ("DELETE", "/samples/energy_output/0/v%201", None, "releaseVersion", "v 1"),
]


class TestNames:
    @pytest.mark.parametrize(("dotted", "name", "field"), BAD_NAMES)
    def test_in_the_body_fqrv(self, probe: Probe, dotted: str, name: str, field: str) -> None:
        response = probe.client.post("/servable", json=_with(_refused_deploy(), dotted, name))
        probe.refused(
            response,
            status=422,
            wire="CreateServableRequestInvalidError",
            field=field,
            mentions=(repr(name), "not a valid name"),
        )

    @pytest.mark.parametrize(("method", "path", "body", "field", "name"), BAD_PATH_NAMES)
    def test_in_a_url_path_segment(
        self, probe: Probe, method: str, path: str, body: Json | None, field: str, name: str
    ) -> None:
        # docs/api.md: a bad path value is an InvalidRequestError
        response = probe.client.request(method, path, json=body)
        probe.refused(
            response,
            status=422,
            wire="InvalidRequestError",
            field=field,
            mentions=(repr(name), "not a valid name"),
        )

    # A name the server accepts must not fail later as a file name: refuse it naming the field.
    @pytest.mark.parametrize(
        ("dotted", "field"),
        [
            ("fqrv.release_version", "fqrv.releaseVersion"),
            ("fqrv.contract.organization", "fqrv.contract.organization"),
        ],
        ids=["release", "organization"],
    )
    def test_too_long_for_a_file_name(self, probe: Probe, dotted: str, field: str) -> None:
        body = _with(_refused_deploy(), dotted, "x" * 300)
        response = probe.client.post("/servable", json=body)
        probe.refused(response, status=422, wire="CreateServableRequestInvalidError", field=field)


MODEL_FIELD = "flavor.ONNX.modelPath"


class TestRefusedArtifacts:
    @pytest.mark.parametrize("contract_number", [0, NEW_CONTRACT], ids=["existing", "new"])
    @pytest.mark.parametrize("kind", ["random-bytes", "truncated", "empty", "json"])
    def test_a_corrupt_onnx_model(
        self, probe: Probe, broken_models: dict[str, Path], kind: str, contract_number: int
    ) -> None:
        body = serve_body("bad", n=contract_number, path=broken_models[kind])
        response = probe.client.post("/servable", json=body)
        error = probe.refused(
            response,
            status=422,
            wire="CreateServableRequestInvalidError",
            field=MODEL_FIELD,
            mentions=("'model.onnx'", "not a valid ONNX model"),
            artifact=("samples", "energy_output", str(contract_number), "bad"),
        )
        # the server's own paths stay private
        assert str(probe.server.data_dir) not in error["errorMessage"]

    def test_a_corrupt_model_given_as_a_single_file(
        self, probe: Probe, broken_models: dict[str, Path]
    ) -> None:
        body = _refused_deploy(path=broken_models["truncated"] / "model.onnx")
        response = probe.client.post("/servable", json=body)
        probe.refused(
            response,
            status=422,
            wire="CreateServableRequestInvalidError",
            field=MODEL_FIELD,
            mentions=("not a valid ONNX model",),
            artifact=REFUSED,
        )

    @pytest.mark.parametrize(
        ("model_path", "mention"),
        [
            ("missing.onnx", "not found"),
            ("../x.onnx", "outside the model directory"),
            ("../rf_powerplant_single_input/model.onnx", "outside the model directory"),
            ("/etc/hostname", "outside the model directory"),
            (".", "directory"),
        ],
        ids=["missing", "parent", "parent-existing", "absolute", "directory"],
    )
    def test_a_bad_model_path(self, probe: Probe, model_path: str, mention: str) -> None:
        flavor = {"ONNX": {"modelPath": model_path, "featureNames": POWERPLANT_FEATURES}}
        response = probe.client.post("/servable", json=_refused_deploy(flavor=flavor))
        probe.refused(
            response,
            status=422,
            wire="CreateServableRequestInvalidError",
            field=MODEL_FIELD,
            mentions=(repr(model_path), mention),
            artifact=REFUSED,
        )

    def test_a_path_that_does_not_exist(self, probe: Probe, tmp_path: Path) -> None:
        missing = tmp_path / "no-such-model"
        response = probe.client.post("/servable", json=_refused_deploy(path=missing))
        probe.refused(
            response,
            status=422,
            wire="CreateServableRequestInvalidError",
            field="path",
            mentions=(str(missing), "does not exist"),
            artifact=REFUSED,
        )

    @pytest.mark.parametrize("artifact_path", ["missing", "no/such/dir"])
    def test_an_artifact_path_that_does_not_exist(self, probe: Probe, artifact_path: str) -> None:
        # `path` exists, so the field to blame is `artifactPath`, however deep it goes
        body = {**_refused_deploy(), "artifactPath": artifact_path}
        response = probe.client.post("/servable", json=body)
        probe.refused(
            response,
            status=422,
            wire="CreateServableRequestInvalidError",
            field="artifactPath",
            mentions=(artifact_path, "does not exist"),
            artifact=REFUSED,
        )

    def test_an_unsupported_storage_protocol(self, probe: Probe) -> None:
        response = probe.client.post("/servable", json=_refused_deploy(path="ftp://host/model"))
        probe.refused(
            response,
            status=422,
            wire="CreateServableRequestInvalidError",
            field="path",
            mentions=("'ftp://'", "file://"),
            artifact=REFUSED,
        )

    def test_feature_names_that_do_not_fit_the_model(self, probe: Probe) -> None:
        flavor = {"ONNX": {"modelPath": "model.onnx", "featureNames": POWERPLANT_FEATURES[:3]}}
        response = probe.client.post("/servable", json=_refused_deploy(flavor=flavor))
        probe.refused(
            response,
            status=422,
            wire="CreateServableRequestInvalidError",
            field="flavor.ONNX.featureNames",
            mentions=("4 columns", "3 featureNames"),
            artifact=REFUSED,
        )


class TestConflicts:
    @pytest.mark.parametrize("route", ["/servable", "/servable" + SERVABLE])
    def test_a_duplicate_fqrv_is_refused_and_the_original_still_serves(
        self, probe: Probe, route: str
    ) -> None:
        response = probe.client.post(route, json=serve_body("v1"))
        error = probe.refused(
            response,
            status=409,
            wire="ServableAlreadyExistsError",
            field=None,
            mentions=("samples.energy_output.0.v1", "already exists"),
        )
        assert error["fqrv"] == fqrv_json("v1")
        routed = probe.client.post(ROUTED, json=score_body())
        assert routed.status_code == 200, routed.text
        assert routed.json()["Prediction"]["servableFQRV"] == "samples.energy_output.0.v1"

    def test_a_duplicate_with_a_corrupt_model_leaves_the_original_copy_alone(
        self, probe: Probe, broken_models: dict[str, Path]
    ) -> None:
        body = serve_body("v1", path=broken_models["random-bytes"])
        response = probe.client.post("/servable" + SERVABLE, json=body)
        probe.refused(
            response,
            status=409,
            wire="ServableAlreadyExistsError",
            field=None,
            mentions=("samples.energy_output.0.v1",),
        )

    def test_an_existing_contract_cannot_be_created_again(self, probe: Probe) -> None:
        response = probe.client.post("/contract" + CONTRACT, json=contract_settings(keep=5))
        error = probe.refused(
            response,
            status=409,
            wire="ContractAlreadyExistsError",
            field=None,
            mentions=("samples.energy_output.0", "already exists"),
        )
        assert error["contract"] == contract_json()

    def test_a_contract_with_servables_cannot_be_deleted(self, probe: Probe) -> None:
        response = probe.client.delete(CONTRACT)
        probe.refused(
            response,
            status=409,
            wire="ContractNotEmptyError",
            field=None,
            mentions=("samples.energy_output.0", "1 servable"),
        )

    def test_concurrent_deploys_of_one_fqrv_give_one_servable(self, probe: Probe) -> None:
        body = serve_body("r1", project="race")
        barrier = threading.Barrier(2)
        answers: list[httpx.Response] = []

        def deploy() -> None:
            with httpx.Client(base_url=probe.server.base_url, timeout=30.0) as client:
                barrier.wait(timeout=30)
                answers.append(client.post("/servable", json=body))

        threads = [threading.Thread(target=deploy) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert sorted(a.status_code for a in answers) == [201, 409], [a.text for a in answers]
        (loser,) = (a for a in answers if a.status_code == 409)
        assert_error(
            loser,
            status=409,
            wire="ServableAlreadyExistsError",
            field=None,
            mentions=("samples.race.0.r1",),
        )
        releases = _get(probe.client, "/samples/race/0/list")
        assert releases == [{"FQRV": fqrv_json("r1", project="race")}]
        assert probe.client.delete("/samples/race/0/r1").status_code == 200
        assert probe.client.delete("/samples/race/0").status_code == 200
        probe.assert_unchanged(("samples", "race", "0", "r1"))


UNKNOWN_CONTRACTS = [
    ("DELETE", "/samples/energy_output/7", None),
    ("PUT", "/samples/energy_output/7", contract_settings()),
    ("POST", "/samples/energy_output/7/score", score_body()),
    ("GET", "/samples/energy_output/7/list", None),
    ("GET", "/samples/energy_output/7/stats", None),
    ("GET", "/samples/energy_output/7/contract-settings", None),
    ("GET", "/samples/energy_output/7/servable-settings", None),
    ("GET", "/samples/energy_output/7/metadata", None),
    ("DELETE", "/samples/energy_output/7/v1", None),
    ("POST", "/samples/energy_output/7/v1/score", score_body()),
]
UNKNOWN_SERVABLES = [
    ("DELETE", "/samples/energy_output/0/v7", None),
    ("POST", "/samples/energy_output/0/v7/score", score_body()),
    ("PUT", "/samples/energy_output/0/v7/policy-settings", {"validityPolicy": []}),
    ("PUT", "/samples/energy_output/0/v7/logging-settings", {"logLevel": "NONE"}),
    ("GET", "/samples/energy_output/0/v7/settings", None),
    ("GET", "/samples/energy_output/0/v7/metadata", None),
]


class TestUnknownTargets:
    @pytest.mark.parametrize(("method", "path", "body"), UNKNOWN_CONTRACTS)
    def test_an_unknown_contract(
        self, probe: Probe, method: str, path: str, body: Json | None
    ) -> None:
        response = probe.client.request(method, path, json=body)
        error = probe.refused(
            response,
            status=404,
            wire="UnknownContract",
            field=None,
            mentions=("samples.energy_output.7",),
        )
        assert error["contract"] == contract_json(n=7)

    @pytest.mark.parametrize(("method", "path", "body"), UNKNOWN_SERVABLES)
    def test_an_unknown_servable(
        self, probe: Probe, method: str, path: str, body: Json | None
    ) -> None:
        response = probe.client.request(method, path, json=body)
        error = probe.refused(
            response,
            status=404,
            wire="UnknownServable",
            field=None,
            mentions=("samples.energy_output.0.v7",),
        )
        assert error["fqrv"] == fqrv_json("v7")

    def test_scoring_a_contract_without_servables(self, probe: Probe) -> None:
        response = probe.client.post(EMPTY_CONTRACT + "/score", json=score_body())
        error = probe.refused(
            response,
            status=422,
            wire="NoActiveServablesForContract",
            field=None,
            mentions=("samples.empty.0",),
        )
        assert error["contract"] == contract_json("samples", "empty", 0)


TWO_GROUPS = [
    {"type": "Float64", "fields": POWERPLANT_FEATURES[:1]},
    {"type": "Float64", "fields": POWERPLANT_FEATURES[1:]},
]
ROW = [14.96, 41.76, 1024.07, 73.17]
MISSPELT = ["TemperatureCelsius", *POWERPLANT_FEATURES[1:]]
BAD_SCORES = {
    "wrong-names": (
        _score([ROW], features=["a", "b", "c", "d"]),
        FIRST,
        ("'a'", "'TemperatureCelcius'", "'RelativeHumidity'"),
    ),
    "one-misspelt-name": (_score([ROW], features=MISSPELT), FIRST, ("'TemperatureCelsius'",)),
    "string-for-float": (_score([["hot", *ROW[1:]]]), FIRST, ("'hot'", "Float64")),
    "boolean-for-float": (_score([[True, *ROW[1:]]]), FIRST, ("True", "Float64")),
    "list-for-float": (_score([[[1.0], *ROW[1:]]]), FIRST, ("Float64",)),
    "string-tensor-for-float-input": (
        _score([["1", "2", "3", "4"]], tensor_type="String"),
        FIRST,
        ("Float32", "String"),
    ),
    "float64-beyond-float32": (_score([[1e308, *ROW[1:]]]), FIRST, ("Float32", "range")),
    "bad-base64": (_score([["!!", "AA==", "AA==", "AA=="]], "Bytes"), FIRST, ("base64",)),
    "too-few-values": (_score([ROW[:3]]), "datum[0].tensors[0].data", ("ragged", "got 3")),
    "too-many-values": (_score([[*ROW, 1.0]]), "datum[0].tensors[0].data", ("ragged", "got 5")),
    "second-row-ragged": (
        _score([ROW, ROW[:2]]),
        "datum[1].tensors[0].data",
        ("ragged", "got 2"),
    ),
    "too-few-tensors": (
        {"schema": TWO_GROUPS, "datum": [{"tensors": [{"Float64": {"data": ROW[:1]}}]}]},
        "datum[0].tensors",
        ("ragged", "expected 2 tensor(s)", "got 1"),
    ),
    "tensors-missing": (
        {"schema": TWO_GROUPS, "datum": [{"data": ROW}]},
        "datum[0]",
        ("tensors",),
    ),
    "tensor-type-mismatch": (
        {"schema": TWO_GROUPS[:1], "datum": [{"tensors": [{"Int64": {"data": [15]}}]}]},
        "datum[0].tensors[0]",
        ("'Int64'", "Float64"),
    ),
    "empty-datum": ({"schema": TWO_GROUPS, "datum": []}, "datum", ("empty",)),
    "missing-datum": ({"schema": TWO_GROUPS}, "datum", ("array",)),
    "missing-schema": ({"datum": _score([ROW])["datum"]}, "schema", ("non-empty array",)),
    "empty-schema": ({"schema": [], "datum": _score([ROW])["datum"]}, "schema", ("non-empty",)),
    "unknown-tensor-type": (
        _score([ROW], tensor_type="Float128"),
        "schema[0].type",
        ("'Float128'", "Float64", "Int64", "String"),
    ),
    "duplicate-field": (
        _score([ROW], features=[FIRST, FIRST, *POWERPLANT_FEATURES[2:]]),
        "schema[0].fields[1]",
        ("twice",),
    ),
    "unknown-top-level-field": ({**score_body(), "rows": []}, "rows", ("unknown field",)),
    "nested-config": (
        {**score_body(), "configs": {"gameid": {"id": 1}}},
        "configs.gameid",
        ("string",),
    ),
}
SCORE_ERRORS = ("InvalidRequestError", "InferenceRequestInvalidError")
OVERFLOWS = {
    "int8": ("Int8", 300),
    "int16": ("Int16", 70_000),
    "int32": ("Int32", 2**40),
    "int64": ("Int64", 2**63),
    "int64-float": ("Int64", 1e20),
    "float16": ("Float16", 70_000.0),
    "float32": ("Float32", 1e39),
}


class TestScoreBodies:
    @pytest.mark.parametrize("path", [ROUTED, DIRECT], ids=["routed", "direct"])
    @pytest.mark.parametrize("case", BAD_SCORES)
    def test_is_refused_naming_the_problem(self, probe: Probe, path: str, case: str) -> None:
        body, field, mentions = BAD_SCORES[case]
        response = probe.client.post(path, json=body)
        probe.refused(response, status=422, wire=SCORE_ERRORS, field=field, mentions=mentions)

    @pytest.mark.parametrize(
        ("case", "wire"),
        [
            ("wrong-names", "InferenceRequestInvalidError"),
            ("string-tensor-for-float-input", "InferenceRequestInvalidError"),
            ("string-for-float", "InvalidRequestError"),
            ("too-few-values", "InvalidRequestError"),
            ("empty-datum", "InvalidRequestError"),
        ],
    )
    def test_wire_names_follow_the_api_docs(self, probe: Probe, case: str, wire: str) -> None:
        # docs/api.md: InferenceRequestInvalidError when the rows do not match the model's
        # inputs, InvalidRequestError when the body itself has the wrong shape
        body, field, _ = BAD_SCORES[case]
        response = probe.client.post(ROUTED, json=body)
        probe.refused(response, status=422, wire=wire, field=field)

    @pytest.mark.parametrize("body", [[score_body()], "score", None], ids=["array", "str", "null"])
    def test_a_body_that_is_not_an_object(self, probe: Probe, body: Any) -> None:
        raw = json.dumps(body).encode()
        response = probe.client.post(ROUTED, content=raw, headers=JSON_HEADERS)
        probe.refused(
            response,
            status=422,
            wire="InvalidRequestError",
            field=None,
            mentions=("JSON object", "schema", "datum"),
        )

    # A value its declared tensor type cannot hold must be refused naming the field: neither a
    # 500 (integers) nor silently scored as infinity (floats).
    @pytest.mark.parametrize("case", OVERFLOWS)
    def test_a_value_out_of_its_tensor_types_range(self, probe: Probe, case: str) -> None:
        tensor_type, value = OVERFLOWS[case]
        body = _score([[value, 41, 1024, 73]], tensor_type=tensor_type)
        response = probe.client.post(ROUTED, json=body)
        probe.refused(response, status=422, wire=SCORE_ERRORS, field=FIRST, mentions=(tensor_type,))


OVER_LIMIT_ROUTES = [
    ("POST", "/contract/samples/energy_output/1", contract_settings()),
    ("PUT", CONTRACT, contract_settings(keep=5)),
    ("POST", "/servable", _refused_deploy()),
    ("PUT", SERVABLE + "/logging-settings", {"logLevel": "NONE"}),
    ("POST", ROUTED, score_body()),
]


class TestBodySizeLimit:
    @pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
    @pytest.mark.parametrize("size", [LIMIT + 1, 16 * LIMIT], ids=["limit+1", "16x"])
    def test_a_score_over_the_limit(self, probe: Probe, size: int, chunked: bool) -> None:
        raw = _padded(score_body(), size)  # valid JSON: without a limit it would be scored
        content = _chunks(raw) if chunked else raw
        response = probe.client.post(ROUTED, content=content, headers=JSON_HEADERS)
        assert ("content-length" in response.request.headers) is not chunked
        probe.refused(
            response, status=413, wire="PayloadTooLargeError", field=None, mentions=(str(LIMIT),)
        )

    @pytest.mark.parametrize(("method", "path", "body"), OVER_LIMIT_ROUTES)
    def test_every_body_route_is_limited(
        self, probe: Probe, method: str, path: str, body: Json
    ) -> None:
        raw = _padded(body, LIMIT + 1)  # valid JSON: without a limit it would change the state
        response = probe.client.request(method, path, content=raw, headers=JSON_HEADERS)
        probe.refused(
            response, status=413, wire="PayloadTooLargeError", field=None, mentions=(str(LIMIT),)
        )

    @pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
    def test_a_body_of_exactly_the_limit_is_accepted(self, probe: Probe, chunked: bool) -> None:
        raw = _padded(score_body(), LIMIT)
        content = _chunks(raw) if chunked else raw
        response = probe.client.post(DIRECT, content=content, headers=JSON_HEADERS)
        assert response.status_code == 200, response.text
        assert prediction_values(response.json()) == probe.predictions
        probe.assert_unchanged()
