"""The `forestflow` commands that talk to a running server, built on `forestflow.client`:
`contracts`, `deploy`, `servables`, `stats`, `score` and `tail` (docs/cli.md).

Every command takes `--url` (`$FORESTFLOW_URL`, else http://127.0.0.1:8090), `--token`
(`$FORESTFLOW_TOKEN`) and `--json`, which prints the server's answer as it is, for scripts;
without it, tables for people. Exit status: 0 done; 1 the server answered an error (its
name, message and field on standard error) or gave no answer; 2 a usage error.
"""

from __future__ import annotations

import functools
import json
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO, TypeVar

import click

from forestflow.client import _calls as calls
from forestflow.client import _tables as tables
from forestflow.client._answers import (
    EventsMissed,
    Feature,
    Prediction,
    Release,
    ServableMetrics,
    ServableSettings,
)
from forestflow.client._names import FQRV, Contract
from forestflow.client._progress import Spinner
from forestflow.client._requests import (
    BasicServeRequest,
    MLFlowServeRequest,
    ServeRequest,
    artifact_location,
    score_body,
)
from forestflow.client._rows import read_input, typed_rows
from forestflow.client._sync import Client
from forestflow.client._transport import DEFAULT_URL, TOKEN_VARIABLE, URL_VARIABLE, ClientError
from forestflow.errors import ForestFlowError, UnknownContract, UnknownServable

SERVER_ERROR = 1
"""The exit status when the server answered an error, or none."""
F = TypeVar("F", bound=Callable[..., Any])


# --- what every command shares ------------------------------------------------------------


class _Named(click.ParamType):  # type: ignore[type-arg] # generic in click >= 8.2 only
    """A contract (`org/project/n`) or servable (`org/project/n/release`) argument."""

    def __init__(self, kind: type[Contract] | type[FQRV]) -> None:
        self.kind = kind
        self.name = "CONTRACT" if kind is Contract else "SERVABLE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The parsed name; a usage error for a malformed one."""
        try:
            return self.kind.parse(value)
        except ValueError as error:
            self.fail(str(error), param, ctx)


class _Policy(click.ParamType):  # type: ignore[type-arg] # generic in click >= 8.2 only
    """JSON (`{"KeepLatest": {"servablesToKeep": 3}}`), `@file.json`, or a bare name
    (`ImmediatePhaseIn`) for a policy without parameters."""

    name = "JSON|NAME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The JSON value the option stands for."""
        if not isinstance(value, str):
            return value
        try:
            if value.startswith("@"):
                return json.loads(Path(value[1:]).read_text())
            if value.lstrip()[:1] in ("{", "["):
                return json.loads(value)
        except (OSError, ValueError) as error:
            self.fail(f"not JSON: {error}", param, ctx)
        return {value: {}}


CONTRACT, SERVABLE, POLICY = _Named(Contract), _Named(FQRV), _Policy()


def server_command(command: F) -> F:
    """`--url`, `--token`, `--timeout` and `--json`, and errors reported as the exit status."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ForestFlowError as error:
            _report(error)
        except ClientError as error:
            click.echo(f"forestflow: {error}", err=True)
        raise click.exceptions.Exit(SERVER_ERROR)

    options = [
        click.option("--json", "as_json", is_flag=True, help="Print the server's answer as JSON."),
        click.option(
            "--timeout", type=float, help="Seconds to wait for an answer (default 30; deploy 900)."
        ),
        click.option(
            "--token", envvar=TOKEN_VARIABLE, show_envvar=True, help="A bearer token, if needed."
        ),
        click.option(
            "--url",
            envvar=URL_VARIABLE,
            default=DEFAULT_URL,
            show_default=True,
            show_envvar=True,
            help="The server's base URL.",
        ),
    ]
    for option in options:
        run = option(run)
    return run  # type: ignore[return-value]


def _report(error: ForestFlowError) -> None:
    """The server's error on standard error: its name, status, message and field."""
    name = error.context.get("wireName", error.wire_name)
    status = error.context.get("StatusCode", int(error.status))
    click.echo(f"forestflow: {name} ({status}): {error.describe()}", err=True)
    if error.field:
        click.echo(f"field: {error.field}", err=True)


@contextmanager
def connect(url: str, token: str | None, timeout: float | None) -> Iterator[Client]:
    """A client of the server the options name."""
    options: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
    with Client(url, token or "", **options) as client:
        yield client


def _emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2))


def _acknowledge(answer: Any, as_json: bool, done: str) -> None:
    """The server's answer as JSON for scripts, else one line saying what was `done`."""
    if as_json:
        _emit_json(answer)
    else:
        click.echo(done)


