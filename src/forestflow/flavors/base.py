"""The flavor plugin interface: load a model artifact, then predict on frames.

A `Flavor` is the parsed flavor part of a serve request (`{"ONNX": {"modelPath": ...}}`);
`Flavor.load` turns an artifact directory into a `LoadedModel`. Built-in and third-party
flavors are declared the same way, as entry points of the group `forestflow.flavors`
(`Name = "module:Class"`), and imported on first use.
"""

from __future__ import annotations

import importlib.metadata
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, cast

from forestflow.domain.codec import decode
from forestflow.domain.frame import Frame
from forestflow.domain.registry import Registry
from forestflow.domain.signature import ModelSignature
from forestflow.errors import CreateServableRequestInvalidError

ENTRY_POINT_GROUP = "forestflow.flavors"


class LoadedModel(ABC):
    """A model in memory, ready to score. `predict` is called from worker threads."""

    signature: ModelSignature

    @abstractmethod
    def predict(self, frame: Frame) -> Frame:
        """Score a frame already conformed to `signature` (inputs in order, right types)."""

    def close(self) -> None:  # noqa: B027 - optional hook, most models need nothing
        """Release native resources; the model is not used afterwards."""


class Flavor(ABC):
    """A model format. Subclasses are frozen dataclasses whose fields are the wire fields."""

    registry: ClassVar[Registry[Flavor]]
    wire_name: ClassVar[str]

    @abstractmethod
    def load(self, directory: Path) -> LoadedModel:
        """Load the model from a local artifact directory.

        Raises `CreateServableRequestInvalidError` (or `FlavorUnavailable`) with a message
        saying what is wrong: missing file, corrupt model, unsupported inputs.
        """


Flavor.registry = Registry("flavor")


def register_entry_points(registry: Registry[Flavor] = Flavor.registry) -> None:
    """Declare every `forestflow.flavors` entry point in `registry` (lazily imported)."""
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        registry.register_lazy(entry_point.name, entry_point.value)


register_entry_points()


def parse_flavor(data: object, *, path: str = "flavor") -> Flavor:
    """The flavor described by JSON `data` (`{"ONNX": {...}}`, the `type` form, or a name)."""
    flavor: Flavor = decode(cast(Any, Flavor), data, path=path)
    return flavor


def resolve_inside(directory: Path, relative: str, *, field: str) -> Path:
    """`directory / relative`, refusing paths that leave the directory or do not exist."""
    root = directory.resolve()
    target = (root / relative).resolve()
    if target != root and root not in target.parents:
        raise CreateServableRequestInvalidError(
            f"{relative!r} points outside the model directory", field=field
        )
    if not target.exists():
        raise CreateServableRequestInvalidError(
            f"model file {relative!r} not found in the artifact", field=field
        )
    return target
