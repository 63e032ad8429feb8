"""Settings precedence: CLI > FORESTFLOW_* > APPLICATION_HTTP_PORT > TOML file > defaults."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from forestflow.config import describe_settings_error, load_settings


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FORESTFLOW_SERVER__PORT", "APPLICATION_HTTP_PORT", "FORESTFLOW_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)


class TestPrecedence:
    def test_defaults(self) -> None:
        settings = load_settings()
        assert settings.server.port == 8090
        assert settings.server.host == "127.0.0.1"
        assert settings.control.evaluation_interval_s == 1.0

    def test_the_original_port_variable_is_honoured(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("APPLICATION_HTTP_PORT", "9000")
        assert load_settings().server.port == 9000

    def test_forestflow_variables_win_over_the_original_one(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("APPLICATION_HTTP_PORT", "9000")
        monkeypatch.setenv("FORESTFLOW_SERVER__PORT", "9001")
        assert load_settings().server.port == 9001

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