def _lines(value: Any) -> None:
    """JSON Lines: one compact object per line (what `jq` and log tools read)."""
    for item in value:
        click.echo(json.dumps(item, separators=(",", ":")))


def register(main: click.Group) -> None:
    """Add the server commands to the `forestflow` command."""
    for command in (contracts, deploy, servables, stats, score, tail):
        main.add_command(command)


# --- contracts ---------------------------------------------------------------------------


@click.group()
def contracts() -> None:
    """Contracts: list, create, update, delete."""


@contracts.command("list")
@server_command
def contracts_list(*, url: str, token: str | None, timeout: float | None, as_json: bool) -> None:
    """Every contract with its router and expiration policy."""
    with connect(url, token, timeout) as client:
        call = calls.contracts()
        answer = client.send(call)
        if as_json:
            _emit_json(answer)
            return
        rows = []
        for contract in call.parse(answer):
            settings = client.contract_settings(contract)
            rows.append(
                [
                    str(contract),
                    tables.policy(settings.router),
                    tables.policy(settings.expiration_policy),
                ]
            )
    click.echo(tables.table(["CONTRACT", "ROUTER", "EXPIRATION"], rows))


def _contract_options(command: F) -> F:
    options = [
        click.option("--settings", type=POLICY, help="Whole ContractSettings JSON (or @file)."),
        click.option("--keep", type=click.IntRange(min=1), help="KeepLatest: servables to keep."),
        click.option("--expiration", type=POLICY, help="Expiration policy: JSON or name."),
        click.option(
            "--router",
            type=POLICY,
            help="Router: JSON, or a name such as FairPhaseInPctBasedRouter.",
        ),
    ]
    for option in options:
        command = option(command)
    return command


def _contract_changes(
    settings: Any, router: Any, expiration: Any, keep: int | None
) -> dict[str, Any]:
    changes: dict[str, Any] = dict(settings or {})
    if router is not None:
        changes["router"] = router
    if expiration is not None:
        changes["expirationPolicy"] = expiration
    if keep is not None:
        changes["expirationPolicy"] = {"KeepLatest": {"servablesToKeep": keep}}
    return changes


@contracts.command("create")
@click.argument("contract", type=CONTRACT)
@_contract_options
@server_command
def contracts_create(
    *,
    contract: Contract,
    router: Any,
    expiration: Any,
    keep: int | None,
    settings: Any,
    url: str,
    token: str | None,
    timeout: float | None,
    as_json: bool,
) -> None:
    """Create CONTRACT (org/project/n); what is not given takes the server's default
    (KeepLatest 2, LatestPhaseInPctBasedRouter)."""
    with connect(url, token, timeout) as client:
        changes = _contract_changes(settings, router, expiration, keep)
        answer = client.send(calls.create_contract(contract, changes))
    _acknowledge(answer, as_json, f"created contract {contract}")


@contracts.command("update")
@click.argument("contract", type=CONTRACT)
@_contract_options
@server_command
def contracts_update(
    *,
    contract: Contract,
    router: Any,
    expiration: Any,
    keep: int | None,
    settings: Any,
    url: str,
    token: str | None,
    timeout: float | None,
    as_json: bool,
) -> None:
    """Change what the options name of CONTRACT's settings; the rest keeps its value."""
    changes = _contract_changes(settings, router, expiration, keep)
    if not changes:
        raise click.UsageError("name something to change: --router, --expiration, --keep")
    with connect(url, token, timeout) as client:
        answer = client.send(calls.update_contract(contract, changes))
    _acknowledge(answer, as_json, f"updated contract {contract}")


@contracts.command("delete")
@click.argument("contract", type=CONTRACT)
@server_command
def contracts_delete(
    *, contract: Contract, url: str, token: str | None, timeout: float | None, as_json: bool
) -> None:
    """Delete CONTRACT (it must have no servables left)."""
    with connect(url, token, timeout) as client:
        answer = client.send(calls.delete_contract(contract))
    _acknowledge(answer, as_json, f"deleted contract {contract}")


# --- deploy ------------------------------------------------------------------------------


