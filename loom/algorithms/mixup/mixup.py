"""MixUp: each batch mixed with a shuffled copy of itself, inputs and targets alike."""

from __future__ import annotations

import random

import torch

from loom.algorithms.example_mixing import ExampleMixing, check_alpha
from loom.functional import mix
from loom.trainer import BatchKey, batch_size

__all__ = ["MixUp"]


class MixUp(ExampleMixing):
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
        prob: The chance that a batch is mixed, in [0, 1]; the others train as they are.
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
        prob: float = 1.0,
        input_key: BatchKey | None = None,
        target_key: BatchKey | None = None,
    ):
        self.alpha = check_alpha("MixUp", alpha)
        super().__init__(prob, input_key, target_key)

    def mix_inputs(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """``w ~ Beta(alpha, alpha)`` and a random pairing; the inputs mixed with them."""
        weight = random.betavariate(self.alpha, self.alpha)
        permutation = torch.randperm(batch_size(inputs), device=inputs.device)
        return mix(inputs, permutation, weight), permutation, weight

    def __repr__(self) -> str:
        return self._repr({"alpha": self.alpha})
