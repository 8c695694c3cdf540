"""Registries: stages and data sources are named in YAML by a short key or an import path.

``register_stage("train")`` makes ``kind: train`` work; ``kind: my_pkg.stages:MyAudit`` imports the
class directly, so user packages need no registration at all.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from typing import Any, TypeVar

from closedloop.core.errors import ConfigError

T = TypeVar("T")


class Registry:
    """A name -> class map that also resolves ``module:Class`` import paths."""

    def __init__(self, what: str, builtin_modules: tuple[str, ...] = ()) -> None:
        self.what = what
        self._items: dict[str, type] = {}
        self._builtin_modules = builtin_modules
        self._builtins_loaded = False

    def register(self, key: str) -> Callable[[type[T]], type[T]]:
        def deco(cls: type[T]) -> type[T]:
            existing = self._items.get(key)
            if existing is not None and existing.__qualname__ != cls.__qualname__:
                raise ValueError(f"{self.what} key {key!r} is already registered to {existing.__qualname__}")
            self._items[key] = cls
            cls.key = key  # type: ignore[attr-defined]
            return cls

        return deco

    def _load_builtins(self) -> None:
        if not self._builtins_loaded:
            self._builtins_loaded = True
            for mod in self._builtin_modules:
                importlib.import_module(mod)

    def names(self) -> list[str]:
        self._load_builtins()
        return sorted(self._items)

    def items(self, *, sort: bool = True) -> dict[str, type]:
        """Name -> class, sorted by name, or in registration order with ``sort=False``."""
        self._load_builtins()
        return dict(sorted(self._items.items())) if sort else dict(self._items)

    def resolve(self, name: str, *, where: str = "") -> Any:
        """Return the class for a registry key or an import path ``module:Class``."""
        self._load_builtins()
        if name in self._items:
            return self._items[name]
        prefix = f"{where}: " if where else ""
        if ":" in name or "." in name:
            module_name, _, attr = name.partition(":") if ":" in name else name.rpartition(".")
            try:
                module = importlib.import_module(module_name)
            except ImportError as exc:
                raise ConfigError(
                    f"{prefix}cannot import module {module_name!r} for {self.what} {name!r}: {exc}"
                ) from None
            try:
                return getattr(module, attr)
            except AttributeError:
                raise ConfigError(
                    f"{prefix}module {module_name!r} has no {self.what} class {attr!r}"
                ) from None
        hint = difflib.get_close_matches(name, self._items, n=1)
        did_you_mean = f" Did you mean {hint[0]!r}?" if hint else ""
        raise ConfigError(
            f"{prefix}unknown {self.what} {name!r}.{did_you_mean} Known: {', '.join(sorted(self._items))}; "
            f"or give an import path like 'my_pkg.module:MyClass'."
        )


STAGES = Registry(
    "stage",
    builtin_modules=("closedloop.stages.all_stages",),
)
SOURCES = Registry("data source", builtin_modules=("closedloop.data.sources",))


def register_stage(key: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: name a :class:`~closedloop.core.stage.Stage` in YAML as ``kind: <key>``."""
    return STAGES.register(key)


def register_source(key: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: name a data source in YAML as ``data: {source: <key>}``."""
    return SOURCES.register(key)