def _serve_request(source: str | None, options: Mapping[str, Any]) -> ServeRequest | dict[str, Any]:
    """The serve request the `deploy` options describe."""
    if options["request"] is not None:
        try:
            body = json.loads(Path(options["request"]).read_text())
        except ValueError as error:
            raise click.BadParameter(f"not JSON: {error}", param_hint="--request") from None
        return body if source is None else {**body, "path": artifact_location(source)}
    if source is None:
        raise click.UsageError("give the SOURCE to deploy, or a whole --request")
    policy = dict(options["policy"] or {})
    if options["shadow"]:
        policy["validityPolicy"] = [{"NeverValid": {}}]
    logging = dict(options["logging"] or {})
    if options["key_features"]:
        logging["keyFeatures"] = options["key_features"].split(",")
    servable_settings = {
        name: value
        for name, value in (("policySettings", policy), ("loggingSettings", logging))
        if value
    }
    common: dict[str, Any] = {
        "artifact_path": options["artifact_path"],
        "servable_settings": servable_settings or None,
        "contract_settings": options["contract_settings"],
    }
    flavor = options["flavor"]
    if flavor is None:
        return MLFlowServeRequest(source, **common)
    ((name, parameters),) = flavor.items()
    parameters = dict(parameters)
    if options["model_path"]:
        parameters["modelPath"] = options["model_path"]
    if options["feature_names"]:
        parameters["featureNames"] = options["feature_names"].split(",")
    return BasicServeRequest(source, {name: parameters}, **common)


@click.command()
@click.argument("source", required=False)
@click.option("--servable", type=SERVABLE, required=True, help="org/project/n/release.")
@click.option(
    "--flavor",
    type=POLICY,
    help="ONNX, Sklearn, XGBoost, … or the flavor's JSON; "
    "none: an MLflow model (its MLmodel names it).",
)
@click.option("--model-path", help="The model file, relative to the artifact (modelPath).")
@click.option("--feature-names", help="The model's inputs in order, comma-separated.")
@click.option("--artifact-path", help="A sub-directory of the source to deploy.")
@click.option("--policy", type=POLICY, help="PolicySettings JSON (validityPolicy, phaseInPolicy).")
@click.option("--logging", type=POLICY, help="LoggingSettings JSON (logLevel, keyFeatures, …).")
@click.option("--key-features", help="Prediction-log key features, comma-separated.")
@click.option("--shadow", is_flag=True, help="NeverValid: shadow traffic only, never serve.")
@click.option("--contract-settings", type=POLICY, help="Settings if this creates the contract.")
@click.option(
    "--request",
    type=click.Path(exists=True, dir_okay=False),
    help="A whole serve request body (JSON file); SOURCE, if given, is its path.",
)
@server_command
def deploy(
    *,
    source: str | None,
    servable: FQRV,
    url: str,
    token: str | None,
    timeout: float | None,
    as_json: bool,
    **options: Any,
) -> None:
    """Deploy a servable from a directory or URI.

    SOURCE is a local directory or file (read by the server: same machine or shared
    storage), or a file://, http(s)://, s3://, Git or models:/ location. The command waits
    until the server has fetched and loaded the model; on a terminal, a spinner shows the
    time so far."""
    call = calls.deploy(_serve_request(source, options), servable)
    progress = Spinner(sys.stderr, f"deploying {servable}")
    with Client(url, token or "", deploy_timeout=timeout or 900.0) as client, progress:
        answer = client.send(call)
    deployed = call.parse(answer)
    if as_json:
        _emit_json(answer)
        return
    click.echo(f"deployed {deployed.fqrv} in {progress.elapsed_s:.1f} s")
    for warning in deployed.warnings:
        click.echo(f"warning: {warning}", err=True)


# --- servables ---------------------------------------------------------------------------


@click.group()
def servables() -> None:
    """Servables: list, settings (show or change), delete."""


@servables.command("list")
@click.argument("contract", type=CONTRACT)
@server_command
def servables_list(
    *, contract: Contract, url: str, token: str | None, timeout: float | None, as_json: bool
) -> None:
    """CONTRACT's servables in deployment order, with their state and policies."""
    with connect(url, token, timeout) as client:
        call = calls.releases(contract)
        answer = client.send(call)
        if as_json:
            _emit_json(answer)
            return
        releases: list[Release] = call.parse(answer)
        settings = {s.fqrv: s for s in client.servables_settings(contract)}
    rows = [_servable_row(release, settings.get(release.fqrv)) for release in releases]
    headers = ["RELEASE", "STATE", "VALIDITY", "PHASE-IN", "LOG LEVEL", "FAILURE"]
    click.echo(tables.table(headers, rows))


def _servable_row(release: Release, settings: ServableSettings | None) -> list[Any]:
    policy = settings.policy_settings if settings else {}
    logging = settings.logging_settings if settings else {}
    return [
        release.fqrv.release_version,
        release.state,
        tables.policies(policy.get("validityPolicy")),
        tables.policy(policy.get("phaseInPolicy")),
        logging.get("logLevel"),
        release.failure,
    ]


