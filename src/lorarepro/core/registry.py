"""The one registry helper: a named mapping from a config name to what implements it.

Families, data generators, generation metrics, figures and step strategies each keep one
`Registry`. As PEFT's `register_peft_method` does, registering rejects a duplicate or a name that
could not appear in a config key; looking up an unknown name says which names are known.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from importlib import import_module
from typing import Any

NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class UnknownName(KeyError, ValueError):
    """A name no entry is registered under; the message lists the known ones.

    A KeyError, so `in` and `.get` behave as for any mapping, and a ValueError, as every config
    error of this project."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0])


class Registry(Mapping):
    """Name -> entry, filled once at import time by `register`."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Any] = {}

    def register(self, name: str, entry: Any = None) -> Any:
        """Add `entry` under `name` and return it; without `entry`, a decorator that registers its target."""
        if entry is None:
            return lambda target: self.register(name, target)
        if not isinstance(name, str) or not NAME.match(name):
            raise ValueError(f"{self.kind} name {name!r}: letters, digits and '_' only, starting with a letter")
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def __getitem__(self, name: str) -> Any:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownName(f"unknown {self.kind} {name!r} (known: {', '.join(sorted(self._entries))})") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"


def call(entry: str | Callable, *args, **kwargs):
    """Call a registered callable, or a "module:function" entry (imported on first use)."""
    if isinstance(entry, str):  # a name keeps the registering module light (no torch to import)
        module, _, name = entry.partition(":")
        entry = getattr(import_module(module), name)
    return entry(*args, **kwargs)
