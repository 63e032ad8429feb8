"""The 1.0 reference: a bare ASGI handler on uvicorn calling the sklearn model inline.

Body `{"rows": [[...30 floats...], ...]}`, answer `{"predictions": [...]}`. No framework,
no validation beyond what numpy does: the least any server can spend around a model call.
"""

from __future__ import annotations

import argparse

import joblib
import numpy as np
import orjson
import uvicorn


def make_app(model_path: str):
    model = joblib.load(model_path)

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if scope["method"] == "GET":
            payload, status = b'{"ready": true}', 200
        else:
            try:
                rows = np.asarray(orjson.loads(body)["rows"], dtype=np.float64)
                payload = orjson.dumps({"predictions": model.predict(rows).tolist()})
                status = 200
            except (KeyError, ValueError, TypeError) as exc:
                payload, status = orjson.dumps({"error": str(exc)}), 400
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    return app


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
