"""What a client sends: serve requests, score bodies built from rows, artifact locations."""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forestflow.client._names import FQRV

JSON = dict[str, Any]
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_SCP_LIKE = re.compile(r"[^/@]+@[^/:]+:")  # git@host:org/project.git
_ORDER = ("Bool", "Int64", "Float64", "String", "Bytes")


def artifact_location(path: str | os.PathLike[str]) -> str:
    """A `path` as the server reads it: a URI as it is; a local path made absolute (the
    server resolves a relative one against its own working directory, not the caller's)."""
    if isinstance(path, os.PathLike):
        return str(Path(path).expanduser().resolve())
    if _SCHEME.match(path) or _SCP_LIKE.match(path) or os.path.isabs(path):
        return path
    return str(Path(path).expanduser().resolve())


def _common(request: BasicServeRequest | MLFlowServeRequest) -> JSON:
    """The fields both serve requests have, as the server reads them."""
    body: JSON = {"path": artifact_location(request.path)}
    if request.fqrv is not None:
        body["fqrv"] = FQRV.parse(request.fqrv).to_json()
    if request.artifact_path is not None:
        body["artifactPath"] = request.artifact_path
    if request.servable_settings is not None:
        body["servableSettings"] = dict(request.servable_settings)
    if request.contract_settings is not None:
        body["contractSettings"] = dict(request.contract_settings)
    if request.tags:
        body["tags"] = dict(request.tags)
    return body


@dataclass(frozen=True, slots=True)
class BasicServeRequest:
    """Deploy the artifact at `path` with an explicit flavor (`{"ONNX": {"modelPath": …}}`).

    `path` is any location the server supports (file, HTTP(S), S3, Git, `models:/`) or a
    local path, which the server reads itself: same machine or a shared file system.
    """

    path: str | os.PathLike[str]
    flavor: Mapping[str, Any]
    fqrv: FQRV | str | None = None
    artifact_path: str | None = None
    servable_settings: Mapping[str, Any] | None = None
    """`{"policySettings": …, "loggingSettings": …, "batchingSettings": …}`; left out, the
    server's defaults (immediately valid, full logging)."""
    contract_settings: Mapping[str, Any] | None = None
    """Applied only when this deploy creates the contract."""
    tags: Mapping[str, str] | None = None

    def to_json(self) -> JSON:
        """The request body (a body that names a flavor is a BasicServeRequest)."""
        return {**_common(self), "flavor": dict(self.flavor)}


@dataclass(frozen=True, slots=True)
class MLFlowServeRequest:
    """Deploy an MLflow model: `path` holds an `MLmodel` file; the server picks the flavor."""

    path: str | os.PathLike[str]
    fqrv: FQRV | str | None = None
    artifact_path: str | None = None
    servable_settings: Mapping[str, Any] | None = None
    contract_settings: Mapping[str, Any] | None = None
    tags: Mapping[str, str] | None = None

    def to_json(self) -> JSON:
        """The request body (a body without a flavor is an MLFlowServeRequest)."""
        return _common(self)


ServeRequest = BasicServeRequest | MLFlowServeRequest


def _type_of(values: list[Any]) -> str:
    """The tensor type a column's values fit: the widest of its non-missing values."""
    kinds = set()
    for value in values:
        if value is None:
            continue
        if isinstance(value, bool):
            kinds.add("Bool")
        elif isinstance(value, int):
            kinds.add("Int64")
        elif isinstance(value, float):
            kinds.add("Float64")
        elif isinstance(value, bytes | bytearray):
            kinds.add("Bytes")
        else:
            kinds.add("String")
    if not kinds:
        return "Float64"  # every value missing: NaN is missing for float inputs
    if kinds <= {"Int64", "Float64"}:
        return "Float64" if "Float64" in kinds else "Int64"
    if len(kinds) > 1:
        raise ValueError(f"a column mixes value types {sorted(kinds)}; give a schema")
    return kinds.pop()


def infer_schema(rows: Sequence[Mapping[str, Any]]) -> list[JSON]:
    """A score request's `schema` for `rows`: features grouped by the type of their values,
    in the order the first row names them."""
    names: list[str] = []
    for row in rows:
        names += [name for name in row if name not in names]
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(_type_of([row.get(name) for row in rows]), []).append(name)
    return [{"type": kind, "fields": fields} for kind, fields in groups.items()]


def _cell(kind: str, value: Any) -> Any:
    if kind == "Bytes" and isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    return value


def score_body(
    rows: Sequence[Mapping[str, Any]] | Sequence[Sequence[Any]],
    *,
    features: Sequence[str] | None = None,
    schema: Sequence[Mapping[str, Any]] | None = None,
    configs: Mapping[str, str] | None = None,
) -> JSON:
    """A BASIC score request for `rows`: each a `{feature: value}` mapping, or a list of
    values named by `features` (a CSV's header). The tensor types come from `schema` when
    given (`[{"type": "Float32", "fields": [...]}]`), else from the values; a missing
    value is `None`."""
    if not rows:
        raise ValueError("no rows to score")
    named = [_named(row, features) for row in rows]
    entries = [dict(e) for e in schema] if schema is not None else infer_schema(named)
    datum = [
        {
            "tensors": [
                {e["type"]: {"data": [_cell(e["type"], row.get(f)) for f in e["fields"]]}}
                for e in entries
            ]
        }
        for row in named
    ]
    body: JSON = {"schema": entries, "datum": datum}
    if configs:
        body["configs"] = {str(k): str(v) for k, v in configs.items()}
    return body


def _named(row: Mapping[str, Any] | Sequence[Any], features: Sequence[str] | None) -> JSON:
    if isinstance(row, Mapping):
        return dict(row)
    if features is None:
        raise ValueError("rows given as lists need `features`: the name of each value")
    if len(row) != len(features):
        raise ValueError(f"a row has {len(row)} values for {len(features)} features")
    return dict(zip(features, row, strict=True))
