"""Answers to failures that are not the client's fault, or not obviously so."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from starlette.requests import Request

from tests.integration.api.conftest import Harness, HarnessFactory
from tests.payloads import SINGLE_INPUT_MODEL, contract_settings, serve_body


class TestUnexpectedFailure:
    async def test_is_a_clean_500_and_the_server_keeps_answering(
        self, harness_factory: HarnessFactory
    ) -> None:
        harness = await harness_factory()

        async def broken(request: Request) -> None:
            raise RuntimeError("a bug")

        harness.app.api.add_route("/broken", broken)

        response = await harness.client.get("/broken")

        assert response.status_code == 500
        assert response.json() == {
            "InternalServerError": {"errorMessage": "internal server error; see the server log"}
        }
        assert "a bug" not in response.text
        assert (await harness.client.get("/contracts/list")).status_code == 200


class TestDeployingTheDataDirectory:
    async def test_is_refused_naming_path(
        self, harness_factory: HarnessFactory, tmp_path: Path
    ) -> None:
        source = tmp_path / "models"
        shutil.copytree(SINGLE_INPUT_MODEL, source)
        # the data dir sits inside the deployed directory: copying that directory into
        # the cache would copy the cache into itself
        harness = await harness_factory(data_dir=source / "data")
        client = harness.client
        await client.post("/contract/samples/energy_output/0", json=contract_settings())

        response = await client.post("/servable", json=serve_body("v1", path=source))

        assert response.status_code == 422, response.text
        error = response.json()["CreateServableRequestInvalidError"]
        assert error["field"] == "path"
        assert "data directory" in error["errorMessage"]
        assert (await client.get("/samples/energy_output/0/list")).json() == []
        assert sorted(p.name for p in source.iterdir()) == sorted(
            [*(p.name for p in SINGLE_INPUT_MODEL.iterdir()), "data"]
        )


class TestRoutesThatDoNotExist:
    @pytest.mark.parametrize(
        ("method", "path"),
        [
            ("GET", "/nothing"),
            ("POST", "/a/b/c"),
            # only the patterns /{organization}/{project}/{n}[/{release}] fit these
            ("GET", "/samples/energy_output/0"),
            ("POST", "/samples/energy_output/0"),
            ("PATCH", "/samples/energy_output/0"),
            ("POST", "/samples/energy_output/0/v1"),
        ],
    )
    async def test_are_404(self, harness: Harness, method: str, path: str) -> None:
        response = await harness.client.request(method, path)

        assert response.status_code == 404, response.text
        assert response.json() == {"NotFound": {"errorMessage": "no such route"}}

    @pytest.mark.parametrize(
        ("method", "path", "allowed"),
        [
            ("GET", "/samples/energy_output/0/score", "POST"),
            ("DELETE", "/servable", "POST"),
            ("GET", "/contract/samples/energy_output/0", "POST"),
        ],
    )
    async def test_a_method_a_named_route_does_not_take_is_405_with_allow(
        self, harness: Harness, method: str, path: str, allowed: str
    ) -> None:
        response = await harness.client.request(method, path)

        assert response.status_code == 405, response.text
        assert response.headers["allow"] == allowed
        assert response.json()["HttpError"]["errorMessage"] == (
            f"method {method} is not allowed on {path}; it takes {allowed}"
        )


class TestIntegersBeyond64Bits:
    """JSON has no integer limit; one beyond 64 bits is a value out of range, not malformed
    JSON, and the answer names its field."""

    BIG = b"123456789012345678901234567890"

    async def test_in_settings_is_422_naming_the_field(self, harness: Harness) -> None:
        body = b'{"expirationPolicy": {"KeepLatest": {"servablesToKeep": %s}}}' % self.BIG

        response = await harness.client.post(
            "/contract/samples/big/0", content=body, headers={"content-type": "application/json"}
        )

        assert response.status_code == 422, response.text
        error = response.json()["ContractValidationError"]
        assert error["field"] == "expirationPolicy.KeepLatest.servablesToKeep"
        assert "out of range" in error["errorMessage"]

    async def test_in_a_score_request_is_422_naming_the_field(self, harness: Harness) -> None:
        await harness.client.post("/contract/samples/energy_output/0", json=contract_settings())
        deployed = await harness.client.post("/servable", json=serve_body("v1"))
        assert deployed.status_code == 201, deployed.text
        body = (
            b'{"schema": [{"type": "Int64", "fields": ["AmbientTemp"]}], '
            b'"datum": [{"tensors": [{"Int64": {"data": [%s]}}]}]}' % self.BIG
        )

        response = await harness.client.post(
            "/samples/energy_output/0/score",
            content=body,
            headers={"content-type": "application/json"},
        )

        assert response.status_code == 422, response.text
        error = response.json()["InvalidRequestError"]
        assert error["field"] == "AmbientTemp"
        assert "out of range for Int64" in error["errorMessage"]


class TestHistoryCursors:
    @pytest.mark.parametrize("before", ["-1", str(2**63), "-11053880936512002048"])
    @pytest.mark.parametrize("path", ["/history", "/samples/energy_output/0/history"])
    async def test_beyond_a_sequence_number_are_422_naming_before(
        self, harness: Harness, path: str, before: str
    ) -> None:
        await harness.client.post("/contract/samples/energy_output/0", json=contract_settings())

        response = await harness.client.get(path, params={"before": before})

        assert response.status_code == 422, response.text
        (error,) = response.json().values()
        assert error["field"] == "before"
