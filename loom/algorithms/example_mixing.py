"""The part MixUp, CutMix and their switch share: a batch mixed with a shuffled copy of
itself, inputs at ``before_forward`` and dense targets at ``before_loss``, both put back."""

from __future__ import annotations

import random
from typing import Any

import torch

from loom.functional import check_fraction, check_positive, mix_targets
from loom.trainer import Algorithm, BatchKey, State, changes, restores, validate_batch_key

__all__ = ["ExampleMixing", "check_alpha"]

_BOTH = "To train with both MixUp and CutMix, MixUpOrCutMix picks one of them per batch."


def check_alpha(plugin: str, alpha: object, argument: str = "alpha") -> float:
    """``alpha`` as a float if it is a positive finite number; raises naming ``plugin``."""
    try:
        return check_positive(alpha, argument)
    except (TypeError, ValueError) as error:
        raise type(error)(f"{plugin}: {error} It is the Beta distribution's parameter.") from None


class ExampleMixing(Algorithm):
    """Base of the algorithms that pair each example of a training batch with another.

    With probability ``prob`` a batch is mixed: :meth:`mix_inputs` draws a pairing and
    returns the mixed inputs and the weight ``w`` of each example itself; at
    ``before_forward`` the run's inputs become those, at ``after_forward`` the
    originals go back; at ``before_loss`` the targets become ``w * y_i + (1 - w) * y_j``
    (dense; see :func:`loom.functional.mix_targets`), at ``after_loss`` the originals
    go back. A batch left unmixed trains on the batch as it is. Evaluation is never
    mixed. When the batch runs again (``state.recomputing``, SAM's second pass), each
    microbatch is mixed as it was the first time, with no new draw.

    Attributes:
        weight: The last mixed batch's target weight ``w``.
        permutation: Its pairing, ``(N,)``; None when the batch was left unmixed.
    """

    effects = (
        changes("inputs", at="before_forward", how="mixes", hint=_BOTH),
        restores("inputs", at="after_forward"),
        changes("targets", at="before_loss", how="mixes", hint=_BOTH),
        restores("targets", at="after_loss"),
    )

    def __init__(
        self, prob: float, input_key: BatchKey | None, target_key: BatchKey | None
    ) -> None:
        name = type(self).__name__
        try:
            self.prob = check_fraction(prob, "prob")
        except (TypeError, ValueError) as error:
            raise type(error)(f"{name}: {error} It is the chance that a batch is mixed.") from None
        for argument, key in (("input_key", input_key), ("target_key", target_key)):
            if key is not None:
                validate_batch_key(key, argument)
        self.input_key = input_key
        self.target_key = target_key
        self.weight = 1.0
        self.permutation: torch.Tensor | None = None
        self._inputs: Any = None
        self._targets: Any = None
        # This batch's (mixed inputs, pairing, weight), one per microbatch, which a
        # second pass of the batch (SAM's) uses again.
        self._draws: list[tuple[Any, torch.Tensor | None, float]] = []
        self._replayed = 0

    def mix_inputs(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Draws a pairing: ``(mixed inputs, permutation, weight of each example itself)``."""
        raise NotImplementedError

    def check_inputs(self, inputs: Any) -> None:
        """Refuses inputs this method cannot mix; called on every batch, before any draw,
        so that the first batch says so whether or not it is mixed. Any by default."""

    def check_targets(self, targets: Any) -> None:
        """Refuses targets this method cannot mix; called on every batch, mixed or not.
        Any by default."""

    def before_forward(self, state: State) -> None:
        inputs = state.get_inputs(self.input_key)
        if state.recomputing:  # the batch again (SAM): each microbatch mixed as before
            # In order, once per pass: a method may run the batch again more than once.
            mixed, self.permutation, self.weight = self._draws[self._replayed % len(self._draws)]
            self._replayed += 1
        else:
            self.check_inputs(inputs)
            # Python's generator: no step waits for the device; seeded by the Trainer's
            # seed and saved in checkpoints. prob=1 draws nothing, so runs stay as they were.
            if self.prob < 1.0 and random.random() >= self.prob:
                mixed, self.permutation = None, None
            else:
                mixed, self.permutation, self.weight = self.mix_inputs(inputs)
            self._draws.append((mixed, self.permutation, self.weight))
        if self.permutation is not None:
            self._inputs = inputs
            state.set_inputs(mixed, self.input_key)

    def after_forward(self, state: State) -> None:
        if self.permutation is not None:
            state.set_inputs(self._inputs, self.input_key)
            self._inputs = None

    def before_loss(self, state: State) -> None:
        targets = state.get_targets(self.target_key)
        self.check_targets(targets)
        if self.permutation is None:
            return
        self._targets = targets
        mixed = mix_targets(state.outputs, targets, self.permutation, self.weight)
        state.set_targets(mixed, self.target_key)

    def after_loss(self, state: State) -> None:
        if self.permutation is not None:
            state.set_targets(self._targets, self.target_key)
            self._targets = None

    def batch_start(self, state: State) -> None:
        self.batch_end(state)  # none of a batch that raised before its end

    def batch_end(self, state: State) -> None:
        # The batch's draws, kept for state.recompute_gradients, go with it.
        self._draws.clear()
        self._replayed = 0

    def _repr(self, options: dict[str, Any]) -> str:
        if self.prob != 1.0:
            options["prob"] = self.prob
        for name in ("input_key", "target_key"):
            if getattr(self, name) is not None:
                options[name] = getattr(self, name)
        listed = ", ".join(f"{name}={value!r}" for name, value in options.items())
        return f"{type(self).__name__}({listed})"
