"""Registries: the toolkit's extension points, each a named collection of definitions.

Modelled on mergekit's merge-method registry: a selector, ranking score, sparsifier,
intervention, figure or runner stage is one object registered under its name by the module
that defines it, declaring its own parameters; the code that uses it looks it up by name, so
adding one never means editing a chain of ifs. ``docs/architecture.md`` says where each
kind lives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

from nex_causal.errors import NexError

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Definitions of one kind by name, in the order they were registered."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> T:
        """Register ``item`` as ``name``; a name is registered once."""
        if name in self._items:
            raise NexError(f"{self.kind} {name!r} is registered twice: give the new one another name")
        self._items[name] = item
        return item

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of ``add``."""
        return lambda item: self.add(name, item)

    def __getitem__(self, name: str) -> T:
        if name not in self._items:
            raise NexError(f"unknown {self.kind} {name!r}: use one of {', '.join(self._items)}")
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def check(self, names) -> list[str]:
        """``names`` as a list after checking that each is registered (one error naming the unknown ones)."""
        names = list(names)
        unknown = [n for n in names if n not in self._items]
        if unknown:
            raise NexError(f"unknown {self.kind}(s) {', '.join(unknown)}: use any of {', '.join(self._items)}")
        return names
