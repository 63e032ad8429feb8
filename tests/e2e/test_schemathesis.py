"""Schemathesis against the server's own OpenAPI document: no operation answers 5xx.

Every operation is fuzzed three ways: with generated path and query parameters, with the
path naming objects that exist (a contract, a servable, a token), and with parameters that
break the document (negative mode). Bodies come from the document's request schemas; POST
and PUT also get, half of the time, JSON bodies of their own instead: valid ones, or
arbitrary ones whose keys are drawn partly from the API's own wire names, so that the
decoders' error paths are reached too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeAlias

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.result import Err

from tests.e2e.conftest import ServerProcess
from tests.payloads import contract_settings, score_body, serve_body

pytestmark = pytest.mark.e2e

Operation: TypeAlias = schemathesis.APIOperation[Any, Any, Any, Any]

# No request is sent once this much of the run has passed: a slow machine tests less
# instead of taking longer (nothing here depends on speed; this one takes about 25 s).
TIME_BUDGET_S = 60.0
EXAMPLES = 30
REAL_OBJECTS: dict[str, Any] = {
    "organization": "samples",
    "project": "energy_output",
    "contract_number": 0,
    "release_version": "v1",
    "name": "scorer",
    "model_name": "samples.energy_output.0",  # the Open Inference Protocol's names
    "model_version": "v1",
}
WIRE_NAMES = [
    "expirationPolicy", "KeepLatest", "servablesToKeep", "router", "policySettings",
    "validityPolicy", "phaseInPolicy", "loggingSettings", "logLevel", "keyFeatures",
    "sampleRate", "schema", "datum", "tensors", "type", "fields", "data", "Float64",
    "path", "fqrv", "contract", "organization", "project", "contract_number",
    "release_version", "flavor", "ONNX", "modelPath", "servableSettings", "name", "role",
]  # fmt: skip
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | st.sampled_from(["admin", "FULL", "v1", "samples", "file:///", "Float64"])
)
JSON_BODIES = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(WIRE_NAMES) | st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)
# Bodies some operation accepts, so that fuzzed paths also reach the success paths.
VALID_BODIES = [
    contract_settings(),
    serve_body("v2"),
    score_body(),
    {"logLevel": "NONE"},
    {"validityPolicy": [{"ImmediatelyValid": {}}], "phaseInPolicy": {"ImmediatePhaseIn": {}}},
    {"name": "deployer", "role": "deployer"},
]
# A follower of the prediction events waits for them `wait` seconds (default 60): fuzzed,
# it would spend the time budget waiting. Its `wait` is 0, unless the case makes it invalid.
FOLLOWED = ("GET", "/prediction-log/events")
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same requests on every run: CI never flakes on a new draw
    database=None,
    phases=[Phase.explicit, Phase.generate],  # a 5xx is reported as sent, unshrunk
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.fixture
def server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    """A server (auth off: it listens on loopback) holding one contract, servable and token."""
    server = server_factory()
    client = server.client
    for response in (
        client.post("/contract/samples/energy_output/0", json=contract_settings()),
        client.post("/servable", json=serve_body("v1")),
        client.post("/admin/tokens", json={"name": "scorer", "role": "scorer"}),
    ):
        assert response.status_code == 201, response.text
    return server


def fuzz(
    operation: Operation,
    mode: GenerationMode,
    base_url: str,
    deadline: float,
    **fixed: Any,
) -> list[str]:
    """Send the operation's generated cases; return each 5xx as `request → response`."""
    server_errors: list[str] = []
    bodies = (
        st.sampled_from(VALID_BODIES) | JSON_BODIES
        if operation.method.upper() in ("POST", "PUT")
        else st.none()
    )

    @FUZZ
    @given(case=operation.as_strategy(mode, **fixed), body=st.none() | bodies)
    def send(case: schemathesis.Case[Operation], body: Any) -> None:
        if time.monotonic() > deadline:
            return
        if (operation.method.upper(), operation.path) == FOLLOWED:
            no_waiting(case)
        extra = {} if body is None else {"json": body}
        response = case.call(base_url=base_url, timeout=30, **extra)
        if response.status_code >= 500:
            request = response.request
            server_errors.append(
                f"{operation.label} ({mode.value}): {request.method} {request.url}"
                f" body={request.body!r} → {response.status_code} {response.text[:300]}"
            )

    try:
        send()
    except Unsatisfiable:
        # Negative mode needs a parameter that can be made invalid: an operation with no
        # parameters, or only `name: string` in its path, has nothing to generate.
        assert mode is GenerationMode.NEGATIVE
    return server_errors


def no_waiting(case: schemathesis.Case[Operation]) -> None:
    """`wait=0` in place of a valid or missing `wait`: the stream ends at once."""
    query = case.query if isinstance(case.query, dict) else {}
    wait = query.get("wait", 0)
    if isinstance(wait, int | float) and not isinstance(wait, bool) and wait >= 0:
        case.query = {**query, "wait": 0}


class TestOpenApiFuzzing:
    def test_no_operation_answers_a_server_error(self, server: ServerProcess) -> None:
        schema = schemathesis.openapi.from_url(
            f"{server.base_url}/openapi.json", config=schemathesis.Config()
        )
        operations: list[Operation] = []
        for result in schema.get_all_operations():
            if isinstance(result, Err):
                pytest.fail(f"the OpenAPI document has an invalid operation: {result.err()}")
            operations.append(result.ok())
        assert len(operations) > 20
        # Deletions last, so that the other operations still find the real objects.
        operations.sort(key=lambda operation: operation.method.upper() == "DELETE")
        deadline = time.monotonic() + TIME_BUDGET_S
        server_errors: list[str] = []
        for operation in operations:
            real = {p.name: REAL_OBJECTS[p.name] for p in operation.path_parameters}
            runs: list[tuple[GenerationMode, dict[str, Any]]] = [
                (GenerationMode.POSITIVE, {}),
                (GenerationMode.NEGATIVE, {}),
            ]
            if real:
                runs.append((GenerationMode.POSITIVE, {"path_parameters": real}))
            for mode, fixed in runs:
                if time.monotonic() > deadline:  # nothing more would be sent: stop generating
                    break
                server_errors += fuzz(operation, mode, server.base_url, deadline, **fixed)
        server.terminate()  # the log holds what the server printed once it has stopped
        assert server_errors == [], "\n".join(server_errors)
        assert not [line for line in server.log if "failed unexpectedly" in line]
