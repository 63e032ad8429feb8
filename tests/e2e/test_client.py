"""The Python client against real `forestflow serve` processes: every error the server
answers is raised as its documented class (docs/api.md#errors), and the client's calls
work end to end, sync and async."""

from __future__ import annotations

import http.server
import itertools
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io
from sklearn.neighbors import KNeighborsRegressor

from forestflow.client import AsyncClient, BasicServeRequest, Client
from forestflow.errors import ForestFlowError, ServiceUnavailableError, error_kinds
from tests.builders import make_tokens
from tests.e2e.conftest import ServerProcess
from tests.payloads import EXAMPLES, POWERPLANT_FEATURES, POWERPLANT_ROWS, contract_settings

pytestmark = pytest.mark.e2e

ENERGY = EXAMPLES / "energy_output"
ONNX = {"ONNX": {"modelPath": "model.onnx"}}
ROW = dict(zip(POWERPLANT_FEATURES, POWERPLANT_ROWS[0], strict=True))
NOT_ANSWERED = {
    # a reload at recovery that finds a changed source records it as the servable's load
    # failure (its metadata answers UnknownServable, naming it): no route answers it
    "ArtifactChangedError",
    # only a bug answers it; tests/integration/api/test_error_answers.py makes one
    "InternalServerError",
}


def deploy(
    release: str,
    project: str = "energy_output",
    *,
    path: Path | str = ENERGY,
    flavor: dict[str, Any] | None = None,
    **options: Any,
) -> BasicServeRequest:
    """The energy model (by default), as release `release` of samples.<project>.0."""
    fqrv = f"samples/{project}/0/{release}"
    return BasicServeRequest(path, flavor or ONNX, fqrv=fqrv, **options)


@dataclass
class Servers:
    """Real servers, each started on first use: `plain` (auth off, defaults), `small`
    (tight size limits), `full` (a free-space reserve no disk has), `secured` (tokens)."""

    root: Path
    started: dict[str, ServerProcess] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    crashing_model: Path | None = None
    clients: list[Client] = field(default_factory=list)

    ENV = {  # noqa: RUF012 - a table, read only
        "plain": {},
        "small": {
            "FORESTFLOW_SERVER__MAX_REQUEST_BYTES": "1024",
            "FORESTFLOW_STORAGE__MAX_ARTIFACT_BYTES": "1000",
        },
        "full": {"FORESTFLOW_STORAGE__FREE_SPACE_RESERVE_BYTES": str(2**62)},
        "secured": {"FORESTFLOW_SECURITY__AUTH": "required"},
    }

    def server(self, kind: str) -> ServerProcess:
        if kind not in self.started:
            data_dir = self.root / kind
            if kind == "secured":
                self.tokens = make_tokens(data_dir)
            self.started[kind] = ServerProcess(data_dir, self.ENV[kind]).start()
        return self.started[kind]

    def client(self, kind: str = "plain", token: str | None = None, **options: Any) -> Client:
        """A client of that server (never one of $FORESTFLOW_TOKEN), closed with the servers."""
        client = Client(self.server(kind).base_url, token=token or "", **options)
        self.clients.append(client)
        return client

    def close(self) -> None:
        for client in self.clients:
            client.close()
        for server in self.started.values():
            server.close()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    found = Servers(tmp_path_factory.mktemp("servers"))
    yield found
    found.close()


def crashing_model(servers: Servers) -> Path:
    """A real estimator that fails on every predict: 5 neighbours wanted, 3 samples fitted."""
    if servers.crashing_model is None:
        rng = np.random.default_rng(5)
        model = KNeighborsRegressor(n_neighbors=5).fit(rng.uniform(0, 100, (3, 4)), [1, 2, 3])
        directory = servers.root / "crashing"
        directory.mkdir()
        skops.io.dump(model, directory / "model.skops")
        servers.crashing_model = directory
    return servers.crashing_model


# --- one way to make the server answer each error -----------------------------------------


def unknown_contract(s: Servers) -> None:
    s.client().stats("samples/nothing/0")


def unknown_servable(s: Servers) -> None:
    client = s.client()
    client.create_contract("samples/known/0")
    client.servable_settings("samples/known/0/v9")


def no_route(s: Servers) -> None:
    s.client().request("GET", "/no/such/route")


def method_not_allowed(s: Servers) -> None:
    s.client().request("GET", "/samples/energy_output/0/score")


