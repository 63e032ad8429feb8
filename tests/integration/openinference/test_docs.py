"""docs/protocols.md runs as written: its answers are the server's, its client code works."""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.integration.openinference.conftest import OipServer

REPO = Path(__file__).resolve().parents[3]
PAGE = (REPO / "docs" / "protocols.md").read_text()
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", PAGE, flags=re.DOTALL)
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
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OipServer]:
    """The README's quickstart model, deployed."""
    started = OipServer(tmp_path_factory.mktemp("docs") / "data")
    try:
        started.start()
        assert started.client.post("/servable", json=DEPLOY).status_code == 201
        yield started
    finally:
        started.close()


def test_the_metadata_and_answer_shown_are_the_servers(server: OipServer) -> None:
    metadata, answer = (json.loads(block) for block in blocks("json"))
    (curl,) = blocks("bash")
    data = re.search(r"-d '(.*?)'", curl, flags=re.DOTALL)
    assert data is not None
    body = json.loads(data.group(1))

    assert server.client.get("/v2/models/samples.energy_output.0").json() == metadata
    response = server.client.post("/v2/models/samples.energy_output.0/infer", json=body)
    assert response.json() == answer


@pytest.mark.parametrize("code", blocks("python"), ids=["http", "grpc"])
def test_the_client_examples_run(server: OipServer, code: str) -> None:
    runnable = code.replace("127.0.0.1:8090", server.http_url).replace(
        "127.0.0.1:8091", server.grpc_url
    )
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(runnable, {})  # the documentation's own example

    assert "431.78" in printed.getvalue()
