from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from forestflow.domain.registry import DuplicateName, Registry
from forestflow.errors import InvalidField, UnknownName


class Plugin:
    wire_name: ClassVar[str]


def make_registry() -> Registry[Plugin]:
    registry: Registry[Plugin] = Registry("widget")

    @registry.register("KeepLatest")
    class Keep(Plugin):
        pass

    @registry.register("Fair")
    class Fair(Plugin):
        pass

    return registry


class TestRegister:
    def test_decorator_returns_the_class_and_names_it(self) -> None:
        registry: Registry[Plugin] = Registry("widget")

        class Thing(Plugin):
            pass

        assert registry.register("Thing")(Thing) is Thing
        assert Thing.wire_name == "Thing"
        assert registry.get("Thing") is Thing

    def test_duplicate_name_raises(self) -> None:
        registry = make_registry()
        with pytest.raises(DuplicateName, match="widget 'Fair' is registered twice"):
            registry.register("Fair")(type("Other", (Plugin,), {}))
        assert registry.get("Fair").__name__ == "Fair"  # the first one stays

    def test_duplicate_of_a_lazy_name_raises(self) -> None:
        registry = make_registry()
        registry.register_lazy("Lazy", "somewhere:Lazy")
        with pytest.raises(DuplicateName):
            registry.register("Lazy")(type("Lazy", (Plugin,), {}))
        with pytest.raises(DuplicateName):
            registry.register_lazy("Lazy", "elsewhere:Lazy")
        with pytest.raises(DuplicateName):
            registry.register_lazy("Fair", "elsewhere:Fair")

    def test_redeclaring_the_same_lazy_target_is_harmless(self) -> None:
        registry = make_registry()
        registry.register_lazy("Lazy", "somewhere:Lazy")
        registry.register_lazy("Lazy", "somewhere:Lazy")
        assert registry.names().count("Lazy") == 1


class TestLookup:
    def test_exact_name(self) -> None:
        registry = make_registry()
        assert registry.get("KeepLatest").__name__ == "Keep"

    @pytest.mark.parametrize("spelling", ["keeplatest", "KEEPLATEST", "keepLatest"])
    def test_case_insensitive(self, spelling: str) -> None:
        registry = make_registry()
        assert registry.get(spelling) is registry.get("KeepLatest")
        assert registry.canonical_name(spelling) == "KeepLatest"
        assert spelling in registry

    def test_unknown_name_lists_the_known_ones(self) -> None:
        registry = make_registry()
        with pytest.raises(UnknownName) as caught:
            registry.get("keep_latest", field="expirationPolicy")
        assert isinstance(caught.value, InvalidField)
        assert caught.value.message == "unknown widget 'keep_latest'; known: Fair, KeepLatest"
        assert caught.value.field == "expirationPolicy"

    def test_unknown_name_in_an_empty_registry(self) -> None:
        with pytest.raises(UnknownName, match=r"known: \(none\)"):
            Registry[Plugin]("widget").get("Anything")

    def test_canonical_name_of_an_unknown_name(self) -> None:
        assert make_registry().canonical_name("nope") is None

    def test_membership_and_iteration(self) -> None:
        registry = make_registry()
        registry.register_lazy("Lazy", "somewhere:Lazy")
        assert "Fair" in registry
        assert "Lazy" in registry
        assert "Unfair" not in registry
        assert 3 not in registry
        assert list(registry) == registry.names() == ["Fair", "KeepLatest", "Lazy"]


class TestLazy:
    MODULE = "forestflow_test_lazy_plugin"

    @pytest.fixture
    def plugin_module(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
        (tmp_path / f"{self.MODULE}.py").write_text(
            textwrap.dedent(
                """
                class Gradual:
                    pass
                """
            )
        )
        monkeypatch.syspath_prepend(str(tmp_path))
        yield self.MODULE
        sys.modules.pop(self.MODULE, None)

    def test_imported_on_first_lookup_only(self, plugin_module: str) -> None:
        registry = make_registry()
        registry.register_lazy("Gradual", f"{plugin_module}:Gradual")
        assert plugin_module not in sys.modules
        assert "Gradual" in registry
        assert plugin_module not in sys.modules
        cls = registry.get("gradual")
        assert plugin_module in sys.modules
        assert cls is sys.modules[plugin_module].Gradual
        assert cls.wire_name == "Gradual"
        assert registry.get("Gradual") is cls

    def test_missing_module_raises_on_lookup(self) -> None:
        registry = make_registry()
        registry.register_lazy("Ghost", "forestflow_no_such_module:Ghost")
        with pytest.raises(ModuleNotFoundError):
            registry.get("Ghost")

    def test_missing_attribute_raises_on_lookup(self, plugin_module: str) -> None:
        registry = make_registry()
        registry.register_lazy("Ghost", f"{plugin_module}:Ghost")
        with pytest.raises(AttributeError, match="Ghost"):
            registry.get("Ghost")
