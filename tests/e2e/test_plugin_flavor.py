"""A third-party flavor, installed only as an entry point, deploys and scores."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.conftest import ServerProcess
from tests.payloads import FIXTURES, prediction_values

pytestmark = pytest.mark.e2e

PLUGIN_DIR = FIXTURES / "plugins" / "doubler"


def test_an_entry_point_flavor_is_deployable(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    # the directory holds the module and its .dist-info, as `pip install` would leave them
    path = os.pathsep.join(filter(None, [str(PLUGIN_DIR), os.environ.get("PYTHONPATH")]))
    server = server_factory(tmp_path / "data", env={"PYTHONPATH": path})
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    (artifact / "factor.txt").write_text("3")
    deploy = {
        "path": str(artifact),
        "fqrv": {
            "contract": {"organization": "toys", "project": "doubler", "contractNumber": 0},
            "releaseVersion": "v1",
        },
        "flavor": {"Doubler": {"modelPath": "factor.txt"}},
    }
    response = server.client.post("/servable", json=deploy)
    assert response.status_code == 201, response.text
    score = {
        "schema": [{"type": "Float64", "fields": ["x"]}],
        "datum": [{"tensors": [{"Float64": {"data": [v]}}]} for v in (1.5, -2.0)],
    }
    scored = server.client.post("/toys/doubler/0/score", json=score)
    assert scored.status_code == 200, scored.text
    assert prediction_values(scored.json()) == [[4.5], [-6.0]]


def test_without_the_plugin_the_flavor_is_unknown(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = server_factory(tmp_path / "data")
    deploy = {
        "path": str(tmp_path),
        "fqrv": {
            "contract": {"organization": "toys", "project": "doubler", "contractNumber": 0},
            "releaseVersion": "v1",
        },
        "flavor": {"Doubler": {}},
    }
    response = server.client.post("/servable", json=deploy)
    assert response.status_code == 422
    message = response.json()["CreateServableRequestInvalidError"]["errorMessage"]
    assert "unknown flavor 'Doubler'" in message
    assert "ONNX" in message
