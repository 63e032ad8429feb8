"""The MLflow section of docs/protocols.md runs as written: its answer is the server's, its
client code works."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest

from tests.integration.mlflow_scoring.conftest import LoopbackServer

REPO = Path(__file__).resolve().parents[3]
PAGE = (REPO / "docs" / "protocols.md").read_text()
SECTION = PAGE[PAGE.index("# MLflow scoring protocol") :]
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", SECTION, flags=re.DOTALL)
DEPLOY = {
    "path": (REPO / "examples" / "energy_output").as_uri(),
    "fqrv": {
        "contract": {"organization": "samples", "project": "energy_output", "contract_number": 0},
        "release_version": "v1",
    },
    "flavor": {"ONNX": {"modelPath": "model.onnx"}},
}


def blocks(language: str) -> list[str]:
    return [code for lang, code in BLOCKS if lang == language]


@pytest.fixture(scope="module")
def server(loopback_server: LoopbackServer) -> LoopbackServer:
    """The README's quickstart model, deployed."""
    assert loopback_server.client.post("/servable", json=DEPLOY).status_code == 201
    return loopback_server


def test_the_curl_answer_shown_is_the_servers(server: LoopbackServer) -> None:
    (curl,) = blocks("shell")
    data = re.search(r"-d '(.*?)'", curl, flags=re.DOTALL)
    shown = re.search(r"^# (\{.*\})$", curl, flags=re.MULTILINE)
    assert data is not None
    assert shown is not None

    response = server.client.post(
        "/samples/energy_output/0/invocations", json=json.loads(data.group(1))
    )

    assert response.json() == json.loads(shown.group(1))


def test_the_client_example_runs(server: LoopbackServer) -> None:
    (code,) = blocks("py")
    runnable = code.replace("http://127.0.0.1:8090", server.base_url)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(runnable, {})  # the documentation's own example

    lines = printed.getvalue().splitlines()
    assert len(lines) == 4
    assert all(line.startswith("[431.78") for line in lines), lines
