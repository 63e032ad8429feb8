"""The `forestflow` commands docs/cli.md shows are ones the CLI takes, as written."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from forestflow.cli import main

CLI_DOC = Path(__file__).resolve().parents[3] / "docs" / "cli.md"
SERVER_COMMANDS = {"contracts", "deploy", "servables", "stats", "score", "tail"}


def documented_commands() -> list[list[str]]:
    """Each `forestflow …` command of the page's bash blocks, as its arguments."""
    text = CLI_DOC.read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.startswith("cat >") or line in ("EOF",) or "," in line.split(" ")[0]:
                continue  # the heredoc of rows.csv
            tokens = shlex.split(line, comments=True)
            segment: list[str] = []
            for token in [*tokens, "|"]:
                if token in ("|", "<", ">"):
                    if segment[:1] == ["forestflow"]:
                        commands.append(segment[1:])
                    segment = [] if token == "|" else ["<"]
                else:
                    segment.append(token)
    return commands


def parse(args: list[str]) -> click.Context:
    """Resolve the command and parse its options and arguments (nothing is sent)."""
    command: click.Command | None = main
    context = click.Context(main, info_name="forestflow")
    rest = list(args)
    while isinstance(command, click.Group):
        name = rest.pop(0)
        command = command.get_command(context, name)
        assert command is not None, name
        context = click.Context(command, info_name=name, parent=context)
    assert command is not None
    return command.make_context(context.info_name, rest, parent=context.parent)


def test_the_page_shows_every_server_command() -> None:
    assert {args[0] for args in documented_commands()} == SERVER_COMMANDS


@pytest.mark.parametrize("args", documented_commands(), ids=" ".join)
def test_each_documented_command_parses(
    args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the files the page makes or names
    for name in ("rows.csv", "rows.json", "serve-request.json"):
        (tmp_path / name).write_text("{}")

    with parse(args) as context:  # closing it closes the files it opened
        assert context.command.callback is not None
