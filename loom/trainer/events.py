"""The events of the loop, the plugins that handle them, and the engine that runs them."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import warnings
from collections.abc import Callable, Sequence
from enum import Enum
from typing import Any

import torch

from loom.trainer.effects import CompositionError, Effect, Timeline, simulate
from loom.trainer.state import State

__all__ = [
    "Algorithm",
    "Artifact",
    "Callback",
    "Engine",
    "Event",
    "Hook",
    "HookTable",
    "Plugin",
    "add_note",
    "composition",
    "fire",
]


class Event(str, Enum):
    """Points in the training loop at which plugins run.

    Each value is the name of the hook method a plugin defines to run at that
    point: ``Event.BEFORE_LOSS.value == "before_loss"``, so a plugin that needs
    the targets before the loss is computed defines ``before_loss(self, state)``.

    The loop, with every event at its place (this is the one table of the order;
    a test pins the Trainer to it)::

        INIT                                  Trainer built, plugins registered;
                                              state.model not yet wrapped in DDP
        FIT_START
        for epoch in epochs:
            EPOCH_START                       state.timestamp.batch_in_epoch == 0
            for batch in train_dataloader:
                BATCH_START                   state.batch on the device
                for microbatch in batch (grad_accum of them, one by default):
                    BEFORE_FORWARD
                    outputs = model(inputs)   inputs read from state.batch now
                    AFTER_FORWARD             state.outputs set
                    BEFORE_LOSS
                    loss = loss_fn(outputs, targets)  targets read from state.batch now
                    AFTER_LOSS                state.loss set
                    BEFORE_BACKWARD
                    loss.backward()
                    AFTER_BACKWARD
                BEFORE_OPTIMIZER_STEP         the batch's gradients complete (fp16:
                                              scaled); state.recompute_gradients()
                                              may run the batch again (SAM)
                gradient clipping, optimizer step, scheduler step
                BATCH_END                     state.timestamp advanced
                evaluation when due in batches (EVAL_* below)
            EPOCH_END                         state.timestamp.epoch advanced,
                                              state.metrics["train/loss"] set
            evaluation when due in epochs:
                EVAL_START
                for batch in eval_dataloader:
                    EVAL_BATCH_START
                    EVAL_BEFORE_FORWARD
                    outputs = model(inputs)
                    EVAL_AFTER_FORWARD
                    EVAL_BATCH_END
                EVAL_END                      state.metrics["eval/..."] set; at
                                              eval_interval, a ReduceLROnPlateau
                                              already stepped on its monitor
        FIT_END

    Training stops after the ``BATCH_END`` at which ``max_duration`` is reached
    or a plugin called :meth:`State.request_stop`; ``EPOCH_END`` fires only for
    epochs that ran to the end. When training ends at a point that was not
    just evaluated, one last evaluation runs before ``FIT_END``.

    The order plugins run in at each event:

    * algorithms run before callbacks;
    * algorithms run in the order given, and in reverse at the events that close
      a pair (``after_X`` closes ``before_X``, ``X_end`` closes ``X_start``), so
      their changes unwind like a stack: the one that changed the batch first
      restores it last;
    * callbacks run in the order given at every event: they observe and restore
      nothing, so the order a reader sees is the list's. A callback that writes
      a State field another reads declares it (:attr:`Plugin.writes`,
      :attr:`Plugin.reads`), and the :class:`Engine` refuses a reader listed
      before its writer.

    Examples:
        >>> Event.BEFORE_LOSS.value
        'before_loss'
        >>> Event.AFTER_LOSS.closes_pair, Event.BEFORE_LOSS.closes_pair
        (True, False)
        >>> Event.AFTER_FORWARD.depth  # how deep in the loop it fires, as the table shows
        3
    """

    INIT = "init"
    FIT_START = "fit_start"
    EPOCH_START = "epoch_start"
    BATCH_START = "batch_start"
    BEFORE_FORWARD = "before_forward"
    AFTER_FORWARD = "after_forward"
    BEFORE_LOSS = "before_loss"
    AFTER_LOSS = "after_loss"
    BEFORE_BACKWARD = "before_backward"
    AFTER_BACKWARD = "after_backward"
    BEFORE_OPTIMIZER_STEP = "before_optimizer_step"
    BATCH_END = "batch_end"
    EPOCH_END = "epoch_end"
    EVAL_START = "eval_start"
    EVAL_BATCH_START = "eval_batch_start"
    EVAL_BEFORE_FORWARD = "eval_before_forward"
    EVAL_AFTER_FORWARD = "eval_after_forward"
    EVAL_BATCH_END = "eval_batch_end"
    EVAL_END = "eval_end"
    FIT_END = "fit_end"

    @property
    def closes_pair(self) -> bool:
        """Whether this event closes a pair (``after_X``, ``X_end``): algorithms run in
        reverse order here."""
        return "after_" in self.value or self.value.endswith("_end")

    @property
    def depth(self) -> int:
        """How deep in the loop's pseudocode the event fires: 0 for the run, 1 in an
        epoch, 2 in a batch (or an evaluation, which runs inside the epoch loop), 3 in
        a step of either."""
        name = self.value
        if name == "before_optimizer_step":  # once a batch, after all its microbatches
            return 2
        if name.startswith("eval_"):
            return 2 if name in ("eval_start", "eval_end") else 3
        if name.startswith(("before_", "after_")):
            return 3
        if name.startswith("batch_"):
            return 2
        return 1 if name.startswith("epoch_") else 0

    def __str__(self) -> str:
        return self.value


_EVENT_NAMES = tuple(event.value for event in Event)
_STATE_FIELDS = frozenset(
    field.name for field in dataclasses.fields(State) if not field.name.startswith("_")
)


@dataclasses.dataclass(frozen=True)
class Artifact:
    """A result a plugin offers a finished run: a tensor, and what its dimensions mean.

    A run directory keeps every plugin's artifacts and draws each 2-D one as a
    heatmap, with the class names on each dimension as long as the classes.

    Attributes:
        values: The tensor (copied to the CPU by whoever keeps it).
        title: What it is, e.g. ``"learned soft labels (online label smoothing)"``.
        axes: One label per dimension, e.g. ``("target class", "probability given to class")``.
    """

    values: torch.Tensor
    title: str
    axes: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.axes) != self.values.dim():
            raise ValueError(
                f"artifact {self.title!r} has {self.values.dim()} dimensions but "
                f"{len(self.axes)} axis labels {self.axes}; give one label per dimension."
            )


class Plugin:
    """Base of :class:`Algorithm` and :class:`Callback`.

    A plugin defines a method named after each event it handles (see
    :class:`Event`), taking the :class:`~loom.trainer.state.State`::

        def before_loss(self, state): ...

    Events it does not define cost nothing. State that must survive a
    checkpoint goes through :meth:`state_dict` and :meth:`load_state_dict`,
    as plain data: tensors, numbers, strings, and lists and dicts of them.
    """

    reads: tuple[str, ...] = ()
    """State fields this plugin reads that another plugin may write (e.g. ``"metrics"``).
    A class attribute, or an instance attribute where it depends on the arguments."""

    writes: tuple[str, ...] = ()
    """State fields this plugin writes for other plugins to read (e.g. ``"checkpoint_path"``)."""

    effects: tuple[Effect, ...] = ()
    """What an algorithm reads and changes, and at which events (see
    :mod:`loom.trainer.effects`), from which the Engine checks, before training, that
    the algorithms of a run can be combined in the order given. None by default: an
    algorithm that declares nothing is not checked."""

    def state_dict(self) -> dict[str, Any]:
        """The plugin's state to checkpoint, as plain data. Empty by default."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores what :meth:`state_dict` returned. Does nothing by default.

        Raise (``ValueError``, ``KeyError``, ...) when ``state`` does not fit this
        plugin: the Trainer then puts back every plugin it had already restored
        and refuses the checkpoint.
        """
        del state

    def artifacts(self) -> dict[str, Artifact]:
        """What the plugin learned that a finished run should keep, by file name
        (``{"soft_labels": Artifact(...)}``). None by default."""
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Algorithm(Plugin):
    """A training method: it may change the batch, outputs, loss or model, and restores
    at ``after_X`` what it changed at ``before_X`` (the order: :class:`Event`).

    Examples:
        >>> import torch
        >>> from loom.trainer import Algorithm
        >>> class ScaleLoss(Algorithm):
        ...     def __init__(self, factor: float):
        ...         self.factor = factor
        ...     def before_backward(self, state):
        ...         state.loss = state.loss * self.factor
    """

    sharding_refusal: str | None = None
    """Why this algorithm cannot train a model that ``strategy="fsdp"`` shards, in a
    sentence, or None (it can). The Trainer refuses the run with it, before anything
    is built (see :func:`loom.trainer.sharding.check_fits_sharding`)."""


class Callback(Plugin):
    """An observer: it reads the state to log, save or stop, and changes nothing else
    (the order: :class:`Event`).

    Examples:
        >>> from loom.trainer import Callback
        >>> class PrintEpoch(Callback):
        ...     def epoch_end(self, state):
        ...         print("finished epoch", state.timestamp.epoch)
    """


# (plugin, event name, bound hook): the owner and the event travel with the hook so
# an error can name them without any bookkeeping on the hot path.
Hook = tuple[Plugin, str, Callable[[Any], None]]


class HookTable:
    """One attribute per event, named after it, holding the hooks to run there in order."""

    __slots__ = _EVENT_NAMES

    def __getitem__(self, event: Event) -> tuple[Hook, ...]:
        return getattr(self, event.value)


def fire(hooks: tuple[Hook, ...], state: Any) -> None:
    """Runs ``hooks`` on ``state``: the one way an event is fired.

    An error keeps its type and gains a note naming the plugin and the event.
    An event nobody handles costs this one call on an empty tuple.

    Examples:
        >>> class Announce(Callback):
        ...     def fit_start(self, state):
        ...         print("starting")
        >>> fire(Engine(callbacks=[Announce()]).hooks.fit_start, state=None)
        starting
    """
    for plugin, event_name, hook in hooks:
        try:
            hook(state)
        except Exception as error:
            add_note(error, f"raised by {describe_plugin(plugin)} at event '{event_name}'")
            raise


def add_note(error: BaseException, note: str) -> None:
    """Attaches ``note`` to ``error`` (printed under its traceback), keeping its type.

    Examples:
        >>> error = ValueError("bad value")
        >>> add_note(error, "raised by algorithm Example at event 'before_loss'")
        >>> error.__notes__
        ["raised by algorithm Example at event 'before_loss'"]
    """
    if hasattr(error, "add_note"):
        error.add_note(note)
    else:  # Python 3.10: tracebacks do not print notes, but the attribute is standard.
        error.__notes__ = [*getattr(error, "__notes__", []), note]


def describe_plugin(plugin: Plugin) -> str:
    """``"algorithm Name"`` or ``"callback Name"``, as errors name a plugin."""
    kind = "algorithm" if isinstance(plugin, Algorithm) else "callback"
    return f"{kind} {type(plugin).__name__}"


class Engine:
    """Registers plugins and builds, once, the table of hooks to run at each event,
    in the order the :class:`Event` docstring states.

    Args:
        algorithms: :class:`Algorithm` instances, in the order given by the user.
        callbacks: :class:`Callback` instances, in the order given by the user.

    Raises:
        TypeError: An entry is not of the kind its list holds, or declares a
            State field that does not exist.
        ValueError: The same plugin object is registered twice, or a plugin reads
            a State field that a callback after it writes.
        CompositionError: The algorithms' declared effects cannot be combined in the
            order given (a ``ValueError``; see :func:`composition`).

    Examples:
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
        plugins = [*self.algorithms, *self.callbacks]
        _refuse_duplicates(plugins)
        for plugin in plugins:
            _warn_on_misspelled_hooks(plugin)
        _check_readers_follow_writers(self.algorithms, self.callbacks)
        self.composition_notes = composition(self.algorithms)
        self.hooks = HookTable()
        for event in Event:
            setattr(self.hooks, event.value, self._hooks_for(event))

    def schedule(self) -> str:
        """The loop with each event at its place and the plugins that run there, in
        order, then which plugins write and read which State fields.

        Examples:
            >>> class Noop(Algorithm):
            ...     def before_loss(self, state):
            ...         pass
            >>> print(Engine(algorithms=[Noop()]).schedule().splitlines()[6])
                  before_loss          Noop
        """
        width = max(len(event.value) + 2 * event.depth for event in Event) + 2
        lines = []
        for event in Event:
            names = ", ".join(type(plugin).__name__ for plugin, _, _ in self.hooks[event])
            label = "  " * event.depth + event.value
            lines.append(f"{label:<{width}}{names}".rstrip())
        lines += [
            "",
            "Algorithms run first, in the order given, and in reverse at after_* and *_end",
            "events; callbacks run in the order given at every event.",
        ]
        for field, (writers, readers) in _shared_fields([*self.algorithms, *self.callbacks]):
            lines.append(
                f"state.{field}: written by {', '.join(writers)}; read by {', '.join(readers)}"
            )
        effects = self.effects_schedule()
        return "\n".join([*lines, "", *effects] if effects else lines)

    def effects_schedule(self) -> list[str]:
        """The algorithms' declared effects, event by event in the order they happen,
        then the notes on what is order-sensitive or commutes; no lines when no
        algorithm declares any (``loom validate`` prints these)."""
        timeline = [(event, acting) for event, acting in _timeline(self.algorithms) if acting]
        if not timeline:
            return []
        width = max(len(event) for event, _ in timeline) + 2
        lines = ["What the algorithms read and change, in the order it happens:"]
        for event, acting in timeline:
            done = "; ".join(
                f"{plugin} {', '.join(effect.describe() for effect in effects)}"
                for plugin, effects in acting
            )
            lines.append(f"  {event:<{width}}{done}")
        return lines + [f"  {note}" for note in self.composition_notes]

    def _hooks_for(self, event: Event) -> tuple[Hook, ...]:
        algorithms = self.algorithms[::-1] if event.closes_pair else self.algorithms
        hooks = []
        for plugin in [*algorithms, *self.callbacks]:
            hook = getattr(plugin, event.value, None)
            if hook is not None:
                if not callable(hook):
                    raise TypeError(
                        f"{describe_plugin(plugin)}.{event.value} is {type(hook).__name__}, "
                        f"not a method; a hook is 'def {event.value}(self, state): ...'."
                    )
                hooks.append((plugin, event.value, hook))
        return tuple(hooks)


