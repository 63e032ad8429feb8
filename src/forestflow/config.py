"""Settings: one tree, read once from CLI options, environment, a TOML file and defaults.

Precedence, highest first: options given to `forestflow serve`, `FORESTFLOW_*` environment
variables (nested with `__`, e.g. `FORESTFLOW_SERVER__PORT`), the original ForestFlow's
variables `APPLICATION_HTTP_PORT_CONFIG` (the port) and `LOCAL_WORKING_DIR_CONFIG` (the
data directory), the TOML file named by `--config` or `FORESTFLOW_CONFIG_FILE`, then the
defaults below. When an option or a `FORESTFLOW_*` variable overrides one of the original's
variables with another value, `ignored_aliases` says so, for the server to log.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_PORT = 8090


class _Group(BaseModel):
    """A group of settings (`[server]`, `FORESTFLOW_SERVER__…`): unknown keys are refused,
    so a misspelt setting stops the server instead of being silently ignored."""

    model_config = ConfigDict(extra="forbid")


class ServerSettings(_Group):
    """The HTTP listener."""

    host: str = Field("127.0.0.1", description="Interface to bind; 0.0.0.0 for every interface.")
    port: int = Field(DEFAULT_PORT, ge=0, le=65535, description="TCP port (0 picks a free one).")
    grpc_port: int = Field(
        8091,
        ge=0,
        le=65535,
        description="Port of the Open Inference Protocol over gRPC, on the same host (0: off).",
    )
    max_request_bytes: int = Field(
        32 * 1024 * 1024, ge=1024, description="Largest request body accepted; larger → 413."
    )
    shutdown_grace_s: float = Field(
        10.0, ge=0, description="How long SIGTERM waits for in-flight requests to finish."
    )
    keep_alive_timeout_s: float = Field(
        5.0, gt=0, description="Close a keep-alive connection idle for this long."
    )
    request_read_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Close a connection whose request headers and body take longer than this.",
    )
    max_connections: int | None = Field(
        None,
        ge=8,
        description="Open connections at most; beyond it the idlest are closed first "
        "(default: three quarters of the open-file limit).",
    )


class SchedulingSettings(_Group):
    """How models run: worker threads, and the shadow queue."""

    workers: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        description="Worker threads that run models (default: one per CPU).",
    )
    max_shadow_workers: int | None = Field(
        None,
        ge=1,
        description="Workers shadow work may use at once (default: workers - 1, at least 1).",
    )
    shadow_queue_size: int = Field(
        1000, ge=0, description="Shadow requests waiting at most; beyond it they are dropped."
    )
    max_batch_size: int = Field(
        16,
        ge=1,
        description="Served requests to one servable scored in one model call at most, "
        "when they arrive while its calls are running (1: no batching).",
    )
    max_shadow_batch_size: int = Field(
        256,
        ge=1,
        description="Queued shadow requests to one servable scored in one model call at most.",
    )
    shadow_batch_wait_s: float = Field(
        0.1,
        ge=0,
        le=10,
        description="Seconds a queued shadow request waits at most, while served requests "
        "are in progress, for others to the same servable to share its model call (0: a "
        "call starts as soon as a worker is free).",
    )
    shadow_time_share: float = Field(
        0.07,
        gt=0,
        le=1,
        description="Share of the CPU time shadow work may take (its model calls, counting "
        "and logging), besides the CPU the process leaves idle (1: no limit); shadow "
        "requests beyond it are dropped at once and counted.",
    )

    @property
    def shadow_workers(self) -> int:
        """The effective shadow concurrency."""
        return self.max_shadow_workers or max(1, self.workers - 1)


class ControlSettings(_Group):
    """The control plane's periodic work."""

    evaluation_interval_s: float = Field(
        1.0, gt=0, le=1.0, description="Seconds between policy evaluation passes (at most 1)."
    )
    counters_flush_interval_s: float = Field(
        5.0, gt=0, description="Seconds between writes of scoring counters to the store."
    )
    snapshot_every: int = Field(
        1000, ge=1, description="Write a state snapshot after this many events."
    )