def servable_exists(s: Servers) -> None:
    client = s.client()
    client.deploy(deploy("v1", "twice"))
    client.deploy(deploy("v1", "twice"))


def contract_exists(s: Servers) -> None:
    client = s.client()
    client.create_contract("samples/dup/0", contract_settings())
    client.create_contract("samples/dup/0", contract_settings())


def contract_not_empty(s: Servers) -> None:
    client = s.client()
    client.deploy(deploy("v1", "full_contract"))
    client.delete_contract("samples/full_contract/0")


def token_exists(s: Servers) -> None:
    client = s.client()
    client.create_token("twice", "scorer")
    client.create_token("twice", "scorer")


def unknown_token(s: Servers) -> None:
    s.client().revoke_token("nobody")


def bad_serve_request(s: Servers) -> None:
    s.client().deploy(deploy("v1", "bad", flavor={"Pickle": {"modelPath": "m"}}))


def bad_contract_settings(s: Servers) -> None:
    s.client().create_contract("samples/bad/0", {"router": {"NoSuchRouter": {}}})


def no_active_servable(s: Servers) -> None:
    client = s.client()
    client.deploy(deploy("v1", "shadow", servable_settings=never_valid()))
    client.score("samples/shadow/0", [ROW])


def never_valid() -> dict[str, Any]:
    return {"policySettings": {"validityPolicy": [{"NeverValid": {}}]}}


def bad_inputs(s: Servers) -> None:
    client = s.client()
    client.deploy(deploy("v1", "inputs"))
    client.score("samples/inputs/0", [dict.fromkeys(POWERPLANT_FEATURES, "warm")])


def bad_request(s: Servers) -> None:
    s.client().history(limit=0)


def malformed(s: Servers) -> None:
    headers = {"Content-Type": "application/json"}
    s.client().request("POST", "/contract/samples/x/0", content=b"{not json", headers=headers)


def wrong_media(s: Servers) -> None:
    headers = {"Content-Type": "text/plain"}
    s.client().request("POST", "/contract/samples/x/0", content=b"{}", headers=headers)


def host_refused(s: Servers) -> None:
    s.client(headers={"Host": "rebound.example"}).contracts()


def model_failed(s: Servers) -> None:
    client = s.client()
    flavor = {"Sklearn": {"modelPath": "model.skops", "featureNames": POWERPLANT_FEATURES}}
    client.deploy(deploy("v1", "crash", path=crashing_model(s), flavor=flavor))
    client.score("samples/crash/0", [ROW])


def body_too_large(s: Servers) -> None:
    s.client("small").score("samples/energy_output/0", [ROW] * 50)


def artifact_too_large(s: Servers) -> None:
    s.client("small").deploy(deploy("v1"))


def disk_full(s: Servers) -> None:
    s.client("full").deploy(deploy("v1"))


def no_token(s: Servers) -> None:
    s.client("secured").contracts()


def wrong_role(s: Servers) -> None:
    s.server("secured")
    s.client("secured", token=s.tokens["scorer"]).create_contract("samples/x/0")


DRIVEN: dict[str, Callable[[Servers], None]] = {
    "UnknownContract": unknown_contract,
    "UnknownServable": unknown_servable,
    "NotFound": no_route,
    "HttpError": method_not_allowed,
    "ServableAlreadyExistsError": servable_exists,
    "ContractAlreadyExistsError": contract_exists,
    "ContractNotEmptyError": contract_not_empty,
    "TokenAlreadyExistsError": token_exists,
    "UnknownToken": unknown_token,
    "CreateServableRequestInvalidError": bad_serve_request,
    "ContractValidationError": bad_contract_settings,
    "NoActiveServablesForContract": no_active_servable,
    "InferenceRequestInvalidError": bad_inputs,
    "InvalidRequestError": bad_request,
    "MalformedRequestError": malformed,
    "UnsupportedMediaTypeError": wrong_media,
    "HostNotAllowedError": host_refused,
    "UnknownServableError": model_failed,
    "PayloadTooLargeError": body_too_large,
    "ArtifactTooLargeError": artifact_too_large,
    "InsufficientStorageError": disk_full,
    "AuthenticationRequired": no_token,
    "PermissionDenied": wrong_role,
}


