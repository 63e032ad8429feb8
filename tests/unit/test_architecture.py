"""The layering of docs/architecture.md, checked on the source (STYLE rules 1 and 2)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "forestflow"

# What each layer may import from the package (besides itself and the leaf modules).
LEAVES = {"errors", "clock"}
ALLOWED = {
    "domain": set(),
    "store": {"domain"},
    "artifacts": {"domain"},
    "flavors": {"domain"},
    "predictionlog": {"domain"},
    "feedback": {"domain", "predictionlog"},
    "control": {"domain", "store", "artifacts", "flavors"},
    "serving": {"domain", "control", "flavors", "predictionlog"},
    "api": {"domain", "control", "serving", "feedback", "predictionlog"},
    # the Python client stands alone: it shares only the error tree with the server
    "client": set(),
}
DOMAIN_FORBIDDEN = {
    "fastapi",
    "starlette",
    "grpc",
    "pydantic",
    "time",
    "datetime",
    "os",
    "socket",
    "sqlite3",
    "httpx",
    "asyncio",
    "threading",
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _modules(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).rglob("*.py"))


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layers_import_only_the_layers_below(layer: str) -> None:
    allowed = ALLOWED[layer] | LEAVES | {layer}
    offending = []
    for module in _modules(layer):
        for name in _imports(module):
            parts = name.split(".")
            if parts[0] == "forestflow" and len(parts) > 1 and parts[1] not in allowed:
                offending.append(f"{module.relative_to(PACKAGE)} imports {name}")
    assert not offending, offending


def test_domain_does_no_io_and_knows_no_transport() -> None:
    offending = [
        f"{module.relative_to(PACKAGE)} imports {name}"
        for module in _modules("domain")
        for name in _imports(module)
        if name.split(".")[0] in DOMAIN_FORBIDDEN
    ]
    assert not offending, offending


def test_errors_is_a_leaf() -> None:
    assert not [n for n in _imports(PACKAGE / "errors.py") if n.startswith("forestflow")]


def test_every_layer_is_checked() -> None:
    layers = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert layers <= set(ALLOWED), layers - set(ALLOWED)


MODEL_AND_STORAGE_LIBRARIES = [
    "onnxruntime",
    "sklearn",
    "pandas",
    "h2o",
    "jpype",
    "xgboost",
    "lightgbm",
    "mlflow",
    "boto3",
    "botocore",
]


def _loaded_after(statement: str, modules: list[str]) -> str:
    code = f"import sys; {statement}; print([m for m in {modules!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_importing_forestflow_loads_no_server_or_model_library() -> None:
    heavy = ["fastapi", "starlette", "uvicorn", "grpc", *MODEL_AND_STORAGE_LIBRARIES]
    assert _loaded_after("import forestflow", heavy) == "[]"


def test_the_client_loads_nothing_of_the_server() -> None:
    server = ["fastapi", "starlette", "uvicorn", "grpc", "pydantic", "numpy"]
    assert _loaded_after("import forestflow.client", server + MODEL_AND_STORAGE_LIBRARIES) == "[]"


def test_the_server_imports_flavor_and_storage_libraries_only_on_first_use() -> None:
    statement = "import forestflow.app, forestflow.cli"
    assert _loaded_after(statement, MODEL_AND_STORAGE_LIBRARIES) == "[]"
