"""The `forestflow` command: `forestflow serve` starts a server."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click

from forestflow import __version__


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
@click.option("--port", type=int, help="TCP port (default 8090, or $APPLICATION_HTTP_PORT).")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    help="State, artifacts and logs (default ./data).",
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
def serve(
    host: str | None,
    port: int | None,
    data_dir: Path | None,
    workers: int | None,
    log_level: str | None,
    config_file: Path | None,
    access_log: bool,
) -> None:
    """Start the server; SIGTERM or Ctrl-C stop it gracefully."""
    import uvicorn  # noqa: PLC0415 - keeps `forestflow --help` fast

    from forestflow.api.connections import uvicorn_options  # noqa: PLC0415
    from forestflow.app import create_app  # noqa: PLC0415
    from forestflow.config import load_settings  # noqa: PLC0415

    try:
        settings = load_settings(
            config_file,
            **_overrides(
                host=host, port=port, data_dir=data_dir, workers=workers, log_level=log_level
            ),
        )
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    app = create_app(settings)
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
    server.run()
    if not server.started:
        sys.exit(1)


if __name__ == "__main__":
    main()
