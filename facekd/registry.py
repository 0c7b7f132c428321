"""Name -> builder registries, so configs choose components by name.

Add a component by writing a module that decorates its builder with ``@REGISTRY.register("name")``
and adding a config file; no switch statement is edited.  A registry imports every module of its
package on first lookup, so new files are picked up automatically.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Callable, Generic, TypeVar
from facekd.errors import UnknownNameError

__all__ = ["Registry"]

T = TypeVar("T", bound=Callable[..., Any])


class Registry(Generic[T]):
    """A named collection of builders, populated by decorators in the modules of ``package``."""

    def __init__(self, kind: str, package: str | None = None) -> None:
        self.kind = kind
        self.package = package
        self._items: dict[str, T] = {}
        self._scanned = False

    def register(self, name: str) -> Callable[[T], T]:
        def deco(fn: T) -> T:
            if name in self._items and self._items[name] is not fn:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = fn
            return fn

        return deco

    def _scan(self) -> None:
        if self._scanned or self.package is None:
            return
        self._scanned = True
        pkg = importlib.import_module(self.package)
        for mod in pkgutil.iter_modules(pkg.__path__):
            importlib.import_module(f"{self.package}.{mod.name}")

    def names(self) -> list[str]:
        self._scan()
        return sorted(self._items)

    def get(self, name: str) -> T:
        self._scan()
        if name not in self._items:
            raise UnknownNameError(f"unknown {self.kind} '{name}'; known {self.kind}s: {', '.join(self.names())}")
        return self._items[name]

    def build(self, name: str, **kwargs: Any) -> Any:
        return self.get(name)(**kwargs)

    def __contains__(self, name: str) -> bool:
        self._scan()
        return name in self._items
