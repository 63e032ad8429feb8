"""KServe's Python ModelServer serving the joblib model on the v1 protocol (run in its env)."""

from __future__ import annotations

import argparse

import joblib
import kserve
import numpy as np


class JoblibModel(kserve.Model):
    """`{"instances": rows}` → `{"predictions": [...]}`, the model called inline."""

    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self.model = None

    def load(self) -> bool:
        self.model = joblib.load(self.path)
        self.ready = True
        return self.ready

    def predict(self, payload: dict, headers: dict | None = None) -> dict:
        rows = np.asarray(payload["instances"], dtype=np.float64)
        return {"predictions": self.model.predict(rows).tolist()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    args, _ = parser.parse_known_args()
    model = JoblibModel(args.name, args.model)
    model.load()
    kserve.ModelServer(
        http_port=args.port, grpc_port=args.grpc_port, enable_grpc=False, workers=1
    ).start([model])


if __name__ == "__main__":
    main()