def composition(algorithms: Sequence[Algorithm | type[Algorithm]]) -> list[str]:
    """Checks that ``algorithms``, in this order, can be combined, from their declared
    :attr:`~Plugin.effects`; returns the notes on what in it is order-sensitive or
    commutes. Classes may stand for instances (the method cards are made so).

    Raises:
        CompositionError: They cannot be combined in this order; when the other order
            of the two named is refused too, the message says so.

    Examples:
        >>> from loom.trainer import changes, restores
        >>> class Smooth(Algorithm):
        ...     effects = (changes("targets", at="before_loss", how="smooths"),
        ...                restores("targets", at="after_loss"))
        ...     def before_loss(self, state): ...
        ...     def after_loss(self, state): ...
        >>> class Mix(Smooth):
        ...     effects = (changes("targets", at="before_loss", how="mixes"),
        ...                restores("targets", at="after_loss"))
        >>> print(*composition([Smooth, Mix]))
        targets at before_loss: Smooth smooths, then Mix mixes; these commute, ...
        >>> class SmoothMore(Smooth): ...
        >>> composition([Smooth(), SmoothMore()])
        Traceback (most recent call last):
        ...
        loom.trainer.effects.CompositionError: Smooth and SmoothMore both smooth the targets ...
    """
    labels = _labels(algorithms)
    try:
        return simulate(_timeline(algorithms), labels)
    except CompositionError as error:
        if not (error.about_order and len(error.plugins) == 2):
            raise
        # Where one runs relative to the other: the other order tells which to use.
        reader, other = error.plugins
        first, second = sorted(labels.index(plugin) for plugin in error.plugins)
        swapped = list(algorithms)
        swapped[first], swapped[second] = swapped[second], swapped[first]
        swapped_labels = _labels(swapped)
        try:
            simulate(_timeline(swapped), swapped_labels)
        except CompositionError as again:
            if set(again.plugins) == set(error.plugins):
                raise CompositionError(
                    f"{labels[first]} and {labels[second]} cannot be combined in either "
                    f"order. As listed: {error} Listed the other way round: {again}",
                    plugins=(labels[first], labels[second]),
                ) from None
        where = "before" if labels.index(reader) > labels.index(other) else "after"
        raise CompositionError(
            f"{error} List {reader} {where} {other}.", error.plugins, about_order=True
        ) from None