@servables.command("settings")
@click.argument("servable", type=SERVABLE)
@click.option("--policy", type=POLICY, help="Change these policy settings (JSON) first.")
@click.option("--logging", type=POLICY, help="Change these logging settings (JSON) first.")
@server_command
def servables_settings(
    *,
    servable: FQRV,
    policy: Any,
    logging: Any,
    url: str,
    token: str | None,
    timeout: float | None,
    as_json: bool,
) -> None:
    """SERVABLE's settings; with --policy or --logging, changed first (only the fields
    named change)."""
    with connect(url, token, timeout) as client:
        if policy is not None:
            client.update_policy(servable, policy)
        if logging is not None:
            client.update_logging(servable, logging)
        call = calls.servable_settings(servable)
        answer = client.send(call)
    if as_json:
        _emit_json(answer)
        return
    found: ServableSettings = call.parse(answer)
    log = found.logging_settings
    rows: list[tuple[str, Any]] = [
        ("servable", str(found.fqrv)),
        ("validity", tables.policies(found.policy_settings.get("validityPolicy"))),
        ("phase-in", tables.policy(found.policy_settings.get("phaseInPolicy"))),
        ("log level", log.get("logLevel")),
        ("key features", ", ".join(log.get("keyFeatures") or []) or None),
        ("key separator", log.get("keyFeaturesSeparator")),
        ("sample rate", log.get("sampleRate")),
        ("max batch size", found.batching_settings.get("maxBatchSize")),
    ]
    click.echo(tables.table(["SETTING", "VALUE"], [[k, tables.text(v)] for k, v in rows]))


@servables.command("delete")
@click.argument("servable", type=SERVABLE)
@server_command
def servables_delete(
    *, servable: FQRV, url: str, token: str | None, timeout: float | None, as_json: bool
) -> None:
    """Delete (unload) SERVABLE."""
    with connect(url, token, timeout) as client:
        answer = client.send(calls.delete_servable(servable))
    _acknowledge(answer, as_json, f"deleted servable {servable}")


# --- stats -------------------------------------------------------------------------------

STATS_HEADERS = [
    "RELEASE",
    "STATE",
    "VALID SINCE",
    "PHASE-IN %",
    "SCORED",
    "SHADOWED",
    "SHADOW DROPPED",
    "SHADOW FAILED",
    "METRICS",
]


def _stats_row(metrics: ServableMetrics) -> list[Any]:
    return [
        metrics.fqrv.release_version,
        metrics.state,
        tables.when(metrics.became_valid_at_ms),
        metrics.current_phase_in_pct,
        metrics.score_count,
        metrics.shade_count,
        metrics.shadow_dropped_count,
        metrics.shadow_failed_count,
        tables.metrics(metrics.performance_metrics),
    ]


@click.command()
@click.argument("contract", type=CONTRACT)
@click.option("--watch", type=click.FloatRange(min=0.1), help="Refresh every so many seconds.")
@click.option("--count", type=click.IntRange(min=1), help="With --watch: stop after N tables.")
@server_command
def stats(
    *,
    contract: Contract,
    watch: float | None,
    count: int | None,
    url: str,
    token: str | None,
    timeout: float | None,
    as_json: bool,
) -> None:
    """A contract's servables: phase-in, scored, shadowed.

    One row per servable of CONTRACT: its state, since when it is valid, its phase-in,
    the requests it scored and shadowed, shadow drops and failures, its metrics."""
    out = sys.stdout
    shown = 0
    with connect(url, token, timeout) as client:
        while True:
            call = calls.stats(contract)
            answer = client.send(call)
            if watch is not None and out.isatty():
                click.echo("\033[H\033[2J", nl=False)  # a refresh in place
            if as_json:
                click.echo(
                    json.dumps(answer, separators=(",", ":"))
                    if watch
                    else json.dumps(answer, indent=2)
                )
            else:
                rows = [_stats_row(m) for m in call.parse(answer)]
                if watch is not None:
                    click.echo(f"{contract} at {tables.when(int(time.time() * 1000))}")
                click.echo(tables.table(STATS_HEADERS, rows))
            shown += 1
            if watch is None or (count is not None and shown >= count):
                return
            time.sleep(watch)
            if not as_json and not out.isatty():
                click.echo()


# --- score -------------------------------------------------------------------------------


