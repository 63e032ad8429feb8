"""The operator CLI (`forestflow contracts|deploy|servables|stats|score|tail`) against a real
server: an operator's session end to end, each command's table and --json checked."""

from __future__ import annotations

import json
import os
import pty
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from tests.builders import make_tokens
from tests.e2e.conftest import TRUSTING_ENV, ServerProcess, free_port
from tests.payloads import POWERPLANT_FEATURES, POWERPLANT_ROWS, fqrv_json

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = "samples/energy_output/0"
ONNX = ["--flavor", "ONNX", "--model-path", "model.onnx"]
WAIT_S = 60.0
ROW = dict(zip(POWERPLANT_FEATURES, POWERPLANT_ROWS[0], strict=True))


def forestflow(
    *args: str, url: str | None = None, token: str | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `forestflow …` to completion from the repository (as an operator would), the
    server named by $FORESTFLOW_URL."""
    env = {**os.environ, **TRUSTING_ENV}
    env.pop("FORESTFLOW_TOKEN", None)
    if url is not None:
        env["FORESTFLOW_URL"] = url
    if token is not None:
        env["FORESTFLOW_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "forestflow.cli", *args],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    return result.stdout


def table(text: str) -> list[list[str]]:
    """A printed table's lines, split on runs of two spaces or more (header first)."""
    return [re.split(r"\s{2,}", line.strip()) for line in text.strip().splitlines()]


class Lines:
    """The lines a running process writes to one stream, read as they come."""

    def __init__(self, stream: IO[str]) -> None:
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def next(self) -> str:
        line = self._queue.get(timeout=WAIT_S)
        assert line is not None, "the stream ended"
        return line

    def until(self, text: str) -> str:
        while text not in (line := self.next()):
            pass
        return line

    def join(self) -> None:
        """Wait until the stream has ended (its process has exited)."""
        self._thread.join(timeout=WAIT_S)

    def rest(self) -> list[str]:
        """Every line up to the end of the stream (the process has exited)."""
        self.join()
        found = []
        while (line := self._queue.get_nowait()) is not None:
            found.append(line)
        return found


class Tail:
    """`forestflow tail …` running in the background."""

    def __init__(self, url: str, *args: str) -> None:
        env = {**os.environ, "FORESTFLOW_URL": url}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "forestflow.cli", "tail", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        self.out, self.err = Lines(self.proc.stdout), Lines(self.proc.stderr)
        self.err.until("following prediction events")  # from here on, nothing is missed

    def stop(self) -> int:
        """Ctrl-C, as an operator stops it; returns the exit status."""
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=WAIT_S)

    def close(self) -> None:
        """End the process if it still runs, and close its pipes once they are read."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=WAIT_S)
        for lines, stream in ((self.out, self.proc.stdout), (self.err, self.proc.stderr)):
            lines.join()
            assert stream is not None
            stream.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server whose environment holds the client's variables too (they are not its own)."""
    env = {"FORESTFLOW_URL": "http://elsewhere:1", "FORESTFLOW_TOKEN": "ff_not_the_servers"}
    started = ServerProcess(tmp_path_factory.mktemp("cli") / "data", env).start()
    yield started
    started.close()


@pytest.fixture
def rows_csv(tmp_path: Path) -> Path:
    """The power-plant rows as a CSV file whose header names the features."""
    path = tmp_path / "rows.csv"
    lines = [",".join(POWERPLANT_FEATURES), *(",".join(map(str, r)) for r in POWERPLANT_ROWS)]
    path.write_text("\n".join(lines) + "\n")
    return path


