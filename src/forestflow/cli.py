"""The `forestflow` command: `forestflow serve` starts a server; `forestflow token` manages
the bearer tokens in a data directory (the server may be running or stopped); `contracts`,
`deploy`, `servables`, `stats`, `score` and `tail` talk to a running server
(`forestflow.client.commands`)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import click

from forestflow import __version__
from forestflow.client.commands import register as register_server_commands

STARTUP_FAILED = 2
"""The exit code of every start-up failure (bad settings, unusable state, missing token)."""


def _overrides(**options: Any) -> dict[str, Any]:
    """Nested settings overrides from the options the user actually gave."""
    given = {k: v for k, v in options.items() if v is not None}
    nested: dict[str, Any] = {}
    for key, section in (("host", "server"), ("port", "server"), ("workers", "scheduling")):
        if key in given:
            nested.setdefault(section, {})[key] = given.pop(key)
    return {**given, **nested}


@click.group()
@click.version_option(__version__, prog_name="forestflow")
def main() -> None:
    """ForestFlow: a policy-driven machine learning model server."""


@main.command()
@click.option("--host", help="Interface to bind (default 127.0.0.1; 0.0.0.0 for all).")
@click.option("--port", type=int, help="TCP port (default 8090, or $APPLICATION_HTTP_PORT_CONFIG).")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    help="State, artifacts and logs (default ./data, or $LOCAL_WORKING_DIR_CONFIG).",
)
@click.option("--workers", type=int, help="Worker threads that run models (default: CPU count).")
@click.option("--log-level", help="DEBUG, INFO, WARNING or ERROR (default INFO).")
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="A TOML settings file (also $FORESTFLOW_CONFIG_FILE).",
)
@click.option("--access-log/--no-access-log", default=False, help="Log every HTTP request.")
@click.option(
    "--reinitialize",
    is_flag=True,
    help="Start afresh on an empty state store beside old artifact copies (moved aside).",
)
def serve(
    host: str | None,
    port: int | None,
    data_dir: Path | None,
    workers: int | None,
    log_level: str | None,
    config_file: Path | None,
    access_log: bool,
    reinitialize: bool,
) -> None:
    """Start the server; SIGTERM or Ctrl-C stop it gracefully."""
    import uvicorn  # noqa: PLC0415 - keeps `forestflow --help` fast
    from pydantic import ValidationError  # noqa: PLC0415

    from forestflow.api.connections import uvicorn_options  # noqa: PLC0415
    from forestflow.app import StartupError, create_app  # noqa: PLC0415
    from forestflow.config import (  # noqa: PLC0415
        describe_settings_error,
        ignored_aliases,
        load_settings,
    )
    from forestflow.store.sqlite import StoreError  # noqa: PLC0415

    try:
        settings = load_settings(
            config_file,
            **_overrides(
                host=host, port=port, data_dir=data_dir, workers=workers, log_level=log_level
            ),
        )
        logging.basicConfig(
            level=settings.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        for note in ignored_aliases(settings):
            logging.getLogger("forestflow.config").warning(note)
        app = create_app(settings, reinitialize=reinitialize)
    except ValidationError as error:
        _fail(f"cannot start: {describe_settings_error(error)}")
    except (ValueError, StartupError, StoreError, OSError) as error:
        _fail(f"cannot start: {error}")
    config = uvicorn.Config(
        app.asgi,
        host=settings.server.host,
        port=settings.server.port,
        log_level=settings.log_level.lower(),
        access_log=access_log,
        timeout_graceful_shutdown=int(settings.server.shutdown_grace_s) or None,
        lifespan="on",
        **uvicorn_options(settings.server),
    )
    click.echo(f"ForestFlow {__version__}: data in {settings.data_dir.resolve()}", err=True)
    server = uvicorn.Server(config)
    handle_exit = server.handle_exit

    def on_exit_signal(sig: int, frame: FrameType | None) -> None:
        app.end_streams()  # `forestflow tail` streams end at once, not after the grace period
        handle_exit(sig, frame)

    server.handle_exit = on_exit_signal  # type: ignore[method-assign]
    server.run()
    if not server.started:  # uvicorn said why (the port is taken, say)
        sys.exit(STARTUP_FAILED)


def _fail(message: str) -> None:
    click.echo(f"forestflow: {message}", err=True)
    sys.exit(STARTUP_FAILED)


@main.group()
def token() -> None:
    """Bearer tokens: create, list and revoke (stored hashed in the state database)."""


_DATA_DIR = click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("data"),
    show_default=True,
    # the server's own variable first, then the original ForestFlow's alias
    envvar=["FORESTFLOW_DATA_DIR", "LOCAL_WORKING_DIR_CONFIG"],
    show_envvar=True,
    help="The server's data directory.",
)


def _tokens(data_dir: Path) -> Any:
    from forestflow.clock import SystemClock  # noqa: PLC0415
    from forestflow.control.tokens import TokenRegistry  # noqa: PLC0415
    from forestflow.store.sqlite import StoreError, open_store  # noqa: PLC0415

    try:
        return TokenRegistry(open_store(data_dir), SystemClock())
    except StoreError as error:
        _fail(str(error))


@token.command("create")
@_DATA_DIR
@click.option("--role", required=True, help="admin, deployer, scorer or shadow-deployer.")
@click.option("--name", required=True, help="A name for the token (who or what uses it).")
def token_create(data_dir: Path, role: str, name: str) -> None:
    """Create a token and print it alone on stdout (it is not shown again)."""
    from forestflow.control.tokens import parse_role  # noqa: PLC0415
    from forestflow.errors import ForestFlowError  # noqa: PLC0415

    try:
        click.echo(_tokens(data_dir).create(name, parse_role(role)))
    except ForestFlowError as error:
        _fail(error.describe())


@token.command("list")
@_DATA_DIR
def token_list(data_dir: Path) -> None:
    """List the tokens: name, role, and when each was created or revoked."""
    for record in _tokens(data_dir).tokens():
        state = f"revoked at {record.revoked_at_ms}" if record.revoked_at_ms else "active"
        click.echo(f"{record.name}\t{record.role}\t{state}")


@token.command("revoke")
@_DATA_DIR
@click.option("--name", required=True, help="The token's name.")
def token_revoke(data_dir: Path, name: str) -> None:
    """Revoke a token (a running server stops accepting it within seconds)."""
    from forestflow.errors import ForestFlowError  # noqa: PLC0415

    try:
        _tokens(data_dir).revoke(name)
    except ForestFlowError as error:
        _fail(error.describe())
    click.echo(f"revoked {name}", err=True)


# contracts, deploy, servables, stats, score, tail: a running server's, over HTTP (docs/cli.md)
register_server_commands(main)


if __name__ == "__main__":
    main()
