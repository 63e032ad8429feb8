"""A remote that trickles bytes holds up its own deploys only, never the control plane."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.integration.api.conftest import HarnessFactory
from tests.payloads import contract_settings, serve_body

TRICKLE_EVERY_S = 0.5


class Trickler(BaseHTTPRequestHandler):
    """Announces a 1 MB model, then sends it one byte at a time until told to stop."""

    stop: threading.Event

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(1024 * 1024))
        self.end_headers()
        while not self.stop.wait(TRICKLE_EVERY_S):
            try:
                self.wfile.write(b"\0")
                self.wfile.flush()
            except OSError:
                return

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def trickling_url() -> Iterator[str]:
    stop = threading.Event()
    handler = type("Handler", (Trickler,), {"stop": stop})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/model.onnx"
    stop.set()
    server.shutdown()
    server.server_close()


class TestSlowRemotes:
    async def test_commands_and_local_deploys_finish_meanwhile(
        self, harness_factory: HarnessFactory, trickling_url: str
    ) -> None:
        harness = await harness_factory(storage={"fetch_deadline_s": 8})
        client = harness.client
        slow = [
            asyncio.create_task(
                client.post("/servable", json=serve_body(f"slow{i}", path=trickling_url))
            )
            for i in range(8)
        ]
        await asyncio.sleep(0)  # let the slow deploys start their fetches

        started = time.monotonic()
        contract = await client.post("/contract/other/project/0", json=contract_settings())
        contract_s = time.monotonic() - started
        started = time.monotonic()
        local = await client.post("/servable", json=serve_body("v1"))
        local_s = time.monotonic() - started

        assert contract.status_code == 201, contract.text
        assert local.status_code == 201, local.text
        assert contract_s < 2, f"the contract command took {contract_s:.1f} s"
        assert local_s < 2, f"the local deploy took {local_s:.1f} s"
        assert not any(task.done() for task in slow)

        answers = await asyncio.gather(*slow)
        for answer in answers:
            assert answer.status_code == 422, answer.text
            assert "fetch_deadline_s" in answer.text
