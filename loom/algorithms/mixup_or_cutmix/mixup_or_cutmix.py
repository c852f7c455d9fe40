"""MixUpOrCutMix: each mixed batch gets MixUp or CutMix, chosen at random."""

from __future__ import annotations

import random
from typing import Any

import torch

from loom.algorithms.cutmix import CutMix
from loom.algorithms.cutmix.cutmix import check_image_targets, check_images
from loom.algorithms.example_mixing import ExampleMixing, check_alpha
from loom.algorithms.mixup import MixUp
from loom.functional import check_fraction
from loom.trainer import BatchKey, State

__all__ = ["MixUpOrCutMix"]


class MixUpOrCutMix(ExampleMixing):
    """MixUp or CutMix per batch: CutMix with probability ``switch_prob``, else MixUp.

    The way to train with both (timm's ``switch_prob``, DeiT's recipe): listed side
    by side, MixUp and CutMix would mix a batch twice, which loom refuses. Each
    mixed batch is one or the other, inputs and targets alike, exactly as
    :class:`MixUp` or :class:`CutMix` alone would mix it; ``prob`` is the chance that
    a batch is mixed at all. :attr:`last` says which the last batch got.

    Args:
        mixup_alpha: MixUp's Beta parameter, > 0.
        cutmix_alpha: CutMix's Beta parameter, > 0.
        switch_prob: The chance that a mixed batch gets CutMix, in [0, 1].
        prob: The chance that a batch is mixed, in [0, 1].
        input_key: Where the images ``(N, C, H, W)`` are in a batch, when not at the
            run's ``input_key``; None uses the run's.
        target_key: Where the targets are, when not at the run's ``target_key``.

    Examples:
        >>> from loom.algorithms import MixUpOrCutMix
        >>> MixUpOrCutMix(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5)
        MixUpOrCutMix(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5)
    """

    def __init__(
        self,
        mixup_alpha: float = 0.8,
        cutmix_alpha: float = 1.0,
        switch_prob: float = 0.5,
        prob: float = 1.0,
        input_key: BatchKey | None = None,
        target_key: BatchKey | None = None,
    ):
        try:
            self.switch_prob = check_fraction(switch_prob, "switch_prob")
        except (TypeError, ValueError) as error:
            raise type(error)(f"MixUpOrCutMix: {error}") from None
        super().__init__(prob, input_key, target_key)
        # Their argument checks and mixing, never their hooks: this plugin is the one
        # the Trainer runs.
        self._mixup = MixUp(check_alpha("MixUpOrCutMix", mixup_alpha, "mixup_alpha"))
        self._cutmix = CutMix(
            check_alpha("MixUpOrCutMix", cutmix_alpha, "cutmix_alpha"), input_key=input_key
        )
        self.last: str | None = None

    def check_inputs(self, inputs: Any) -> None:
        """Images ``(N, C, H, W)`` whenever CutMix may be picked."""
        if self.switch_prob > 0.0:
            instead = "switch_prob=0 is MixUp alone, for inputs that are not images."
            check_images(inputs, "MixUpOrCutMix", self.input_key, instead)

    def check_targets(self, targets: Any) -> None:
        """One target per image whenever CutMix may be picked."""
        if self.switch_prob > 0.0:
            check_image_targets(
                targets, "MixUpOrCutMix", "switch_prob=0 is MixUp alone, which mixes them."
            )

    def before_forward(self, state: State) -> None:
        self.last = None  # a batch left unmixed got neither
        super().before_forward(state)

    def mix_inputs(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """CutMix's mixing with probability ``switch_prob``, else MixUp's."""
        # switch_prob 0 or 1 draws nothing: the run is MixUp's or CutMix's, draw for draw.
        switch = self.switch_prob
        if switch == 1.0 or (switch > 0.0 and random.random() < switch):
            self.last = "cutmix"
            return self._cutmix.mix_inputs(inputs)
        self.last = "mixup"
        return self._mixup.mix_inputs(inputs)

    def __repr__(self) -> str:
        options = {
            "mixup_alpha": self._mixup.alpha,
            "cutmix_alpha": self._cutmix.alpha,
            "switch_prob": self.switch_prob,
        }
        return self._repr(options)