def _input_features(client: Client, contract: Contract, release: str | None) -> list[Feature]:
    """The inputs of the model that would answer (a loaded servable's), for typing."""
    try:
        if release is not None:
            return client.metadata(contract.release(release)).features
        found = client.contract_metadata(contract)
    except (UnknownContract, UnknownServable):
        return []  # scoring says what is wrong
    return found[-1].features if found else []


@click.command()
@click.argument("contract", type=CONTRACT)
@click.argument("source", type=click.File("r"), default="-")
@click.option("--release", help="Score this release directly (bypassing the router).")
@click.option(
    "--format",
    "kind",
    type=click.Choice(["csv", "json"]),
    help="The input's format (default: by the file's name, else its content).",
)
@click.option(
    "--config",
    "configs",
    multiple=True,
    metavar="KEY=VALUE",
    help="A request config (keys of the prediction log), repeatable.",
)
@server_command
def score(
    *,
    contract: Contract,
    source: TextIO,
    release: str | None,
    kind: str | None,
    configs: tuple[str, ...],
    url: str,
    token: str | None,
    timeout: float | None,
    as_json: bool,
) -> None:
    """Score rows from a CSV or JSON file.

    SOURCE is a CSV or JSON file; `-` or none: standard input. A CSV's header names the
    features; its values take the types of the model's inputs. JSON is a list of row
    objects, or a whole score request."""
    name = getattr(source, "name", "")
    kind = kind or ("csv" if name.endswith(".csv") else "json" if name.endswith(".json") else None)
    config = dict(_key_value(item) for item in configs)
    try:
        given = read_input(source.read(), kind)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="SOURCE") from None
    with connect(url, token, timeout) as client:
        body = given.body
        if body is None:
            rows, schema = typed_rows(given, _input_features(client, contract, release))
            body = score_body(rows, schema=schema, configs=config)
        elif config:
            body = {**body, "configs": {**body.get("configs", {}), **config}}
        target = contract.release(release) if release is not None else contract
        call = calls.score(target, body)
        answer = client.send(call)
    if as_json:
        _emit_json(answer)
        return
    prediction: Prediction = call.parse(answer)
    click.echo(f"scored by {prediction.servable_fqrv}", err=True)
    rows_out = [[i, *row.values()] for i, row in enumerate(prediction.rows())]
    click.echo(tables.table(["ROW", *prediction.columns], rows_out))


def _key_value(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--config")
    return key, value


# --- tail --------------------------------------------------------------------------------


@click.command()
@click.option("--contract", type=CONTRACT, help="Only this contract's events (org/project/n).")
@click.option(
    "--servable", help="Only this servable's: org/project/n/release, or a release of --contract."
)
@click.option(
    "--last",
    type=click.IntRange(0, 1000),
    default=0,
    show_default=True,
    help="Begin with this many of the latest events the server holds.",
)
@click.option("--wait", type=click.FloatRange(1, 3600), default=60.0, hidden=True)
@server_command
def tail(
    *,
    contract: Contract | None,
    servable: str | None,
    last: int,
    wait: float,
    url: str,
    token: str | None,
    timeout: float | None,
    as_json: bool,
) -> None:
    """Follow prediction events as they happen.

    One line per event until Ctrl-C (or SIGTERM); --json prints each as its JSON line
    (the prediction-log record with its sequence number)."""
    target = _tail_servable(contract, servable)
    # SIGTERM ends the command as Ctrl-C does: quietly, with status 0
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        with connect(url, token, timeout) as client:
            page = client.events_page(contract, target, last=last)
            for event in page.events:
                _print_event(event, as_json)
            what = target or contract or "every servable"
            click.echo(f"following prediction events of {what} (Ctrl-C stops)", err=True)
            followed = client.follow_events(contract, target, after=page.resume_after, wait=wait)
            for item in followed:
                _print_event(item, as_json)
    except KeyboardInterrupt:
        return


def _tail_servable(contract: Contract | None, servable: str | None) -> FQRV | None:
    if servable is None:
        return None
    try:
        if "/" not in servable and "." not in servable and contract is not None:
            return contract.release(servable)
        return FQRV.parse(servable)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--servable") from None


def _print_event(item: Any, as_json: bool) -> None:
    if isinstance(item, EventsMissed):
        if as_json:
            _lines([{"PredictionEventsMissed": {"count": item.count}}])
        else:
            click.echo(f"… {item.count} events missed (this reader fell behind)", err=True)
        return
    if as_json:
        _lines([{"PredictionEvent": item.record}])
    else:
        click.echo(tables.event_line(item))