def _timeline(algorithms: Sequence[Any]) -> Timeline:
    """One training step of ``algorithms``' effects: each event, with the algorithms
    that declare an effect there in the order the event runs them."""
    labelled = list(zip(_labels(algorithms), algorithms, strict=True))
    steps = []
    for event in Event:
        ordered = labelled[::-1] if event.closes_pair else labelled
        acting = []
        for label, algorithm in ordered:
            here = [effect for effect in algorithm.effects if effect.at == event.value]
            if here:
                acting.append((label, here))
        steps.append((event.value, acting))
    return steps


def _labels(algorithms: Sequence[Any]) -> list[str]:
    """Each algorithm's class name, numbered (``MixUp #2``) where a class is listed twice."""
    names = [
        algorithm.__name__ if isinstance(algorithm, type) else type(algorithm).__name__
        for algorithm in algorithms
    ]
    seen: dict[str, int] = {}
    labels = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        labels.append(f"{name} #{seen[name]}" if names.count(name) > 1 else name)
    return labels


def _check_effects(plugin: Plugin) -> None:
    """Declared effects are Effects, at events the plugin has a hook for."""
    effects = plugin.effects
    if not isinstance(effects, tuple | list) or not all(isinstance(e, Effect) for e in effects):
        raise TypeError(
            f"{describe_plugin(plugin)}.effects = {effects!r} must be a tuple of effects "
            "made with loom.trainer.reads, changes or restores."
        )
    for effect in effects:
        if effect.at not in _EVENT_NAMES:
            close = difflib.get_close_matches(effect.at, _EVENT_NAMES, n=1)
            hint = (
                f"; did you mean {close[0]!r}?"
                if close
                else f"; the events are {', '.join(_EVENT_NAMES)}."
            )
            raise TypeError(
                f"{describe_plugin(plugin)} declares that it {effect.describe()} at "
                f"{effect.at!r}, which is not an event{hint}"
            )
        if not callable(getattr(plugin, effect.at, None)):
            raise TypeError(
                f"{describe_plugin(plugin)} declares that it {effect.describe()} at "
                f"{effect.at}, but has no {effect.at} hook."
            )


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
        for attribute in ("reads", "writes"):
            fields = getattr(plugin, attribute)
            unknown = (
                [fields]
                if isinstance(fields, str)
                else [field for field in fields if field not in _STATE_FIELDS]
            )
            if unknown:
                raise TypeError(
                    f"{describe_plugin(plugin)}.{attribute} = {fields!r} must be a tuple of "
                    f"State field names, e.g. ('metrics',); {unknown[0]!r} is not one. The "
                    f"fields are {', '.join(sorted(_STATE_FIELDS))}."
                )
        _check_effects(plugin)
        checked.append(plugin)
    return checked