class TestAnOperatorSession:
    def test_contract_releases_stats_score_tail_and_delete(
        self, server: ServerProcess, rows_csv: Path
    ) -> None:
        url = server.base_url

        # a contract, created and listed
        created = ok(forestflow("contracts", "create", CONTRACT, "--keep", "2", url=url))
        listed = ok(forestflow("contracts", "list", url=url))
        listed_json = json.loads(ok(forestflow("contracts", "list", "--json", url=url)))
        assert created == "created contract samples.energy_output.0\n"
        assert table(listed) == [
            ["CONTRACT", "ROUTER", "EXPIRATION"],
            ["samples.energy_output.0", "LatestPhaseInPctBasedRouter",
             "KeepLatest(servablesToKeep=2)"],
        ]  # fmt: skip
        assert {"organization": "samples", "project": "energy_output",
                "contractNumber": 0} in listed_json["Contracts"]["contracts"]  # fmt: skip

        # two releases of the example model, from a directory relative to here
        v1 = ok(forestflow("deploy", "examples/energy_output", "--servable", f"{CONTRACT}/v1",
                           *ONNX, "--key-features", "reqid", url=url))  # fmt: skip
        v2 = json.loads(ok(forestflow("deploy", "examples/energy_output", "--servable",
                                      f"{CONTRACT}/v2", *ONNX, "--key-features", "reqid",
                                      "--json", url=url)))  # fmt: skip
        assert re.fullmatch(r"deployed samples\.energy_output\.0\.v1 in \d+\.\d s\n", v1)
        assert v2 == {"ServableCreatedSuccessfully": {"fqrv": fqrv_json("v2")}}
        servables = table(ok(forestflow("servables", "list", CONTRACT, url=url)))
        assert servables == [
            ["RELEASE", "STATE", "VALIDITY", "PHASE-IN", "LOG LEVEL", "FAILURE"],
            ["v1", "loaded", "ImmediatelyValid", "ImmediatePhaseIn", "FULL", "-"],
            ["v2", "loaded", "ImmediatelyValid", "ImmediatePhaseIn", "FULL", "-"],
        ]
        settings = table(ok(forestflow("servables", "settings", f"{CONTRACT}/v2", url=url)))
        assert ["key features", "reqid"] in settings

        # the latest release serves, the previous one shadows: followed from here
        served_tail = Tail(url, "--contract", CONTRACT, "--json")
        shadow_tail = Tail(url, "--contract", CONTRACT, "--servable", "v1")
        try:
            scored = forestflow("score", CONTRACT, str(rows_csv), "--config", "reqid=r-1", url=url)
            scored_json = json.loads(ok(forestflow(
                "score", CONTRACT, "-", "--format", "csv", "--json", "--config", "reqid=r-2",
                stdin=rows_csv.read_text(), url=url,
            )))  # fmt: skip
            followed = [json.loads(served_tail.out.next()) for _ in range(4)]
            shadowed = [shadow_tail.out.next() for _ in range(2)]
        finally:
            stopped = [served_tail.stop(), shadow_tail.stop()]
            served_tail.close()
            shadow_tail.close()

        assert stopped == [0, 0]
        assert scored.stderr == "scored by samples.energy_output.0.v2\n"
        assert [row[0] for row in table(ok(scored))] == ["ROW", "0", "1"]
        assert table(scored.stdout)[0] == ["ROW", "prediction"]
        prediction = scored_json["Prediction"]
        assert prediction["servableFQRV"] == "samples.energy_output.0.v2"
        assert len(prediction["datum"]) == 2

        # exactly the events of the two requests: each served by v2 and shadowed by v1
        events = [line["PredictionEvent"] for line in followed]
        seen = sorted(
            (e["request"]["configs"]["reqid"], e["fqrv"]["releaseVersion"], e["servedRequest"])
            for e in events
        )
        assert seen == [("r-1", "v1", False), ("r-1", "v2", True),
                        ("r-2", "v1", False), ("r-2", "v2", True)]  # fmt: skip
        assert all(list(e["request"]["features"]) == POWERPLANT_FEATURES for e in events)
        assert served_tail.out.rest() == []
        assert sorted(line.split("  ")[1:5] for line in shadowed) == [
            ["samples.energy_output.0.v1", "shadow", "key=r-1", "rows=2"],
            ["samples.energy_output.0.v1", "shadow", "key=r-2", "rows=2"],
        ]
        assert shadow_tail.out.rest() == []

        # stats, watched: two refreshes
        watched = ok(forestflow("stats", CONTRACT, "--watch", "0.2", "--count", "2", url=url))
        stats_json = json.loads(ok(forestflow("stats", CONTRACT, "--json", url=url)))
        tables_shown = watched.strip().split("\n\n")
        assert len(tables_shown) == 2
        for shown in tables_shown:
            header, *rows = table(shown)[1:]
            assert header[:6] == ["RELEASE", "STATE", "VALID SINCE", "PHASE-IN %", "SCORED",
                                  "SHADOWED"]  # fmt: skip
            counts = {row[0]: (row[4], row[5]) for row in rows}
            assert counts == {"v1": ("0", "2"), "v2": ("2", "0")}
        metrics = {m["ServableMetrics"]["fqrv"]["releaseVersion"]: m["ServableMetrics"]
                   for m in stats_json}  # fmt: skip
        assert (metrics["v2"]["scoreCount"], metrics["v1"]["shadeCount"]) == (2, 2)

        # delete: a contract with servables is refused, then the servables, then it
        refused = forestflow("contracts", "delete", CONTRACT, url=url)
        deleted_v1 = ok(forestflow("servables", "delete", f"{CONTRACT}/v1", url=url))
        deleted_v2 = json.loads(ok(forestflow("servables", "delete", f"{CONTRACT}/v2",
                                              "--json", url=url)))  # fmt: skip
        emptied = json.loads(ok(forestflow("servables", "list", CONTRACT, "--json", url=url)))
        gone = ok(forestflow("contracts", "delete", CONTRACT, url=url))
        assert refused.returncode == 1
        assert refused.stderr.startswith("forestflow: ContractNotEmptyError (409): contract ")
        assert deleted_v1 == "deleted servable samples.energy_output.0.v1\n"
        assert deleted_v2 == {"ServablesDeletedSuccessfully": {"fqrvs": [fqrv_json("v2")]}}
        assert emptied == []
        assert gone == "deleted contract samples.energy_output.0\n"


