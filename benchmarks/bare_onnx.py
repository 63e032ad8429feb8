"""The ONNX reference: a bare Starlette handler running the ONNX export in ONNX Runtime.

Same body and answer as bare_sklearn.py. One intra-op and one inter-op thread, as every
server pinned to one core gets.
"""

from __future__ import annotations

import argparse

import numpy as np
import onnxruntime as ort
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def make_app(model_path: str) -> Starlette:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    async def predict(request: Request) -> Response:
        rows = np.asarray(orjson.loads(await request.body())["rows"], dtype=np.float32)
        out = session.run(None, {input_name: rows})[0]
        return Response(
            orjson.dumps({"predictions": out.ravel().tolist()}), media_type="application/json"
        )

    async def ready(_: Request) -> Response:
        return Response(b'{"ready": true}', media_type="application/json")

    return Starlette(routes=[Route("/", predict, methods=["POST"]), Route("/", ready)])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        make_app(args.model),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
