"""The flavor plugin interface: load a model artifact, then predict on frames.

A `Flavor` is the parsed flavor part of a serve request (`{"ONNX": {"modelPath": ...}}`);
`Flavor.load(directory, policy)` turns an artifact directory into a `LoadedModel`, within
the operator's `LoadPolicy` (formats that run code when loaded are refused unless it
allows them). Built-in and third-party flavors are declared the same way, as entry points
of the group `forestflow.flavors` (`Name = "module:Class"`), and imported on first use.
"""

from __future__ import annotations

import importlib.metadata
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, cast

from forestflow.domain.codec import decode
from forestflow.domain.frame import Frame
from forestflow.domain.registry import Registry
from forestflow.domain.signature import ModelSignature
from forestflow.errors import CreateServableRequestInvalidError

ENTRY_POINT_GROUP = "forestflow.flavors"
_UNSAFE_SETTING = "security.allow_unsafe_formats (FORESTFLOW_SECURITY__ALLOW_UNSAFE_FORMATS=true)"


@dataclass(frozen=True, slots=True)
class LoadPolicy:
    """What the operator lets model artifacts do while they load (settings `security.*`).

    Built by the app from `SecuritySettings`; the client has no say in it. The default
    refuses every format that runs code when loaded.
    """

    allow_unsafe_formats: bool = False
    """Load formats that run code when loaded: pickle, joblib and cloudpickle files, and
    MLflow python_function models (their own Python code). Only for trusted artifacts."""

    skops_trusted_types: tuple[str, ...] = ()
    """Type names a skops file may hold beyond the types skops trusts itself."""

    def require_unsafe_formats(self, reason: str, *, field: str) -> None:
        """Refuse (422) unless unsafe formats are allowed; `reason` says what runs code.

        `reason` reads like "'model.pkl' is a pickle, and pickles run code when loaded".
        """
        if not self.allow_unsafe_formats:
            raise CreateServableRequestInvalidError(
                f"{reason}; the server refuses them unless the operator sets {_UNSAFE_SETTING}",
                field=field,
            )


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
    def load(self, directory: Path, policy: LoadPolicy) -> LoadedModel:
        """Load the model from a local artifact directory, as far as `policy` allows.

        A format that runs code when loaded must be refused, before anything of the
        artifact is read by such a loader, unless `policy.allow_unsafe_formats`
        (`LoadPolicy.require_unsafe_formats`). Raises `CreateServableRequestInvalidError`
        (or `FlavorUnavailable`) with a message saying what is wrong: missing file,
        corrupt model, unsupported inputs, a format the policy refuses.
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
