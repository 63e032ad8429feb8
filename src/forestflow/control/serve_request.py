"""Serve requests (SPEC §2.1): what a client sends to deploy a model version."""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from forestflow.artifacts.base import StorageOptions, fetcher_for
from forestflow.domain.codec import wire
from forestflow.domain.fqrv import FQRV
from forestflow.domain.registry import Registry
from forestflow.domain.settings import ContractSettings, ServableSettings
from forestflow.flavors.base import Flavor


class ServeRequest(ABC):
    """A request to deploy one servable: where its artifact is, and how to serve it."""

    __slots__ = ()
    registry: ClassVar[Registry[ServeRequest]]
    wire_name: ClassVar[str]

    path: str
    fqrv: FQRV | None
    artifact_path: str | None
    servable_settings: ServableSettings
    contract_settings: ContractSettings | None
    tags: Mapping[str, str]

    @abstractmethod
    def resolve_flavor(self, directory: Path) -> Flavor:
        """The flavor to load the fetched artifact in `directory` with."""

    def artifact_location(self, storage: StorageOptions) -> str:
        """Where the artifact to fetch is: `path`."""
        return self.path

    def with_fqrv(self, fqrv: FQRV) -> ServeRequest:
        """The same request for `fqrv` (the path's FQRV wins over the body's)."""
        return dataclasses.replace(self, fqrv=fqrv)  # type: ignore[type-var]


ServeRequest.registry = Registry("serve request")


@ServeRequest.registry.register("BasicServeRequest")
@dataclass(frozen=True, slots=True)
class BasicServeRequest(ServeRequest):
    """Deploy the artifact at `path` (a directory or a file) with an explicit flavor.

    `contractSettings` apply only when the deploy creates the contract.
    """

    path: str
    flavor: Flavor
    fqrv: FQRV | None = None
    artifact_path: str | None = wire("artifactPath", default=None)
    servable_settings: ServableSettings = field(default_factory=ServableSettings)
    contract_settings: ContractSettings | None = None
    tags: Mapping[str, str] = field(default_factory=dict)

    def resolve_flavor(self, directory: Path) -> Flavor:
        """The flavor the request names."""
        return self.flavor


@ServeRequest.registry.register("MLFlowServeRequest")
@dataclass(frozen=True, slots=True)
class MLFlowServeRequest(ServeRequest):
    """Deploy an MLflow model: `path` holds an `MLmodel` file that names the flavors (or
    names that file itself)."""

    path: str
    fqrv: FQRV | None = None
    artifact_path: str | None = wire("artifactPath", default=None)
    servable_settings: ServableSettings = field(default_factory=ServableSettings)
    contract_settings: ContractSettings | None = None
    tags: Mapping[str, str] = field(default_factory=dict)

    def artifact_location(self, storage: StorageOptions) -> str:
        """`path`, or the directory of the `MLmodel` file `path` names (as the original
        ForestFlow's clients may send: `file:///models/m/MLmodel`, `s3://bucket/m/MLmodel`)."""
        from forestflow.flavors.mlflow_model import MLMODEL_FILE  # noqa: PLC0415

        fetcher = fetcher_for(self.path, storage)
        return fetcher.directory_of(self.path, MLMODEL_FILE) or self.path

    def resolve_flavor(self, directory: Path) -> Flavor:
        """The first flavor of the MLmodel this server supports (see docs/flavors.md)."""
        from forestflow.flavors.mlflow_model import flavor_from_mlmodel  # noqa: PLC0415

        flavor: Flavor = flavor_from_mlmodel(directory)
        return flavor
