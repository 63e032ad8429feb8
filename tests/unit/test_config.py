"""Settings precedence: CLI > FORESTFLOW_* > the original ForestFlow's variables
(APPLICATION_HTTP_PORT_CONFIG, LOCAL_WORKING_DIR_CONFIG) > TOML file > defaults."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from forestflow.config import describe_settings_error, ignored_aliases, load_settings


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "FORESTFLOW_SERVER__PORT",
        "FORESTFLOW_DATA_DIR",
        "FORESTFLOW_CONFIG_FILE",
        "APPLICATION_HTTP_PORT_CONFIG",
        "LOCAL_WORKING_DIR_CONFIG",
    ):
        monkeypatch.delenv(name, raising=False)


class TestPrecedence:
    def test_defaults(self) -> None:
        settings = load_settings()
        assert settings.server.port == 8090
        assert settings.server.host == "127.0.0.1"
        assert settings.control.evaluation_interval_s == 1.0


class TestTheOriginalsVariables:
    """`APPLICATION_HTTP_PORT_CONFIG` and `LOCAL_WORKING_DIR_CONFIG`, as the original's
    application.conf read them: the HTTP port, and the directory of its state and copies."""

    def test_they_set_the_port_and_the_data_directory(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.setenv("APPLICATION_HTTP_PORT_CONFIG", "9000")
        monkeypatch.setenv("LOCAL_WORKING_DIR_CONFIG", str(tmp_path / "ff-temp"))
        settings = load_settings()
        assert (settings.server.port, settings.data_dir) == (9000, tmp_path / "ff-temp")
        assert ignored_aliases(settings) == []

    def test_they_win_over_the_file(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        file = tmp_path / "ff.toml"
        file.write_text('data_dir = "/srv/ff"\n[server]\nport = 9002\n')
        monkeypatch.setenv("APPLICATION_HTTP_PORT_CONFIG", "9000")
        monkeypatch.setenv("LOCAL_WORKING_DIR_CONFIG", "ff-temp")
        settings = load_settings(file)
        assert (settings.server.port, settings.data_dir) == (9000, Path("ff-temp"))

    def test_forestflow_variables_win_and_the_ignored_ones_are_named(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("APPLICATION_HTTP_PORT_CONFIG", "9000")
        monkeypatch.setenv("FORESTFLOW_SERVER__PORT", "9001")
        monkeypatch.setenv("LOCAL_WORKING_DIR_CONFIG", "ff-temp")
        monkeypatch.setenv("FORESTFLOW_DATA_DIR", "data")
        settings = load_settings()
        assert (settings.server.port, settings.data_dir) == (9001, Path("data"))
        assert ignored_aliases(settings) == [
            "APPLICATION_HTTP_PORT_CONFIG=9000 is ignored: the port is 9001, from --port or "
            "FORESTFLOW_SERVER__PORT, which take precedence",
            "LOCAL_WORKING_DIR_CONFIG=ff-temp is ignored: the data directory is data, from "
            "--data-dir or FORESTFLOW_DATA_DIR, which take precedence",
        ]

    def test_the_same_value_both_ways_is_no_conflict(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("APPLICATION_HTTP_PORT_CONFIG", "9000")
        monkeypatch.setenv("LOCAL_WORKING_DIR_CONFIG", "./ff-temp")
        settings = load_settings(server={"port": 9000}, data_dir=tmp_path / "ff-temp")
        assert ignored_aliases(settings) == []

    def test_blank_is_unset(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("APPLICATION_HTTP_PORT_CONFIG", " ")
        monkeypatch.setenv("LOCAL_WORKING_DIR_CONFIG", "")
        settings = load_settings()
        assert (settings.server.port, settings.data_dir) == (8090, Path("data"))

    @pytest.mark.parametrize("value", ["http", "-1", "65536", "80.5"])
    def test_a_port_that_is_not_one_is_refused_by_its_name(
        self, monkeypatch: pytest.MonkeyPatch, value: str
    ) -> None:
        monkeypatch.setenv("APPLICATION_HTTP_PORT_CONFIG", value)
        with pytest.raises(ValueError, match="APPLICATION_HTTP_PORT_CONFIG must be a port number"):
            load_settings()

    def test_they_live_beside_the_strict_forestflow_variables(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # FORESTFLOW_* variables are strict; the original's are read by name, not refused
        monkeypatch.setenv("APPLICATION_HTTP_PORT_CONFIG", "9000")
        monkeypatch.setenv("APPLICATION_ENVIRONMENT_CONFIG", "local")
        assert load_settings().server.port == 9000

    def test_the_server_refuses_a_bad_port_variable_by_its_name(self, tmp_path: Path) -> None:
        env = {
            "PATH": os.environ["PATH"],
            "APPLICATION_HTTP_PORT_CONFIG": "http",
            "LOCAL_WORKING_DIR_CONFIG": str(tmp_path / "ff-temp"),
        }
        result = subprocess.run(
            [sys.executable, "-m", "forestflow.cli", "serve"],
            capture_output=True, text=True, timeout=60, check=False, env=env, cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 2
        assert "forestflow: cannot start: APPLICATION_HTTP_PORT_CONFIG must be a port number" in (
            result.stderr
        )
        assert not (tmp_path / "ff-temp").exists()

    def test_cli_options_win_over_everything(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.setenv("FORESTFLOW_SERVER__PORT", "9001")
        file = tmp_path / "ff.toml"
        file.write_text("[server]\nport = 9002\nmax_request_bytes = 4096\n")
        settings = load_settings(file, server={"port": 9003})
        assert settings.server.port == 9003
        assert settings.server.max_request_bytes == 4096  # from the file, merged, not replaced

    def test_the_file_fills_what_nothing_else_sets(self, tmp_path: Path) -> None:
        file = tmp_path / "ff.toml"
        file.write_text('data_dir = "/srv/ff"\n[scheduling]\nworkers = 3\n')
        settings = load_settings(file)
        assert settings.data_dir == Path("/srv/ff")
        assert settings.scheduling.workers == 3
        assert settings.scheduling.shadow_workers == 2


class TestValidation:
    def test_unknown_file_keys_are_refused(self, tmp_path: Path) -> None:
        file = tmp_path / "ff.toml"
        file.write_text("bogus = 1\n")
        with pytest.raises(ValidationError, match="bogus"):
            load_settings(file)

    def test_shadow_workers_cannot_exceed_workers(self) -> None:
        with pytest.raises(ValidationError, match="max_shadow_workers"):
            load_settings(scheduling={"workers": 2, "max_shadow_workers": 3})

    def test_a_missing_config_file_is_reported(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="does not exist"):
            load_settings(tmp_path / "missing.toml")

    def test_evaluation_runs_at_least_once_a_second(self) -> None:
        with pytest.raises(ValidationError, match="evaluation_interval_s"):
            load_settings(control={"evaluation_interval_s": 2})


class TestMisspeltSettings:
    """A typo in a setting stops the server, naming the setting both ways it is written."""

    def test_a_misspelt_key_in_a_file_group_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "forestflow.toml"
        path.write_text("[server]\nprot = 18095\n")
        with pytest.raises(ValidationError) as raised:
            load_settings(path)
        message = describe_settings_error(raised.value)
        assert "server.prot (FORESTFLOW_SERVER__PROT) is not a setting" in message
        assert "pydantic" not in message

    def test_a_misspelt_environment_variable_is_refused(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("FORESTFLOW_SERVER__PROT", "18095")
        with pytest.raises(ValidationError) as raised:
            load_settings()
        assert "server.prot (FORESTFLOW_SERVER__PROT)" in describe_settings_error(raised.value)

    def test_a_bad_value_says_what_was_given(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("FORESTFLOW_SCHEDULING__MAX_BATCH_SIZE", "lots")
        with pytest.raises(ValidationError) as raised:
            load_settings()
        message = describe_settings_error(raised.value)
        assert message.startswith("invalid configuration: scheduling.max_batch_size")
        assert "'lots'" in message

    def test_the_server_refuses_to_start_with_one_message(self, tmp_path: Path) -> None:
        path = tmp_path / "forestflow.toml"
        path.write_text("[server]\nprot = 18095\n")
        result = subprocess.run(
            [sys.executable, "-m", "forestflow.cli", "serve", "--config", str(path),
             "--data-dir", str(tmp_path / "data")],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 2
        assert "server.prot (FORESTFLOW_SERVER__PROT) is not a setting" in result.stderr
        assert "errors.pydantic.dev" not in result.stderr
        assert not (tmp_path / "data").exists()
