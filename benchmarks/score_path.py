"""Per-request cost of the score path in process: no sockets, no HTTP parser, no load tool.

`python -m benchmarks.score_path [--rounds N]` builds the app, deploys the GB reference
model as ONNX (logging NONE), and drives `app.asgi` with 64 concurrent one-row requests,
50 times per round, over BASIC (`POST …/score`) and the Open Inference Protocol
(`POST /v2/models/…/infer`). It prints the best round's wall and CPU microseconds per
request. To weigh a change to the score path (docs/metrics.md), run it on the tree before
and after, alternating several times: on a busy machine single runs vary by ±10%.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from benchmarks.models import FEATURES, build
from forestflow.app import App, create_app
from forestflow.config import Settings
from forestflow.predictionlog.sinks import MemorySink

CONCURRENCY = 64
BATCHES = 50
BASE = "/bench/gb/0"


async def deploy(app: App, models: Path) -> None:
    transport = httpx.ASGITransport(app=app.asgi)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        settings = {
            "expirationPolicy": {"KeepLatest": {"servablesToKeep": 1}},
            "router": {"LatestPhaseInPctBasedRouter": {}},
        }
        assert (await client.post(f"/contract{BASE}", json=settings)).status_code == 201
        answer = await client.post(
            "/servable",
            json={
                "path": str(models / "gb"),
                "fqrv": {
                    "contract": {"organization": "bench", "project": "gb", "contract_number": 0},
                    "release_version": "v1",
                },
                "flavor": {"ONNX": {"modelPath": "model.onnx", "featureNames": FEATURES}},
                "servableSettings": {"loggingSettings": {"logLevel": "NONE"}},
            },
        )
        assert answer.status_code == 201, answer.text


def bodies() -> dict[str, tuple[str, bytes]]:
    row = np.random.default_rng(0).normal(size=(1, len(FEATURES)))
    oip = {
        "inputs": [
            {"name": "input-0", "shape": [1, 30], "datatype": "FP64", "data": row.ravel().tolist()}
        ]
    }
    basic = {
        "schema": [{"type": "Float64", "fields": FEATURES}],
        "datum": [{"tensors": [{"Float64": {"data": row[0].tolist()}}]}],
    }
    return {
        "basic": (f"{BASE}/score", orjson.dumps(basic)),
        "oip": ("/v2/models/bench.gb.0/infer", orjson.dumps(oip)),
    }


async def call(app: App, path: str, body: bytes) -> None:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = [
        (b"host", b"localhost"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": headers,
        "query_string": b"",
        "http_version": "1.1",
        "scheme": "http",
        "server": ("localhost", 80),
        "client": ("127.0.0.1", 1),
        "root_path": "",
    }
    await app.asgi(scope, receive, send)
    assert sent[0]["status"] == 200, sent


async def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as work:
        models = Path(work) / "models"
        build(models)
        settings = Settings(data_dir=Path(work) / "data", storage={"local_roots": ["/"]})
        app = create_app(settings, sinks={"memory": MemorySink()})
        await app.start(periodic=False)
        try:
            await deploy(app, models)
            best: dict[str, float] = {}
            n = BATCHES * CONCURRENCY
            for _ in range(rounds):
                for label, (path, body) in bodies().items():
                    wall, cpu = time.perf_counter(), time.process_time()
                    for _ in range(BATCHES):
                        await asyncio.gather(*(call(app, path, body) for _ in range(CONCURRENCY)))
                    for key, spent in (
                        (label, time.perf_counter() - wall),
                        (f"{label} CPU", time.process_time() - cpu),
                    ):
                        best[key] = min(best.get(key, float("inf")), spent / n * 1e6)
            print("  ".join(f"{key}: {value:.1f} us/request" for key, value in best.items()))
        finally:
            await app.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    asyncio.run(main(parser.parse_args().rounds))
