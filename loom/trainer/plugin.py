"""The two kinds of plugin: algorithms change the run, callbacks observe it."""

from __future__ import annotations

from typing import Any

__all__ = ["Algorithm", "Callback", "Plugin"]


class Plugin:
    """Base of :class:`Algorithm` and :class:`Callback`.

    A plugin defines a method named after each event it handles (see
    :class:`~loom.trainer.event.Event`), taking the :class:`~loom.trainer.state.State`::

        def before_loss(self, state): ...

    Events it does not define cost nothing. State that must survive a
    checkpoint goes through :meth:`state_dict` and :meth:`load_state_dict`,
    as plain data: tensors, numbers, strings, and lists and dicts of them.
    """

    def state_dict(self) -> dict[str, Any]:
        """The plugin's state to checkpoint, as plain data. Empty by default."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores what :meth:`state_dict` returned. Does nothing by default."""
        del state

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Algorithm(Plugin):
    """A training method: it may change the batch, outputs, loss or model.

    Algorithms run before callbacks at every event, and in reverse order at
    ``after_*`` and ``*_end`` events, so an algorithm that changes something at
    a ``before_*`` event restores it at the matching ``after_*`` event.

    Examples:
        >>> import torch
        >>> from loom.trainer import Algorithm
        >>> class ScaleLoss(Algorithm):
        ...     def __init__(self, factor: float):
        ...         self.factor = factor
        ...     def before_backward(self, state):
        ...         state.loss = state.loss * self.factor
    """


class Callback(Plugin):
    """An observer: it reads the state to log, save or stop, and changes nothing else.

    Examples:
        >>> from loom.trainer import Callback
        >>> class PrintEpoch(Callback):
        ...     def epoch_end(self, state):
        ...         print("finished epoch", state.timestamp.epoch)
    """