class TestCommands:
    def test_settings_are_changed_and_shown(self, server: ServerProcess) -> None:
        url, servable = server.base_url, "samples/settings/0/v1"
        ok(forestflow("deploy", "examples/energy_output", "--servable", servable, *ONNX,
                      "--shadow", url=url))  # fmt: skip

        shown = forestflow("servables", "settings", servable, "--policy",
                           '{"validityPolicy": [{"ImmediatelyValid": {}}]}', "--logging",
                           '{"logLevel": "NONE"}', "--json", url=url)  # fmt: skip
        updated = ok(forestflow("contracts", "update", "samples/settings/0", "--router",
                                "FairPhaseInPctBasedRouter", url=url))  # fmt: skip
        contracts = table(ok(forestflow("contracts", "list", url=url)))

        settings = json.loads(ok(shown))["ServableSettings"]
        assert settings["policySettings"]["validityPolicy"] == [{"ImmediatelyValid": {}}]
        assert settings["loggingSettings"]["logLevel"] == "NONE"
        assert updated == "updated contract samples.settings.0\n"
        assert ["samples.settings.0", "FairPhaseInPctBasedRouter",
                "KeepLatest(servablesToKeep=2)"] in contracts  # fmt: skip

    def test_score_takes_json_rows_and_a_release(self, server: ServerProcess) -> None:
        url = server.base_url
        ok(forestflow("deploy", "examples/energy_output", "--servable", "samples/rows/0/v1",
                      *ONNX, url=url))  # fmt: skip
        rows = [dict(zip(POWERPLANT_FEATURES, row, strict=True)) for row in POWERPLANT_ROWS]

        scored = forestflow("score", "samples/rows/0", "--release", "v1", "--json", url=url,
                            stdin=json.dumps(rows))  # fmt: skip

        assert json.loads(ok(scored))["Prediction"]["servableFQRV"] == "samples.rows.0.v1"

    def test_deploy_shows_its_progress_on_a_terminal(self, server: ServerProcess) -> None:
        leader, follower = pty.openpty()
        env = {**os.environ, "FORESTFLOW_URL": server.base_url}
        command = [sys.executable, "-m", "forestflow.cli", "deploy", "examples/energy_output",
                   "--servable", "samples/progress/0/v1", *ONNX]  # fmt: skip
        with subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=follower, text=True
        ) as proc:
            os.close(follower)
            out, _ = proc.communicate(timeout=120)
            drawn = read_all(leader)

        assert proc.returncode == 0
        assert out.startswith("deployed samples.progress.0.v1 in ")
        assert re.search(r"\| deploying samples\.progress\.0\.v1 \d+\.\d s", drawn)
        assert drawn.endswith("\r\x1b[K")  # the line is cleared for the outcome

    def test_errors_and_misuse_have_their_exit_status(self, server: ServerProcess) -> None:
        unknown = forestflow("stats", "samples/nothing/0", url=server.base_url)
        misused = forestflow("stats", "samples-nothing", url=server.base_url)
        unreachable = forestflow("contracts", "list", url=f"http://127.0.0.1:{free_port()}")
        bad_flavor = forestflow("deploy", "examples/energy_output", "--servable",
                                "samples/bad/0/v1", "--flavor", "Pickle",
                                url=server.base_url)  # fmt: skip

        assert (unknown.returncode, unknown.stdout) == (1, "")
        assert unknown.stderr == (
            "forestflow: UnknownContract (404): unknown contract samples.nothing.0\n"
        )
        assert misused.returncode == 2
        assert "Invalid value for 'CONTRACT'" in misused.stderr
        assert unreachable.returncode == 1
        assert "cannot reach http://127.0.0.1:" in unreachable.stderr
        assert bad_flavor.returncode == 1
        assert "unknown flavor 'Pickle'" in bad_flavor.stderr
        assert bad_flavor.stderr.endswith("field: flavor\n")


