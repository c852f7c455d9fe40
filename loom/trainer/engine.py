"""The engine: which plugin hooks run at each event, in what order, and how errors read."""

from __future__ import annotations

import difflib
import inspect
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from loom.trainer.errors import add_note
from loom.trainer.event import Event
from loom.trainer.plugin import Algorithm, Callback, Plugin

__all__ = ["Engine", "Hook", "HookTable", "fire"]

# (plugin, event name, bound hook): the owner and the event travel with the hook so
# an error can name them without any bookkeeping on the hot path.
Hook = tuple[Plugin, str, Callable[[Any], None]]

# Each event's depth in the loop, for the printed schedule.
_LOOP_DEPTH = {
    Event.INIT: 0,
    Event.FIT_START: 0,
    Event.EPOCH_START: 1,
    Event.BATCH_START: 2,
    Event.BEFORE_FORWARD: 3,
    Event.AFTER_FORWARD: 3,
    Event.BEFORE_LOSS: 3,
    Event.AFTER_LOSS: 3,
    Event.BEFORE_BACKWARD: 3,
    Event.AFTER_BACKWARD: 3,
    Event.BATCH_END: 2,
    Event.EPOCH_END: 1,
    Event.EVAL_START: 1,
    Event.EVAL_BATCH_START: 2,
    Event.EVAL_BEFORE_FORWARD: 3,
    Event.EVAL_AFTER_FORWARD: 3,
    Event.EVAL_BATCH_END: 2,
    Event.EVAL_END: 1,
    Event.FIT_END: 0,
}
_EVENT_NAMES = tuple(event.value for event in Event)
_PLUGIN_API = frozenset(name for name in dir(Plugin) if not name.startswith("_"))


class HookTable:
    """One attribute per event, named after it, holding the hooks to run there in order."""

    __slots__ = _EVENT_NAMES

    def __getitem__(self, event: Event) -> tuple[Hook, ...]:
        return getattr(self, event.value)


def fire(hooks: tuple[Hook, ...], state: Any) -> None:
    """Runs ``hooks`` on ``state``; an error keeps its type and gains a note naming the hook.

    The loop costs next to nothing when ``hooks`` is empty, which is why the
    Trainer calls this for every event without checking first.
    """
    for plugin, event_name, hook in hooks:
        try:
            hook(state)
        except Exception as error:
            add_note(error, f"raised by {_describe(plugin)} at event '{event_name}'")
            raise


