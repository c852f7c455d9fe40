"""Registry: names for the components of one kind that job files can use."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection, Iterator
from typing import Any

from loom.config.schema import ConfigError, Parameter, did_you_mean, parameters_of

__all__ = ["Registry"]


class Registry:
    """Maps names to the classes or functions a job file builds by name.

    Args:
        kind: What the registry holds, for messages ("algorithm").
        entries: Initial ``name -> component`` pairs.
        skip: Arguments the job builder always passes itself (an optimizer's
            ``params``); a job file cannot set them.
        supplied: Arguments the builder fills from the dataset when a job file
            leaves them out (``num_classes``).

    Examples:
        >>> from loom.algorithms import LabelSmoothing
        >>> registry = Registry("algorithm", {"label_smoothing": LabelSmoothing})
        >>> registry.get("label_smoothing").__name__
        'LabelSmoothing'
        >>> registry.get("label_smothing")
        Traceback (most recent call last):
        loom.config.schema.ConfigError: unknown algorithm 'label_smothing' (did you mean 'label_smoothing'?); known: label_smoothing.

    Your own components register under a name of your choosing, from a module
    that ``loom train --import my_module`` imports before reading the job::

        from loom.config import MODELS

        @MODELS.register("my_net")
        class MyNet(torch.nn.Module): ...
    """  # noqa: E501

    def __init__(
        self,
        kind: str,
        entries: dict[str, Callable[..., Any]] | None = None,
        *,
        skip: Collection[str] = (),
        supplied: Collection[str] = (),
    ):
        self.kind = kind
        self.skip = frozenset(skip)
        self.supplied = frozenset(supplied)
        self._entries: dict[str, Callable[..., Any]] = {}
        for name, component in (entries or {}).items():
            self.register(name, component)

    def register(self, name: str, component: Callable[..., Any] | None = None) -> Any:
        """Adds ``component`` under ``name``; without a component, a decorator that does.

        Raises:
            ValueError: ``name`` is not a lowercase identifier, or is taken by
                another component.
            TypeError: A required argument of ``component`` has no plain-data type,
                so no job file could give it.
        """
        if component is None:
            return lambda decorated: self.register(name, decorated)
        if not isinstance(name, str) or not name.isidentifier() or name != name.lower():
            raise ValueError(f"{self.kind} name {name!r} must be a lowercase identifier.")
        if name in self._entries and self._entries[name] is not component:
            raise ValueError(f"{self.kind} name {name!r} is already registered.")
        parameters_of(component, skip=self.skip)  # fails now, not when a job names it
        self._entries[name] = component
        return component

    def get(self, name: str, path: str = "") -> Callable[..., Any]:
        """The component registered as ``name``; ``path`` locates the name in a job file.

        Raises:
            ConfigError: No such name; the message suggests the closest one.
        """
        if isinstance(name, str) and name in self._entries:
            return self._entries[name]
        hint = did_you_mean(name, self._entries)
        where = f"{path}: " if path else ""
        raise ConfigError(f"{where}unknown {self.kind} {name!r}{hint}; known: {', '.join(self)}.")

    def parameters(self, name: str) -> list[Parameter]:
        """The arguments a job file can give the component called ``name``."""
        return parameters_of(self.get(name), skip=self.skip)

    def summary(self, name: str) -> str:
        """The first line of the component's docstring."""
        doc = inspect.getdoc(self.get(name)) or ""
        return doc.split("\n\n")[0].replace("\n", " ")

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))