def _refuse_duplicates(plugins: list[Plugin]) -> None:
    seen: set[int] = set()
    for plugin in plugins:
        if id(plugin) in seen:
            raise ValueError(
                f"{describe_plugin(plugin)} is registered twice; each plugin object may "
                "appear once (build a second instance to run it twice)."
            )
        seen.add(id(plugin))


def _check_readers_follow_writers(algorithms: list[Algorithm], callbacks: list[Callback]) -> None:
    """A plugin that reads what a callback writes must run after it at every event: a
    callback listed later, never an algorithm (algorithms run first)."""
    for position, writer in enumerate(callbacks):
        for reader in [*algorithms, *callbacks[:position]]:
            shared = sorted(set(writer.writes) & set(reader.reads))
            if shared:
                where = (
                    "algorithms run before callbacks"
                    if isinstance(reader, Algorithm)
                    else (f"list {type(writer).__name__} before {type(reader).__name__}")
                )
                raise ValueError(
                    f"{describe_plugin(reader)} reads state.{shared[0]}, which "
                    f"{describe_plugin(writer)} writes after it has run; {where}."
                )


def _shared_fields(plugins: list[Plugin]) -> list[tuple[str, tuple[list[str], list[str]]]]:
    """Each State field some plugin writes and another reads: (writers, readers) by name."""
    fields: dict[str, tuple[list[str], list[str]]] = {}
    for plugin in plugins:
        for field in plugin.writes:
            fields.setdefault(field, ([], []))[0].append(type(plugin).__name__)
    for plugin in plugins:
        for field in plugin.reads:
            if field in fields:
                fields[field][1].append(type(plugin).__name__)
    return [(field, names) for field, names in fields.items() if names[1]]


def _warn_on_misspelled_hooks(plugin: Plugin) -> None:
    """A method named almost like an event would silently never run: say so."""
    plugin_api = {name for name in dir(Plugin) if not name.startswith("_")}
    for name, _ in inspect.getmembers(type(plugin), inspect.isfunction):
        if name.startswith("_") or name in _EVENT_NAMES or name in plugin_api:
            continue
        close = difflib.get_close_matches(name, _EVENT_NAMES, n=1, cutoff=0.85)
        if close:
            warnings.warn(
                f"{type(plugin).__name__}.{name} is not an event hook and will never be "
                f"called by the Trainer; did you mean '{close[0]}'?",
                stacklevel=4,
            )
