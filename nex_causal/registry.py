"""Registries: the toolkit's extension points, each a named collection of definitions.

Modelled on mergekit's merge-method registry: a selector, ranking score, sparsifier,
intervention, figure or runner stage is one object registered under its name by the module
that defines it, declaring its own parameters; the code that uses it looks it up by name, so
adding one never means editing a chain of ifs. ``docs/architecture.md`` says where each
kind lives.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

from nex_causal.errors import NexError

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Definitions of one kind by name.

    ``providers`` names the modules that define the built-in ones; the first read imports
    them, so a registry is complete whatever was imported before, and its order does not
    depend on import order either: built-ins come in the order of their providers (then of
    their definitions), definitions from any other module after them, in registration order.
    """

    def __init__(self, kind: str, providers: tuple[str, ...] = ()):
        self.kind = kind
        self.providers = providers
        self._items: dict[str, T] = {}
        self._rank: dict[str, tuple[int, int]] = {}
        self._loaded = not providers

    def add(self, name: str, item: T) -> T:
        """Register ``item`` as ``name``; a name is registered once."""
        if name in self._items:
            raise NexError(f"{self.kind} {name!r} is registered twice: give the new one another name")
        self._items[name] = item
        self._rank[name] = (self._provider_rank(), len(self._rank))
        return item

    def _provider_rank(self) -> int:
        """The position in ``providers`` of the module registering now (``len(providers)`` for any other)."""
        frame = sys._getframe(1)
        while frame is not None:
            module = frame.f_globals.get("__name__", "")
            if module in self.providers:
                return self.providers.index(module)
            frame = frame.f_back
        return len(self.providers)

    def _load(self) -> dict[str, T]:
        """The definitions, after importing the providers (once), in the registry's order."""
        if not self._loaded:
            self._loaded = True
            for module in self.providers:
                importlib.import_module(module)
        return {name: self._items[name] for name in sorted(self._items, key=self._rank.__getitem__)}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of ``add``."""
        return lambda item: self.add(name, item)

    def __getitem__(self, name: str) -> T:
        items = self._load()
        if name not in items:
            raise NexError(f"unknown {self.kind} {name!r}: use one of {', '.join(items)}")
        return items[name]

    def __contains__(self, name: object) -> bool:
        return name in self._load()

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())

    def check(self, names) -> list[str]:
        """``names`` as a list after checking that each is registered (one error naming the unknown ones)."""
        names, items = list(names), self._load()
        unknown = [n for n in names if n not in items]
        if unknown:
            raise NexError(f"unknown {self.kind}(s) {', '.join(unknown)}: use any of {', '.join(items)}")
        return names


def lazy_exports(package: str, where: Mapping[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for a package that exports ``name`` from its submodule ``where[name]``,
    imported on first use: ``import nex_causal.models`` stays light until a name is read."""
    def getattr_(name: str) -> object:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{where[name]}"), name)

    return getattr_, lambda: sorted(where)