class StorageSettings(_Group):
    """Where remote artifacts come from (SPEC §2.2)."""

    s3_endpoint_url: str | None = Field(
        None, description="Endpoint of an S3-compatible store (default: AWS, or $AWS_ENDPOINT_URL)."
    )
    mlflow_tracking_uri: str | None = Field(
        None,
        description="MLflow tracking server for models:/ paths (default: $MLFLOW_TRACKING_URI).",
    )
    timeout_s: float = Field(60.0, gt=0, description="Network timeout of one request to a store.")
    fetch_deadline_s: float = Field(
        900.0, gt=0, description="A whole artifact fetch must finish within this long."
    )
    local_roots: list[Path] = Field(
        default_factory=lambda: [Path.cwd()],
        description="Local paths may be deployed only from under these directories "
        "(default: the server's working directory).",
    )
    allow_private_hosts: bool = Field(
        False,
        description="Allow fetches from loopback, private and link-local addresses.",
    )
    max_artifact_bytes: int = Field(
        4 * 1024**3,
        ge=1,
        description="Largest artifact accepted, downloaded and unpacked; larger → 413.",
    )
    free_space_reserve_bytes: int = Field(
        256 * 1024**2,
        ge=0,
        description="Free disk space a fetch must leave in the data directory; else → 507.",
    )
    max_concurrent_fetches: int = Field(
        16, ge=1, description="Artifact fetches running at once; more wait their turn."
    )


class SecuritySettings(_Group):
    """Who may call the server, and what a caller may make it do (docs/security.md)."""

    auth: Literal["auto", "required", "off"] = Field(
        "auto",
        description="Bearer-token authentication: 'auto' requires it unless the server "
        "listens only on loopback; 'required'; or 'off'.",
    )
    allow_unsafe_formats: bool = Field(
        False,
        description="Load model formats that run code when loaded (pickle, joblib, "
        "cloudpickle, MLflow python_function code). Only for artifacts you trust.",
    )
    skops_trusted_types: list[str] = Field(
        default_factory=list,
        description="Type names a skops file may hold beyond the types skops trusts itself.",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host header values accepted while auth is off, beyond loopback names "
        "and the listen address.",
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="Browser origins allowed by CORS (default: none)."
    )


class FileSinkSettings(_Group):
    """Prediction events as rotating JSON Lines files (the embedded default)."""

    enabled: bool = Field(True, description="Write prediction events to files.")
    directory: Path | None = Field(
        None, description="Where the files go (default: <data_dir>/predictions)."
    )
    max_file_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="Start a new file before one grows past this."
    )
    max_file_age_s: float = Field(3600.0, gt=0, description="Start a new file after this long.")
    buffer_size: int = Field(
        10_000, ge=1, description="Events waiting to be written at most; beyond it they drop."
    )
    max_files: int | None = Field(
        None, ge=1, description="Delete the oldest files beyond this many (default: keep all)."
    )


class KafkaSinkSettings(_Group):
    """Prediction events to Kafka (enabled by setting `bootstrap_servers`)."""

    bootstrap_servers: str | None = Field(
        None, description="host:port[,host:port…] of the brokers; unset = no Kafka sink."
    )
    topic: str = Field("forestflow-predictions", description="Default topic.")
    contract_topics: dict[str, str] = Field(
        default_factory=dict,
        description='Topic per contract, keyed "org.project.n"; others go to `topic`.',
    )
    buffer_size: int = Field(
        100_000, ge=1, description="Events buffered while the broker is slow or down."
    )
    message_timeout_s: float = Field(
        30.0, gt=0, description="An event not delivered within this long is dropped."
    )
    client_config: dict[str, str] = Field(
        default_factory=dict,
        description="Extra librdkafka settings (security.protocol, sasl.*, …).",
    )


class PredictionLogSettings(_Group):
    """Where prediction events go (SPEC §5)."""

    files: FileSinkSettings = Field(default_factory=FileSinkSettings)  # type: ignore[arg-type]
    kafka: KafkaSinkSettings = Field(default_factory=KafkaSinkSettings)  # type: ignore[arg-type]


class FeedbackSettings(_Group):
    """How ground truth is joined with logged predictions (SPEC §6)."""

    window_s: float = Field(
        3600.0, gt=0, description="Predictions wait this long for their feedback."
    )
    max_prediction_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1,
        description=(
            "Memory the predictions waiting for feedback may take at most, estimated per "
            "prediction (its key, servable, scored columns and bookkeeping); the oldest go first."
        ),
    )
    max_predictions: int | None = Field(
        None,
        ge=1,
        description=(
            "Optionally, also at most this many predictions kept (older config files set it; "
            "max_prediction_bytes is the bound that matters)."
        ),
    )
    rolling_window: int = Field(
        1000, ge=1, description="Joined predictions per servable the rolling metrics cover."
    )
    regression_tolerance_rel: float = Field(
        0.1,
        ge=0,
        description="A regression prediction within this relative error earns a bandit reward.",
    )


