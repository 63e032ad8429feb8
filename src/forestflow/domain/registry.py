"""`Registry[T]`: wire name → implementation class, one registry per polymorphic kind.

Built-ins register with the `register` class decorator; plugins can be declared lazily as
"module:Class" strings that are imported on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from forestflow.errors import UnknownName

T = TypeVar("T")


class DuplicateName(ValueError):
    """Two implementations were registered under the same wire name."""


class Registry(Generic[T]):
    """Maps wire names (e.g. "KeepLatest") to implementation classes of one kind."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._classes: dict[str, type[T]] = {}
        self._lazy: dict[str, str] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        """Class decorator registering the class under `name`; a duplicate name raises."""

        def decorate(cls: type[T]) -> type[T]:
            self._check_free(name)
            self._classes[name] = cls
            cls.wire_name = name  # type: ignore[attr-defined]
            return cls

        return decorate

    def register_lazy(self, name: str, target: str) -> None:
        """Declare `name` as implemented by "module:Class", imported on first lookup."""
        if self._lazy.get(name) == target:
            return
        self._check_free(name)
        self._lazy[name] = target

    def get(self, name: str, *, field: str | None = None) -> type[T]:
        """The class registered as `name` (exact, else case-insensitive); unknown names raise."""
        canonical = self.canonical_name(name)
        if canonical is None:
            raise UnknownName(self.kind, name, self.names(), field=field)
        if canonical not in self._classes:
            self._classes[canonical] = self._import(canonical, self._lazy[canonical])
        return self._classes[canonical]

    def canonical_name(self, name: str) -> str | None:
        """The registered spelling of `name`, matching case-insensitively; None when unknown."""
        if name in self._classes or name in self._lazy:
            return name
        lowered = name.lower()
        for known in self.names():
            if known.lower() == lowered:
                return known
        return None

    def names(self) -> list[str]:
        """Every registered wire name, eager and lazy."""
        return sorted({*self._classes, *self._lazy})

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.canonical_name(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def _check_free(self, name: str) -> None:
        if name in self._classes or name in self._lazy:
            raise DuplicateName(f"{self.kind} '{name}' is registered twice")

    def _import(self, name: str, target: str) -> type[T]:
        module_name, _, attribute = target.partition(":")
        module = importlib.import_module(module_name)
        cls: type[T] = getattr(module, attribute)
        cls.wire_name = name  # type: ignore[attr-defined]
        return cls
