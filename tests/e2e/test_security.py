"""Start-up safety and artifact integrity, against real `forestflow serve` processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.conftest import TRUSTING_ENV, ServerProcess, free_port
from tests.payloads import POWERPLANT_FEATURES, SINGLE_INPUT_MODEL, score_body, serve_body

pytestmark = pytest.mark.e2e

STARTUP_FAILED = 2


def forestflow(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the `forestflow` command to completion."""
    return subprocess.run(
        [sys.executable, "-m", "forestflow.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **TRUSTING_ENV, **(env or {})},
        check=False,
    )


def copies(data_dir: Path) -> list[Path]:
    return sorted(p for p in (data_dir / "artifacts" / "servables").glob("*/*/*/*"))


class TestTokensFromTheCommandLine:
    def test_a_token_made_while_the_server_is_stopped_opens_a_secured_server(
        self, tmp_path: Path
    ) -> None:
        data_dir = tmp_path / "data"
        created = forestflow(
            "token", "create", "--data-dir", str(data_dir), "--role", "admin", "--name", "ops"
        )
        assert created.returncode == 0, created.stderr
        token = created.stdout.strip()
        assert token.startswith("ff_")
        assert created.stdout == token + "\n"  # the token alone: `TOKEN=$(forestflow …)`

        server = ServerProcess(data_dir, {"FORESTFLOW_SECURITY__AUTH": "required"}).start()
        try:
            anonymous = server.client.get("/contracts/list")
            admitted = server.client.get(
                "/contracts/list", headers={"Authorization": f"Bearer {token}"}
            )
            listed = forestflow("token", "list", "--data-dir", str(data_dir))
            revoked = forestflow("token", "revoke", "--data-dir", str(data_dir), "--name", "ops")
        finally:
            server.close()

        assert anonymous.status_code == 401
        assert admitted.status_code == 200
        assert listed.stdout.split() == ["ops", "admin", "active"]
        assert revoked.returncode == 0, revoked.stderr
        assert "revoked" in forestflow("token", "list", "--data-dir", str(data_dir)).stdout

    @pytest.mark.parametrize("variable", ["FORESTFLOW_DATA_DIR", "LOCAL_WORKING_DIR_CONFIG"])
    def test_the_data_directory_comes_from_the_servers_variables(
        self, tmp_path: Path, variable: str
    ) -> None:
        data_dir = tmp_path / "state"
        env = {variable: str(data_dir)}

        created = forestflow("token", "create", "--role", "scorer", "--name", "ci", env=env)
        listed = forestflow("token", "list", env=env)

        assert created.returncode == 0, created.stderr
        assert any(data_dir.iterdir())  # the state is there, not in data/
        assert listed.stdout.split() == ["ci", "scorer", "active"]

    def test_an_unknown_role_is_refused(self, tmp_path: Path) -> None:
        result = forestflow(
            "token", "create", "--data-dir", str(tmp_path), "--role", "root", "--name", "x"
        )

        assert result.returncode == STARTUP_FAILED
        assert "unknown role 'root'" in result.stderr
        assert result.stdout == ""


class TestStartupRefusals:
    def test_all_interfaces_with_auth_auto_and_no_token_refuses_to_start(
        self, tmp_path: Path
    ) -> None:
        result = forestflow(
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            str(free_port()),
            "--data-dir",
            str(tmp_path / "data"),
        )

        assert result.returncode == STARTUP_FAILED
        assert "forestflow token create" in result.stderr
        assert "Traceback" not in result.stderr + result.stdout

    def test_an_unreadable_state_file_is_one_clear_message(self, tmp_path: Path) -> None:
        data_dir = tmp_path / "data"
        data_dir.mkdir()
        (data_dir / "state.sqlite3").write_bytes(b"this is not a database" * 100)

        result = forestflow("serve", "--port", str(free_port()), "--data-dir", str(data_dir))

        assert result.returncode == STARTUP_FAILED
        assert "not a SQLite database" in result.stderr
        assert "Traceback" not in result.stderr + result.stdout


class TestStateIntegrity:
    @pytest.mark.parametrize("damage", ["emptied", "deleted"])
    def test_a_lost_state_file_beside_copies_refuses_to_start_and_keeps_them(
        self, server_factory: Callable[..., ServerProcess], tmp_path: Path, damage: str
    ) -> None:
        data_dir = tmp_path / "data"
        server = server_factory(data_dir)
        for release in ("v1", "v2"):
            deployed = server.client.post("/servable", json=serve_body(release))
            assert deployed.status_code == 201, deployed.text
        server.terminate()
        kept = copies(data_dir)
        assert len(kept) == 2
        state = data_dir / "state.sqlite3"
        for leftover in data_dir.glob("state.sqlite3-*"):  # the WAL beside it
            leftover.unlink()
        if damage == "emptied":
            state.write_bytes(b"")
        else:
            state.unlink()

        result = forestflow("serve", "--port", str(free_port()), "--data-dir", str(data_dir))

        assert result.returncode == STARTUP_FAILED
        assert "--reinitialize" in result.stderr
        assert "Traceback" not in result.stderr + result.stdout
        assert copies(data_dir) == kept

        fresh = ServerProcess(data_dir).start_with("--reinitialize")
        try:
            listed = fresh.client.get("/contracts/list").json()
        finally:
            fresh.close()
        assert listed == {"Contracts": {"contracts": []}}
        moved = list(data_dir.glob("artifacts.before-reinitialize-*/servables/*/*/*/*"))
        assert len(moved) == 2


class TestArtifactIntegrity:
    def deploy_from_copy(
        self, server_factory: Callable[..., ServerProcess], tmp_path: Path
    ) -> tuple[ServerProcess, Path, Path]:
        source = tmp_path / "model"
        shutil.copytree(SINGLE_INPUT_MODEL, source)
        data_dir = tmp_path / "data"
        server = server_factory(data_dir)
        deployed = server.client.post("/servable", json=serve_body("v1", path=source))
        assert deployed.status_code == 201, deployed.text
        (copy,) = copies(data_dir)
        return server, source, copy

    def test_a_copy_missing_its_model_file_is_fetched_again_and_scores_as_before(
        self, server_factory: Callable[..., ServerProcess], tmp_path: Path
    ) -> None:
        server, _, copy = self.deploy_from_copy(server_factory, tmp_path)
        before = server.client.post("/samples/energy_output/0/score", json=score_body()).json()
        server.terminate()
        (copy / "model.onnx").unlink()

        restarted = server_factory(tmp_path / "data")
        after = restarted.client.post("/samples/energy_output/0/score", json=score_body())

        assert after.status_code == 200, after.text
        assert after.json() == before
        assert (copy / "model.onnx").is_file()

    def test_a_deleted_copy_whose_source_changed_is_failed_never_the_new_model(
        self, server_factory: Callable[..., ServerProcess], tmp_path: Path
    ) -> None:
        server, source, copy = self.deploy_from_copy(server_factory, tmp_path)
        server.terminate()
        shutil.rmtree(copy)
        other = Path(__file__).parents[2] / "examples" / "energy_output" / "model.onnx"
        shutil.copy(other, source / "model.onnx")  # the same place now holds another model

        restarted = server_factory(tmp_path / "data")
        scored = restarted.client.post(
            "/samples/energy_output/0/score", json=score_body(features=POWERPLANT_FEATURES)
        )
        stats = restarted.client.get("/samples/energy_output/0/stats").json()
        listed = restarted.client.get("/samples/energy_output/0/list").json()

        assert scored.status_code == 422, scored.text
        (metrics,) = stats
        assert metrics["ServableMetrics"]["state"] == "failed"
        assert "changed since it was deployed" in metrics["ServableMetrics"]["failure"]
        assert listed[0]["state"] == "failed"
        assert not copy.exists()
