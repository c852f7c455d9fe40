"""MixUp: each batch mixed with a shuffled copy of itself, inputs and targets alike."""

from __future__ import annotations

import math
import random
from typing import Any

import torch

from loom.functional import mix, mix_targets
from loom.trainer import Algorithm, BatchKey, State, batch_size, validate_batch_key

__all__ = ["MixUp"]


class MixUp(Algorithm):
    """Trains on ``w * x_i + (1 - w) * x_j`` against ``w * y_i + (1 - w) * y_j``.

    Each training batch draws ``w ~ Beta(alpha, alpha)`` and a random pairing of
    its examples. At ``before_forward`` the run's inputs are mixed; at
    ``after_forward`` the originals go back. At ``before_loss`` the run's targets
    become dense mixed targets; at ``after_loss`` the originals go
    back, so metrics and later plugins see the true labels. Evaluation is never
    mixed. With :class:`LabelSmoothing` in either order the loss is that of the
    smoothed mixed targets, smoothed once (mixing and smoothing commute).

    Args:
        alpha: The Beta distribution's parameter, > 0; small values (0.2) mix
            little, 1 draws ``w`` uniformly.
        input_key: Where the inputs are in a batch, when not at the run's
            ``input_key`` (int, str or (getter, setter)); None uses the run's.
        target_key: Where the targets are, when not at the run's ``target_key``.

    Examples:
        >>> from loom.algorithms import MixUp
        >>> MixUp(alpha=0.2)
        MixUp(alpha=0.2)
    """

    def __init__(
        self,
        alpha: float = 0.2,
        input_key: BatchKey | None = None,
        target_key: BatchKey | None = None,
    ):
        if (
            not isinstance(alpha, int | float)
            or isinstance(alpha, bool)
            or not (0 < alpha < math.inf)
        ):
            raise ValueError(f"alpha={alpha!r} must be a positive number.")
        for argument, key in (("input_key", input_key), ("target_key", target_key)):
            if key is not None:
                validate_batch_key(key, argument)
        self.alpha = float(alpha)
        self.input_key = input_key
        self.target_key = target_key
        self.weight = 1.0
        self.permutation: torch.Tensor | None = None
        self._inputs: Any = None
        self._targets: Any = None

    def before_forward(self, state: State) -> None:
        inputs = state.get_inputs(self.input_key)
        # Python's generator: a float without touching the device, seeded by the Trainer's
        # seed and saved in checkpoints like the others.
        self.weight = random.betavariate(self.alpha, self.alpha)
        self.permutation = torch.randperm(batch_size(inputs), device=inputs.device)
        self._inputs = inputs
        state.set_inputs(mix(inputs, self.permutation, self.weight), self.input_key)

    def after_forward(self, state: State) -> None:
        state.set_inputs(self._inputs, self.input_key)
        self._inputs = None

    def before_loss(self, state: State) -> None:
        targets = state.get_targets(self.target_key)
        self._targets = targets
        mixed = mix_targets(state.outputs, targets, self.permutation, self.weight)
        state.set_targets(mixed, self.target_key)

    def after_loss(self, state: State) -> None:
        state.set_targets(self._targets, self.target_key)
        self._targets = None

    def __repr__(self) -> str:
        keys = "".join(
            f", {name}={key!r}"
            for name, key in (("input_key", self.input_key), ("target_key", self.target_key))
            if key is not None
        )
        return f"MixUp(alpha={self.alpha}{keys})"