class TestShutdown:
    def test_a_tail_neither_holds_the_server_back_nor_outlives_it(self, tmp_path: Path) -> None:
        grace = {"FORESTFLOW_SERVER__SHUTDOWN_GRACE_S": "30"}
        server = ServerProcess(tmp_path / "data", grace).start()
        tail = None
        try:
            ok(forestflow("deploy", "examples/energy_output", "--servable", f"{CONTRACT}/v1",
                          *ONNX, url=server.base_url))  # fmt: skip
            tail = Tail(server.base_url)
            ok(forestflow("score", CONTRACT, "-", stdin=json.dumps([ROW]), url=server.base_url))
            tail.out.until("served")  # the stream is open and delivering
            started = time.monotonic()
            server.terminate()
            stopped_after_s = time.monotonic() - started
            tail_status = tail.proc.wait(timeout=WAIT_S)
            tail_error = tail.err.rest()
        finally:
            if tail is not None:
                tail.close()
            server.close()

        assert stopped_after_s < 10  # not the 30 s grace: the stream was ended, not waited for
        assert not [line for line in server.log if "Cancel" in line or "Traceback" in line]
        assert tail_status == 1
        assert tail_error == [f"forestflow: {server.base_url} is shutting down"]


def read_all(fd: int) -> str:
    """What the pseudo-terminal received, up to its closing."""
    found = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: every writer has closed it
            break
        if not chunk:
            break
        found += chunk
    os.close(fd)
    return found.decode()


class TestTokens:
    def test_the_token_comes_from_the_environment_or_the_option(self, tmp_path: Path) -> None:
        data_dir = tmp_path / "data"
        tokens = make_tokens(data_dir)
        server = ServerProcess(data_dir, {"FORESTFLOW_SECURITY__AUTH": "required"}).start()
        try:
            url = server.base_url
            anonymous = forestflow("contracts", "list", url=url)
            from_env = forestflow("contracts", "list", "--json", url=url, token=tokens["admin"])
            option = forestflow("contracts", "list", "--token", tokens["scorer"], url=url)
            refused = forestflow("tail", "--token", tokens["scorer"], url=url)
        finally:
            server.close()

        assert anonymous.returncode == 1
        assert anonymous.stderr.startswith("forestflow: AuthenticationRequired (401): ")
        assert json.loads(ok(from_env)) == {"Contracts": {"contracts": []}}
        assert table(ok(option)) == [["CONTRACT", "ROUTER", "EXPIRATION"]]
        assert refused.returncode == 1
        assert refused.stderr.startswith("forestflow: PermissionDenied (403): ")