class Settings(BaseSettings):
    """Everything configurable about a ForestFlow server."""

    model_config = SettingsConfigDict(
        env_prefix="FORESTFLOW_", env_nested_delimiter="__", extra="forbid"
    )

    data_dir: Path = Field(Path("data"), description="Directory for state, artifacts and logs.")
    log_level: str = Field("INFO", description="Server log level (DEBUG, INFO, WARNING, ERROR).")
    seed: int | None = Field(None, description="Seed for routing randomness (tests, replays).")
    server: ServerSettings = Field(default_factory=ServerSettings)  # type: ignore[arg-type]
    scheduling: SchedulingSettings = Field(default_factory=SchedulingSettings)  # type: ignore[arg-type]
    control: ControlSettings = Field(default_factory=ControlSettings)  # type: ignore[arg-type]
    storage: StorageSettings = Field(default_factory=StorageSettings)  # type: ignore[arg-type]
    prediction_log: PredictionLogSettings = Field(default_factory=PredictionLogSettings)
    feedback: FeedbackSettings = Field(default_factory=FeedbackSettings)  # type: ignore[arg-type]
    security: SecuritySettings = Field(default_factory=SecuritySettings)  # type: ignore[arg-type]

    @model_validator(mode="after")
    def _check_shadow_workers(self) -> Settings:
        shadow = self.scheduling.max_shadow_workers
        if shadow is not None and shadow > self.scheduling.workers:
            raise ValueError("scheduling.max_shadow_workers cannot exceed scheduling.workers")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """CLI/init values, then env, then the original's env names, then the TOML file."""
        sources: list[PydanticBaseSettingsSource] = [
            init_settings,
            env_settings,
            _LegacyEnvironment(settings_cls),
        ]
        # reads `toml_file` from the model config; load_settings sets it when a file is given
        sources.append(TomlConfigSettingsSource(settings_cls))
        return tuple(sources)


PORT_ALIAS = "APPLICATION_HTTP_PORT_CONFIG"
DATA_DIR_ALIAS = "LOCAL_WORKING_DIR_CONFIG"


class _LegacyEnvironment(PydanticBaseSettingsSource):
    """The original ForestFlow's environment variables: its HTTP port and its local working
    directory (where it kept its state and its copies of the models: our data directory)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        port = _alias_port()
        if port is not None:
            values["server"] = {"port": port}
        data_dir = _alias_data_dir()
        if data_dir is not None:
            values["data_dir"] = data_dir
        return values


def _alias_port() -> int | None:
    """`APPLICATION_HTTP_PORT_CONFIG` as a port number; a ValueError naming the variable
    when it is set to anything else (blank counts as unset)."""
    text = os.environ.get(PORT_ALIAS, "").strip()
    if not text:
        return None
    if not text.isascii() or not text.isdigit() or not 0 <= int(text) <= 65535:
        raise ValueError(f"{PORT_ALIAS} must be a port number from 0 to 65535, got {text!r}")
    return int(text)


def _alias_data_dir() -> Path | None:
    """`LOCAL_WORKING_DIR_CONFIG` as a path (blank counts as unset)."""
    text = os.environ.get(DATA_DIR_ALIAS, "").strip()
    return Path(text) if text else None


def ignored_aliases(settings: Settings) -> list[str]:
    """A sentence for each of the original's variables that is set but overridden by a
    `forestflow serve` option or a `FORESTFLOW_*` variable with a different value."""
    notes = []
    port = _alias_port()
    if port is not None and port != settings.server.port:
        notes.append(
            f"{PORT_ALIAS}={port} is ignored: the port is {settings.server.port}, "
            "from --port or FORESTFLOW_SERVER__PORT, which take precedence"
        )
    data_dir = _alias_data_dir()
    if data_dir is not None and data_dir.resolve() != settings.data_dir.resolve():
        notes.append(
            f"{DATA_DIR_ALIAS}={data_dir} is ignored: the data directory is "
            f"{settings.data_dir}, from --data-dir or FORESTFLOW_DATA_DIR, which take precedence"
        )
    return notes


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings; `overrides` are nested dicts of values given on the command line."""
    named = config_file or os.environ.get("FORESTFLOW_CONFIG_FILE")
    if not named:
        return Settings(**overrides)
    path = Path(named)
    if not path.is_file():
        raise ValueError(f"config file {path} does not exist")

    class FileSettings(Settings):
        model_config = SettingsConfigDict(toml_file=path)

    return FileSettings(**overrides)


def describe_settings_error(error: ValidationError) -> str:
    """A configuration error in a sentence per problem, naming the setting as it is written
    in the config file (`server.port`) and in the environment (`FORESTFLOW_SERVER__PORT`)."""
    problems = []
    for item in error.errors(include_url=False):
        dotted = ".".join(str(part) for part in item["loc"]) or "settings"
        variable = "FORESTFLOW_" + "__".join(str(part).upper() for part in item["loc"])
        if item["type"] == "extra_forbidden":
            problem = "is not a setting (check its spelling; docs/configuration.md lists them)"
        else:
            problem = f"{item['msg']} (got {item.get('input')!r})"
        problems.append(f"{dotted} ({variable}) {problem}")
    return "invalid configuration: " + "; ".join(problems)
