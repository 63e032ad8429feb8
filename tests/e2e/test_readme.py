"""The README's quickstart, run as written (port aside) against a real server."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.conftest import ServerProcess

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def _quickstart_script() -> str:
    readme = (ROOT / "README.md").read_text()
    block = re.search(
        r"<!-- quickstart:start -->\n```bash\n(.*?)```\n<!-- quickstart:end -->", readme, re.S
    )
    assert block, "README.md has no quickstart block"
    return block.group(1)


def test_the_two_commands_are_at_the_top_of_the_readme() -> None:
    head = (ROOT / "README.md").read_text()[:1500]
    assert "make run" in head
    assert "make test" in head
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_readme_quickstart_works_as_written(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    assert shutil.which("curl"), "the quickstart uses curl"
    server = server_factory(tmp_path / "data")
    script = _quickstart_script().replace("127.0.0.1:8090", f"127.0.0.1:{server.port}")
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    answers = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    kinds = [next(iter(a)) if isinstance(a, dict) else next(iter(a[0])) for a in answers]
    assert kinds == [
        "ContractCreatedSuccessfully",
        "ServableCreatedSuccessfully",
        "Contracts",
        "FQRV",
        "BasicMetaData",
        "Prediction",
        "ServableMetrics",
    ]
    prediction = answers[5]["Prediction"]
    assert prediction["servableFQRV"] == "samples.energy_output.0.v1"
    values = [d["tensors"][0]["Float32"]["data"][0] for d in prediction["datum"]]
    shown = [
        float(v) for v in re.findall(r'"data": \[([0-9.]+)\]', (ROOT / "README.md").read_text())
    ]
    assert values == pytest.approx(shown, abs=0.01)
    assert answers[6][0]["ServableMetrics"]["scoreCount"] == 1