class Engine:
    """Registers plugins and builds, once, the table of hooks to run at each event.

    Algorithms run before callbacks; at ``after_*`` and ``*_end`` events each
    group runs in reverse registration order.

    Args:
        algorithms: :class:`Algorithm` instances, in the order given by the user.
        callbacks: :class:`Callback` instances, in the order given by the user.

    Raises:
        TypeError: An entry is not of the kind its list holds.
        ValueError: The same plugin object is registered twice.

    Examples:
        >>> from loom.trainer import Callback, Engine, Event
        >>> class Announce(Callback):
        ...     def fit_start(self, state):
        ...         print("starting")
        >>> engine = Engine(algorithms=[], callbacks=[Announce()])
        >>> [type(plugin).__name__ for plugin, _, _ in engine.hooks[Event.FIT_START]]
        ['Announce']
    """

    def __init__(self, algorithms: Sequence[Algorithm] = (), callbacks: Sequence[Callback] = ()):
        self.algorithms = _checked_plugins(algorithms, Algorithm, "algorithms")
        self.callbacks = _checked_plugins(callbacks, Callback, "callbacks")
        _refuse_duplicates([*self.algorithms, *self.callbacks])
        for plugin in [*self.algorithms, *self.callbacks]:
            _warn_on_misspelled_hooks(plugin)
        self.hooks = HookTable()
        for event in Event:
            setattr(self.hooks, event.value, self._hooks_for(event))

    def run(self, event: Event, state: Any) -> None:
        """Runs every hook registered for ``event``."""
        fire(self.hooks[event], state)

    def schedule(self) -> str:
        """The loop with each event at its place and the plugins that run there, in order.

        Examples:
            >>> from loom.trainer import Algorithm, Engine
            >>> class Noop(Algorithm):
            ...     def before_loss(self, state):
            ...         pass
            >>> print(Engine(algorithms=[Noop()]).schedule().splitlines()[6])
                  before_loss          Noop
        """
        width = max(len(event.value) + 2 * depth for event, depth in _LOOP_DEPTH.items()) + 2
        lines = []
        for event, depth in _LOOP_DEPTH.items():
            names = ", ".join(type(plugin).__name__ for plugin, _, _ in self.hooks[event])
            label = "  " * depth + event.value
            lines.append(f"{label:<{width}}{names}".rstrip())
        return "\n".join(lines)

    def _hooks_for(self, event: Event) -> tuple[Hook, ...]:
        algorithms, callbacks = self.algorithms, self.callbacks
        if event.runs_in_reverse:
            algorithms, callbacks = algorithms[::-1], callbacks[::-1]
        hooks = []
        for plugin in [*algorithms, *callbacks]:
            hook = getattr(plugin, event.value, None)
            if hook is not None:
                if not callable(hook):
                    raise TypeError(
                        f"{_describe(plugin)}.{event.value} is {type(hook).__name__}, "
                        f"not a method; a hook is 'def {event.value}(self, state): ...'."
                    )
                hooks.append((plugin, event.value, hook))
        return tuple(hooks)


def _checked_plugins(plugins: Any, kind: type[Plugin], argument: str) -> list[Any]:
    # A list or tuple, not a set: the order plugins are given in is the order they run in.
    if isinstance(plugins, Plugin | str) or not isinstance(plugins, Sequence):
        raise TypeError(
            f"{argument} must be a list of {kind.__name__} instances (in the order they "
            f"should run), got {plugins!r}; wrap a single one in a list: {argument}=[...]."
        )
    checked = []
    for index, plugin in enumerate(plugins):
        if not isinstance(plugin, kind):
            other_kind, other = (
                (Callback, "callbacks") if kind is Algorithm else (Algorithm, "algorithms")
            )
            hint = ""
            if isinstance(plugin, other_kind):
                hint = f"; {type(plugin).__name__} is a {other_kind.__name__}, pass it in {other}="
            elif inspect.isclass(plugin) and issubclass(plugin, Plugin):
                hint = f"; pass an instance, {plugin.__name__}(...), not the class"
            raise TypeError(
                f"{argument}[{index}] must be an instance of loom.{kind.__name__}, "
                f"got {plugin!r}{hint}."
            )
        checked.append(plugin)
    return checked


def _refuse_duplicates(plugins: list[Plugin]) -> None:
    seen: set[int] = set()
    for plugin in plugins:
        if id(plugin) in seen:
            raise ValueError(
                f"{_describe(plugin)} is registered twice; each plugin object may "
                "appear once (build a second instance to run it twice)."
            )
        seen.add(id(plugin))


def _warn_on_misspelled_hooks(plugin: Plugin) -> None:
    """A method named almost like an event would silently never run: say so."""
    for name, _ in inspect.getmembers(type(plugin), inspect.isfunction):
        if name.startswith("_") or name in _EVENT_NAMES or name in _PLUGIN_API:
            continue
        close = difflib.get_close_matches(name, _EVENT_NAMES, n=1, cutoff=0.85)
        if close:
            warnings.warn(
                f"{type(plugin).__name__}.{name} is not an event hook and will never be "
                f"called by the Trainer; did you mean '{close[0]}'?",
                stacklevel=4,
            )


def _describe(plugin: Plugin) -> str:
    kind = "algorithm" if isinstance(plugin, Algorithm) else "callback"
    return f"{kind} {type(plugin).__name__}"
