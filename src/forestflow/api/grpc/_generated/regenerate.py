"""Regenerate the Python classes of `grpc_predict_v2.proto` beside this file.

Run `python -m forestflow.api.grpc._generated.regenerate` (needs `pip install
'forestflow[grpc-tools]'`). It runs grpcio-tools' protoc, then makes one change to what it
wrote: the messages are registered in a descriptor pool of their own instead of protobuf's
default pool. Every implementation of the protocol (tritonclient, KServe, MLServer) defines
the same `inference.*` names; in the default pool a second copy in one process fails with
"duplicate symbol". The wire format does not depend on the pool.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE_ROOT = HERE.parents[3]  # the directory that holds the `forestflow` package
PROTO = HERE / "grpc_predict_v2.proto"
DEFAULT_POOL = "_descriptor_pool.Default().AddSerializedFile("
OWN_POOL = "_descriptor_pool.DescriptorPool().AddSerializedFile("


def header() -> str:
    """The first lines of every generated file: what made it and how to make it again."""
    return (
        f"# Generated from {PROTO.name} by grpcio-tools {version('grpcio-tools')} "
        f"(protobuf {version('protobuf')}). Do not edit.\n"
        "# Regenerate: python -m forestflow.api.grpc._generated.regenerate\n"
    )


def main() -> int:
    """Generate into a temporary directory, adjust, then replace the files here."""
    from grpc_tools import protoc  # noqa: PLC0415 - a dev-only dependency

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        relative = PROTO.relative_to(SOURCE_ROOT)
        code = protoc.main(
            [
                "protoc",
                f"-I{SOURCE_ROOT}",
                f"--python_out={out}",
                f"--pyi_out={out}",
                f"--grpc_python_out={out}",
                str(relative),
            ]
        )
        if code != 0:
            return int(code)
        made = out / relative.parent
        for path in sorted(made.glob("grpc_predict_v2_pb2*")):
            text = path.read_text()
            if path.name == "grpc_predict_v2_pb2.py":
                if DEFAULT_POOL not in text:
                    print(f"{path.name}: protoc no longer writes {DEFAULT_POOL!r}")  # noqa: T201
                    return 1
                text = text.replace(DEFAULT_POOL, OWN_POOL)
            (HERE / path.name).write_text(header() + text)
            print(f"wrote {HERE / path.name}")  # noqa: T201
        shutil.rmtree(made)
    return 0


if __name__ == "__main__":
    sys.exit(main())
