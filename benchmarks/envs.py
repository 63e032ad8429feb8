"""One virtual environment per competing server under benchmarks/.envs, installed on demand."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

ENVS_DIR = Path(__file__).parent / ".envs"


def _sklearn_pin() -> str:
    # every server unpickles the same joblib file: the same scikit-learn reads it as written
    return f"scikit-learn=={metadata.version('scikit-learn')}"


def requirements() -> dict[str, list[str]]:
    """What each competitor's environment holds (the versions the notes were measured on)."""
    sk = _sklearn_pin()
    return {
        # uvloop 0.22 kills MLServer's inference workers at start-up ("no current event loop")
        "mlserver": ["mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop==0.21.0", sk],
        "mlflow": [f"mlflow=={metadata.version('mlflow')}", sk],
        "kserve": ["kserve==0.21.0", sk],
        "litserve": ["litserve==0.2.19", sk],
    }


def ensure(name: str) -> Path:
    """The env's python, creating and installing it first if its marker is missing or stale."""
    spec = requirements()[name]
    env = ENVS_DIR / name
    python = env / "bin" / "python"
    marker = env / ".installed"
    wanted = "\n".join(spec)
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    log = ENVS_DIR / f"{name}.install.log"
    ENVS_DIR.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        steps = [
            [sys.executable, "-m", "venv", "--clear", str(env)],
            [str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
            [str(python), "-m", "pip", "install", "--quiet", *spec],
        ]
        for step in steps:
            if subprocess.run(step, stdout=out, stderr=subprocess.STDOUT, check=False).returncode:
                tail = log.read_text().strip().splitlines()[-1:] or ["?"]
                raise RuntimeError(f"install failed ({' '.join(spec)}): {tail[0][:160]}")
    marker.write_text(wanted)
    return python


def main() -> None:
    """Install every environment (or only those named on the command line)."""
    for name in sys.argv[1:] or list(requirements()):
        try:
            print(name, ensure(name))
        except RuntimeError as exc:
            print(name, exc)


if __name__ == "__main__":
    main()
