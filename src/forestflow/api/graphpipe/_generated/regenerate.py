"""Regenerate the Python classes of `graphpipe.fbs` beside this file.

Run `python -m forestflow.api.graphpipe._generated.regenerate` with `flatc` (the FlatBuffers
compiler) on the PATH — Debian's and Ubuntu's `flatbuffers-compiler` package; without root,
`apt-get download flatbuffers-compiler && dpkg-deb -x flatbuffers-compiler_*.deb root`
gives `root/usr/bin/flatc`; set `FLATC` to use another one. `graphpipe.fbs` is the schema
Oracle published (github.com/oracle/graphpipe, `graphpipe.fbs`), unchanged.

It runs `flatc --python`, then makes two changes to what it wrote: the classes move out of
the schema's namespace directory (`graphpipe/`) into this package, and their imports of
each other (`from graphpipe.Tensor import Tensor`, inside accessors) name this package
instead — a top-level `graphpipe` is the GraphPipe client's own package, not these classes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCHEMA = HERE / "graphpipe.fbs"
NAMESPACE = "graphpipe"
PACKAGE = "forestflow.api.graphpipe._generated"
_OWN_IMPORT = re.compile(rf"\bfrom {NAMESPACE}\.(\w+) import ")


def flatc() -> str:
    """The compiler to run: `$FLATC`, else `flatc` from the PATH."""
    return os.environ.get("FLATC", "flatc")


def header(compiler_version: str) -> str:
    """The first lines of every generated file: what made it and how to make it again."""
    return (
        f"# Generated from {SCHEMA.name} by `flatc --python` ({compiler_version}). Do not edit.\n"
        f"# Regenerate: python -m {PACKAGE}.regenerate\n"
        "# ruff: noqa\n"
        "# mypy: ignore-errors\n"
    )


def main() -> int:
    """Generate into a temporary directory, adjust, then replace the files here."""
    compiler_version = subprocess.run(  # noqa: S603 - the compiler the developer chose
        [flatc(), "--version"], check=True, capture_output=True, text=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        subprocess.run(  # noqa: S603 - as above
            [flatc(), "--python", "-o", str(out), str(SCHEMA)], check=True
        )
        made = sorted(p for p in (out / NAMESPACE).glob("*.py") if p.name != "__init__.py")
        if not made:
            print(f"flatc wrote no classes under {out / NAMESPACE}")  # noqa: T201
            return 1
        for stale in HERE.glob("[A-Z]*.py"):
            stale.unlink()
        for path in made:
            text = _OWN_IMPORT.sub(rf"from {PACKAGE}.\1 import ", path.read_text())
            (HERE / path.name).write_text(header(compiler_version) + text)
            print(f"wrote {HERE / path.name}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