class TestEveryErrorIsRaisedAsItsClass:
    def test_every_error_of_the_tree_is_driven_here_or_said_why_not(self) -> None:
        assert set(DRIVEN) | NOT_ANSWERED | {"ServiceUnavailable"} == set(error_kinds())

    @pytest.mark.parametrize("wire_name", sorted(DRIVEN))
    def test_the_client_raises_the_class_the_server_answered(
        self, servers: Servers, wire_name: str
    ) -> None:
        kind = error_kinds()[wire_name]

        with pytest.raises(ForestFlowError) as raised:
            DRIVEN[wire_name](servers)

        error = raised.value
        assert type(error) is kind, error.describe()
        assert error.describe()
        if "StatusCode" in error.context:  # the framework's own answers carry none
            assert error.context["StatusCode"] == kind.status

    def test_a_recovering_server_is_service_unavailable(self, tmp_path: Path) -> None:
        """Recovery waits on an artifact fetched again from a source the test holds back."""
        source = GatedFiles(ENERGY)
        server = ServerProcess(tmp_path / "data")
        try:
            server.start()
            with Client(server.base_url) as client:
                client.deploy(deploy("v1", path=source.url("model.onnx")))
            server.terminate()
            shutil.rmtree(tmp_path / "data" / "artifacts" / "servables")
            source.hold()
            server.start_with(until="Uvicorn running on")

            with pytest.raises(ServiceUnavailableError) as raised, Client(server.base_url) as c:
                c.contracts()

            source.release()
            server.wait_for_line("ForestFlow is ready")
            with Client(server.base_url) as client:
                (release,) = client.releases("samples/energy_output/0")
            assert release.failure is None
        finally:
            source.close()
            server.close()
        assert raised.value.describe() == "recovering state; not ready yet"


class GatedFiles:
    """A local HTTP server of a directory's files that, once held, answers only when
    released."""

    def __init__(self, directory: Path) -> None:
        self._gate = threading.Event()
        self._gate.set()
        gate = self._gate

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(directory), **kwargs)

            def do_GET(self) -> None:
                gate.wait(timeout=120)
                super().do_GET()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/{name}"

    def hold(self) -> None:
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    def close(self) -> None:
        self._gate.set()
        self._server.shutdown()
        self._server.server_close()


class TestCalls:
    def test_a_release_deployed_scored_followed_and_deleted(self, servers: Servers) -> None:
        with servers.client() as client:
            client.create_contract("samples/calls/0", contract_settings())
            deployed = client.deploy(deploy("v1", "calls"))
            key = {"reqid": "r-1"}
            client.update_logging(deployed.fqrv, {"keyFeatures": ["reqid"]})
            start = client.events_page("samples/calls/0")

            prediction = client.score("samples/calls/0", POWERPLANT_ROWS,
                                      features=POWERPLANT_FEATURES, configs=key)  # fmt: skip
            page = client.events_page("samples/calls/0", after=start.resume_after)
            (followed,) = itertools.islice(
                client.follow_events("samples/calls/0", after=start.resume_after), 1
            )
            (metrics,) = client.stats("samples/calls/0")
            deleted = client.delete_servable(deployed.fqrv)

        assert str(deployed.fqrv) == "samples.calls.0.v1"
        assert prediction.servable_fqrv == "samples.calls.0.v1"
        assert [list(row) for row in prediction.rows()] == [["prediction"], ["prediction"]]
        assert start.events == []
        assert [(e.fqrv, e.served_request, e.key, e.rows) for e in page.events] == [
            (deployed.fqrv, True, "r-1", 2)
        ]
        assert (page.missed, page.resume_after) == (0, start.resume_after + 1)
        assert followed == page.events[0]
        assert metrics.score_count == 1
        assert deleted == [deployed.fqrv]

    async def test_the_async_client_makes_the_same_calls(self, servers: Servers) -> None:
        async with AsyncClient(servers.server("plain").base_url, token="") as client:
            await client.deploy(deploy("v1", "async_calls"))
            prediction = await client.score("samples/async_calls/0", [ROW])
            page = await client.events_page("samples/async_calls/0", last=1)
            followed = client.follow_events("samples/async_calls/0", last=1)
            first = await anext(followed)
            await followed.aclose()
            with pytest.raises(ForestFlowError) as raised:
                await client.stats("samples/async_nothing/0")

        assert prediction.servable_fqrv == "samples.async_calls.0.v1"
        assert [e.served_request for e in page.events] == [True]
        assert first == page.events[0]
        assert type(raised.value) is error_kinds()["UnknownContract"]
