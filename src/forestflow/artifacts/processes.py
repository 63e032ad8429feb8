"""A fetch's helper process (git, an MLflow download), run within the fetch's budget.

The process writes on its own, so its bytes cannot be counted chunk by chunk: it is
watched instead. Every `poll_s` the directory it writes to is measured, the disk's free
space and the fetch's deadline are checked, and on any breach — or when the command runs
longer than its own timeout — its whole process group is killed (git's helpers too)
before the budget's error is raised. A killed process writes nothing more, so the
cache's clean-up of the fetch's directory is final.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from forestflow.artifacts.budget import FetchBudget


def run_bounded(
    args: Sequence[str],
    *,
    budget: FetchBudget,
    timeout_s: float,
    measure: Callable[[], int],
    env: Mapping[str, str],
    cwd: Path | None = None,
    poll_s: float = 0.5,
) -> subprocess.CompletedProcess[str]:
    """Run `args` without a shell, a terminal or stdin, and return how it ended.

    Raises `subprocess.TimeoutExpired` after `timeout_s`, and the budget's errors when
    `measure()` (the bytes written so far) is over the limit, the free space is below the
    reserve, or the deadline has passed; the process group is killed first.
    """
    process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
        list(args),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # no controlling terminal: ssh cannot prompt either
    )
    started = time.monotonic()
    try:
        while True:
            left = timeout_s - (time.monotonic() - started)
            wait = max(0.01, min(poll_s, left, budget.remaining_s))
            try:
                stdout, stderr = process.communicate(timeout=wait)
            except subprocess.TimeoutExpired:
                pass
            else:
                # it may have finished between two polls: what it wrote counts all the same
                budget.check_size(measure())
                budget.check_free_space()
                return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
            if time.monotonic() - started >= timeout_s:
                raise subprocess.TimeoutExpired(process.args, timeout_s)
            budget.check_deadline()
            budget.check_size(measure())
            budget.check_free_space()
    except BaseException:
        _kill(process)
        raise


def _kill(process: subprocess.Popen[str]) -> None:
    """Kill the process group of `process` and reap it (once reaped, its id may be
    another process's: then there is nothing left to kill)."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
