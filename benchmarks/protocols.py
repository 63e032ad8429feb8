"""Request bodies and answer parsers of each server's protocol, for rows of the 30 features."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks.models import FEATURES


@dataclass(frozen=True, slots=True)
class Protocol:
    """How a server wants rows, and where its answer keeps the predictions."""

    name: str
    encode: Callable[[np.ndarray], bytes]
    decode: Callable[[bytes], np.ndarray]


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _predictions(answer: bytes) -> np.ndarray:
    return np.asarray(json.loads(answer)["predictions"], dtype=np.float64).ravel()


ROWS = Protocol("rows", lambda x: _json({"rows": x.tolist()}), _predictions)
KSERVE_V1 = Protocol("kserve-v1", lambda x: _json({"instances": x.tolist()}), _predictions)
MLFLOW = Protocol("mlflow", lambda x: _json({"inputs": x.tolist()}), _predictions)


def _v2_encode(x: np.ndarray) -> bytes:
    tensor = {"name": "input-0", "shape": list(x.shape), "datatype": "FP64"}
    return _json({"inputs": [{**tensor, "data": x.ravel().tolist()}]})


def _v2_decode(answer: bytes) -> np.ndarray:
    return np.asarray(json.loads(answer)["outputs"][0]["data"], dtype=np.float64).ravel()


OPEN_INFERENCE_V2 = Protocol("v2", _v2_encode, _v2_decode)


def _basic_encode(x: np.ndarray) -> bytes:
    datum = [{"tensors": [{"Float64": {"data": row}}]} for row in x.tolist()]
    return _json({"schema": [{"type": "Float64", "fields": FEATURES}], "datum": datum})


def _basic_decode(answer: bytes) -> np.ndarray:
    datum = json.loads(answer)["Prediction"]["datum"]
    values = [next(iter(d["tensors"][0].values()))["data"][0] for d in datum]
    return np.asarray(values, dtype=np.float64)


FORESTFLOW_BASIC = Protocol("basic", _basic_encode, _basic_decode)
