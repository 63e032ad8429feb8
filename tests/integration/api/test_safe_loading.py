"""Safe loading over REST: a server on the default settings refuses artifacts that run code
when loaded (pickles, MLflow python_function models) before any of their code runs, and
trusts skops types only from its own setting; `security.allow_unsafe_formats` lets pickles
load. The harness turns that setting on unless a test turns it off."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import joblib
import pytest
from sklearn.linear_model import LinearRegression

from tests.integration.api.conftest import HarnessFactory
from tests.payloads import FIXTURES, serve_body

SAFE_DEFAULTS = {"allow_unsafe_formats": False}
TREE = "sklearn.tree._tree.Tree"
RF_DIABETES = FIXTURES / "mlflow" / "sklearn" / "rf_diabetes_regression"
ENSEMBLE = FIXTURES / "mlflow" / "pyfunc" / "custom_powerplant_ensemble"


class TouchOnLoad:
    """Unpickling it creates `marker`: proof that code in the pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (Path.touch, (self.marker,))


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "ran"


@pytest.fixture
def malicious(tmp_path: Path, marker: Path) -> Path:
    """An artifact whose model.joblib creates `marker` as it is unpickled."""
    directory = tmp_path / "malicious"
    directory.mkdir()
    (directory / "model.joblib").write_bytes(pickle.dumps(TouchOnLoad(marker)))
    return directory


@pytest.fixture
def regressor(tmp_path: Path) -> Path:
    """An artifact holding a real scikit-learn model, pickled by joblib."""
    directory = tmp_path / "regressor"
    directory.mkdir()
    joblib.dump(LinearRegression().fit([[0.0], [1.0]], [0.0, 2.0]), directory / "model.joblib")
    return directory


def sklearn_body(path: Path, release: str = "v1", **fields: Any) -> dict[str, Any]:
    flavor = {"Sklearn": {"modelPath": "model.joblib", **fields}}
    return serve_body(release, path=path, flavor=flavor)


def mlflow_body(path: Path) -> dict[str, Any]:
    body = serve_body("v1", path=path)
    del body["flavor"]  # an MLFlowServeRequest: the server reads the MLmodel
    return body


def ran(marker: Path) -> bool:
    """Whether the pickle's code ran (a tiny local stat, fine inside a test coroutine)."""
    return marker.exists()


def refusal(response: Any) -> dict[str, str]:
    assert response.status_code == 422, response.text
    error: dict[str, str] = response.json()["CreateServableRequestInvalidError"]
    return error


class TestPickles:
    async def test_refused_by_default_before_the_pickle_runs(
        self, harness_factory: HarnessFactory, malicious: Path, marker: Path
    ) -> None:
        harness = await harness_factory(security=SAFE_DEFAULTS)
        error = refusal(await harness.client.post("/servable", json=sklearn_body(malicious)))
        assert not ran(marker)
        assert error["field"] == "flavor.Sklearn.modelPath"
        assert error["errorMessage"] == (
            "flavor.Sklearn.modelPath: 'model.joblib' is a pickle, and pickles run code when "
            "loaded; the server refuses them unless the operator sets "
            "security.allow_unsafe_formats (FORESTFLOW_SECURITY__ALLOW_UNSAFE_FORMATS=true)"
        )
        # nothing was recorded: not even the contract the deploy would have created
        assert (await harness.client.get("/samples/energy_output/0/list")).status_code == 404

    async def test_forcing_a_format_does_not_get_past_the_setting(
        self, harness_factory: HarnessFactory, malicious: Path, marker: Path
    ) -> None:
        harness = await harness_factory(security=SAFE_DEFAULTS)
        body = sklearn_body(malicious, serializationFormat="pickle")
        error = refusal(await harness.client.post("/servable", json=body))
        assert "security.allow_unsafe_formats" in error["errorMessage"]
        assert not ran(marker)

    async def test_the_setting_lets_pickles_load(
        self, harness_factory: HarnessFactory, malicious: Path, marker: Path, regressor: Path
    ) -> None:
        harness = await harness_factory(security={"allow_unsafe_formats": True})
        response = await harness.client.post("/servable", json=sklearn_body(regressor))
        assert response.status_code == 201, response.text
        # the malicious pickle now runs (then fails: what it unpickles to is not a model)
        refusal(await harness.client.post("/servable", json=sklearn_body(malicious, "v2")))
        assert ran(marker)


class TestPyFunc:
    async def test_refused_by_default(self, harness_factory: HarnessFactory) -> None:
        harness = await harness_factory(security=SAFE_DEFAULTS)
        body = serve_body("v1", path=ENSEMBLE, flavor={"PyFunc": {}})
        error = refusal(await harness.client.post("/servable", json=body))
        assert error["field"] == "flavor.PyFunc.modelPath"
        assert "python_function models run their own Python code" in error["errorMessage"]
        assert "security.allow_unsafe_formats" in error["errorMessage"]


class TestSkopsTrustedTypes:
    async def test_are_refused_in_a_request(
        self, harness_factory: HarnessFactory, regressor: Path
    ) -> None:
        harness = await harness_factory(security={"skops_trusted_types": [TREE]})
        body = sklearn_body(regressor, skopsTrustedTypes=[TREE])
        error = refusal(await harness.client.post("/servable", json=body))
        assert error["field"] == "flavor.Sklearn.skopsTrustedTypes"
        assert "server setting security.skops_trusted_types" in error["errorMessage"]

    async def test_come_from_the_server_setting_not_the_mlmodel(
        self, harness_factory: HarnessFactory
    ) -> None:
        # the fixture's MLmodel lists the tree type in skops_trusted_types: not trusted
        harness = await harness_factory(security=SAFE_DEFAULTS)
        error = refusal(await harness.client.post("/servable", json=mlflow_body(RF_DIABETES)))
        assert f"holds types skops does not trust: {TREE}" in error["errorMessage"]

        trusting = await harness_factory(
            data_dir=harness.app.settings.data_dir.parent / "trusting",
            security={**SAFE_DEFAULTS, "skops_trusted_types": [TREE]},
        )
        response = await trusting.client.post("/servable", json=mlflow_body(RF_DIABETES))
        assert response.status_code == 201, response.text
