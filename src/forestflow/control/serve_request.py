"""Serve requests (SPEC §2.1): what a client sends to deploy a model version."""

from __future__ import annotations

from abc import ABC
from dataclasses import dataclass, field
from typing import ClassVar

from forestflow.domain.codec import wire
from forestflow.domain.fqrv import FQRV
from forestflow.domain.registry import Registry
from forestflow.domain.settings import ServableSettings
from forestflow.flavors.base import Flavor


class ServeRequest(ABC):
    """A request to deploy one servable."""

    __slots__ = ()
    registry: ClassVar[Registry[ServeRequest]]
    wire_name: ClassVar[str]


ServeRequest.registry = Registry("serve request")


@ServeRequest.registry.register("BasicServeRequest")
@dataclass(frozen=True, slots=True)
class BasicServeRequest(ServeRequest):
    """Deploy the artifact at `path` (a directory or a file) with an explicit flavor."""

    path: str
    flavor: Flavor
    fqrv: FQRV | None = None
    artifact_path: str | None = wire("artifactPath", default=None)
    servable_settings: ServableSettings = field(default_factory=ServableSettings)
