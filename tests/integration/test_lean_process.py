"""A server that serves only ONNX models imports no other model library (issue 9, scope 5).

Checked in a fresh interpreter: the test process itself has imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

HEAVY = ["sklearn", "pandas", "h2o", "jpype", "mlflow", "xgboost", "lightgbm", "boto3", "skops"]

SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    from pathlib import Path

    import httpx

    from forestflow.app import create_app
    from forestflow.config import Settings
    from tests.payloads import score_body, serve_body

    async def main() -> None:
        settings = Settings(data_dir=Path(sys.argv[1]), storage={"local_roots": ["/"]})
        app = create_app(settings)
        await app.start(periodic=False)
        transport = httpx.ASGITransport(app=app.asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
            deployed = await c.post("/servable", json=serve_body("v1"))
            scored = await c.post("/samples/energy_output/0/score", json=score_body())
        await app.shutdown()
        heavy = sorted(m for m in json.loads(sys.argv[2]) if m in sys.modules)
        print(json.dumps([deployed.status_code, scored.status_code, heavy]))

    asyncio.run(main())
    """
)


def test_an_onnx_only_server_imports_no_other_model_library(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "data"), json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    deployed, scored, heavy = json.loads(result.stdout.strip().splitlines()[-1])
    assert (deployed, scored) == (201, 200), result.stderr
    assert heavy == []
