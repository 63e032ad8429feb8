"""What each server is sent, and the check that it answers as the model does in process."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.servers import RunningServer, ServerSpec, http


def request_bodies(spec: ServerSpec, scratch: Path) -> dict[int, Path]:
    """The 1-row and 32-row bodies of `spec`'s protocol, written under `scratch`."""
    bodies = {}
    for n in (1, 32):
        path = scratch / f"body-{n}.json"
        path.write_bytes(spec.protocol.encode(spec.model.rows[:n]))
        bodies[n] = path
    return bodies


def verify(server: RunningServer, bodies: dict[int, Path], spec: ServerSpec | None = None) -> None:
    """Raise unless the server answers the bodies (of `spec`'s protocol, by default the
    server's own) as the model does in process."""
    spec = spec or server.spec
    for n, body in bodies.items():
        rows = spec.model.rows[:n]
        want = (
            spec.model.predict(rows) if spec.runtime == "sklearn" else spec.model.predict_onnx(rows)
        )
        got = spec.protocol.decode(http("POST", server.base + spec.score_path, body.read_bytes()))
        if got.shape != want.shape or not np.allclose(got, want, rtol=1e-4, atol=1e-3):
            diff = np.abs(got - want).max() if got.shape == want.shape else got.shape
            raise RuntimeError(f"wrong answers for {n} rows (max difference {diff})")
