"""A real ForestFlow server process with the Open Inference Protocol mounted beside the
BASIC API: REST routes on the HTTP port, the gRPC service on its own.

`python -m tests.integration.openinference.serve_oip --data-dir D --port P --grpc-port G`
(settings from the environment, as `forestflow serve` reads them). It wires what
`forestflow serve` will wire once app.py mounts the protocol (issue 10); the tests then
start `forestflow serve` instead. With `--grpc-port 0` the log says which port was bound.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

import uvicorn

from forestflow.api.grpc.server import OpenInferenceGrpcServer
from forestflow.api.openinference.rest import build_openinference_router
from forestflow.app import create_app
from forestflow.config import Settings


async def serve(data_dir: Path, port: int, grpc_port: int) -> None:
    settings = Settings(data_dir=data_dir, server={"port": port})
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    limit = settings.server.max_request_bytes
    router = build_openinference_router(
        app.control, app.inference, app.guard, limit, require_ready=app._require_ready
    )
    app.api.include_router(router)  # the framework app, behind the score lane
    grpc_server = OpenInferenceGrpcServer(
        app.control,
        app.inference,
        app.guard,
        settings.server.host,
        grpc_port,
        require_ready=app._require_ready,
        max_message_bytes=limit,
    )
    await grpc_server.start()
    config = uvicorn.Config(
        app.asgi, host=settings.server.host, port=port, lifespan="on", log_level="info"
    )
    try:
        await uvicorn.Server(config).serve()
    finally:
        await grpc_server.stop(settings.server.shutdown_grace_s)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(serve(args.data_dir, args.port, args.grpc_port))


if __name__ == "__main__":
    main()
