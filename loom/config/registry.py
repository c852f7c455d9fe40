"""Registries: the names YAML jobs use for loom's components."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Generic, TypeVar

from loom.algorithms import LabelSmoothing, OnlineLabelSmoothing

__all__ = ["ALGORITHMS", "Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to components of one kind (algorithms, callbacks, models, ...).

    Args:
        kind: What the registry holds, for error messages ("algorithm").
        entries: Initial ``name -> component`` pairs.

    Example:
        >>> registry = Registry("algorithm", {"label_smoothing": LabelSmoothing})
        >>> registry.get("label_smoothing").__name__
        'LabelSmoothing'
        >>> registry.get("label_smothing")
        Traceback (most recent call last):
        KeyError: "unknown algorithm 'label_smothing'; did you mean 'label_smoothing'? ..."
    """

    def __init__(self, kind: str, entries: dict[str, T] | None = None):
        self.kind = kind
        self._entries: dict[str, T] = {}
        for name, component in (entries or {}).items():
            self.register(name, component)

    def register(self, name: str, component: T) -> T:
        """Adds ``component`` under ``name``, refusing a name already taken."""
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"{self.kind} name {name!r} must be a lowercase identifier.")
        if name in self._entries and self._entries[name] is not component:
            raise ValueError(f"{self.kind} name {name!r} is already registered.")
        self._entries[name] = component
        return component

    def get(self, name: str) -> T:
        """The component registered as ``name``.

        Raises:
            KeyError: No such name; the message suggests the closest one.
        """
        if name in self._entries:
            return self._entries[name]
        close = difflib.get_close_matches(str(name), self._entries, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise KeyError(f"unknown {self.kind} {name!r}; {hint}Known: {', '.join(self)}.")

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))


ALGORITHMS: Registry = Registry(
    "algorithm",
    {"label_smoothing": LabelSmoothing, "online_label_smoothing": OnlineLabelSmoothing},
)
"""Every algorithm a YAML job can name: the name is the algorithm's folder in loom/algorithms."""
