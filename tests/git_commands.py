"""Running git in tests, isolated from the user's and the system's configuration."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

GIT_ENV = {
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "ForestFlow Tests",
    "GIT_AUTHOR_EMAIL": "tests@forestflow.invalid",
    "GIT_COMMITTER_NAME": "ForestFlow Tests",
    "GIT_COMMITTER_EMAIL": "tests@forestflow.invalid",
}


def git(cwd: Path, *args: str, **env: str) -> str:
    """Run git in `cwd` (extra environment in `env`); return its stdout, raise on failure."""
    result = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={**os.environ, **GIT_ENV, **env},
        check=True,
        capture_output=True,
    )
    return result.stdout.decode()
