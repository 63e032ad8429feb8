"""LitServe serving the joblib model with dynamic batching of up to 16 requests (its env)."""

from __future__ import annotations

import argparse

import joblib
import litserve as ls
import numpy as np


class JoblibAPI(ls.LitAPI):
    """`{"rows": [...]}` → `{"predictions": [...]}`; batches concatenate the requests' rows."""

    def __init__(self, path: str, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.path = path
        self.sizes: list[int] = []

    def setup(self, device: str) -> None:
        self.model = joblib.load(self.path)

    def decode_request(self, request: dict) -> np.ndarray:
        return np.asarray(request["rows"], dtype=np.float64)

    def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
        # one worker runs one batch at a time: the sizes wait here for unbatch
        self.sizes = [len(x) for x in inputs]
        return np.concatenate(inputs)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict(x)

    def unbatch(self, output: np.ndarray) -> list[np.ndarray]:
        return np.split(output, np.cumsum(self.sizes)[:-1])

    def encode_response(self, output: np.ndarray) -> dict:
        return {"predictions": np.atleast_1d(output).tolist()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    api = JoblibAPI(args.model, max_batch_size=16, batch_timeout=0.002)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1)
    server.run(port=args.port, host="127.0.0.1", generate_client_file=False)


if __name__ == "__main__":
    main()
