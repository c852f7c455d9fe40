"""CutMix: a box of each image replaced by the same box of another, the labels mixed by area."""

from __future__ import annotations

from typing import Any

import torch

from loom.algorithms.example_mixing import ExampleMixing, check_alpha
from loom.functional import box_weight, cutmix, sample_cutmix_box
from loom.trainer import BatchKey, describe_item

__all__ = ["CutMix"]


class CutMix(ExampleMixing):
    """Pastes a box of image ``j`` into image ``i``, and trains against
    ``w * y_i + (1 - w) * y_j``, ``w`` the share of image ``i`` left uncovered.

    Each mixed batch draws ``Beta(alpha, alpha)`` for the box's area, a centre
    uniform over the image and a random pairing of its examples; the box is clipped
    to the image and ``w`` is taken from the box as clipped (timm's ``correct_lam``),
    so the targets say exactly how much of each image the model saw. The inputs
    change at ``before_forward`` and come back at ``after_forward``; the dense mixed
    targets are the loss's at ``before_loss`` and the originals come back at
    ``after_loss``. Evaluation is never mixed. Like MixUp it commutes with label
    smoothing: in either order the mixture is smoothed once.

    Args:
        alpha: The Beta distribution's parameter, > 0; 1 (the paper's) draws the
            box's area uniformly.
        prob: The chance that a batch is mixed, in [0, 1] (the paper's CIFAR runs:
            0.5); the others train as they are.
        input_key: Where the images ``(N, C, H, W)`` are in a batch, when not at the
            run's ``input_key`` (int, str or (getter, setter)); None uses the run's.
        target_key: Where the targets are, when not at the run's ``target_key``.

    Examples:
        >>> from loom.algorithms import CutMix
        >>> CutMix(alpha=1.0, prob=0.5)
        CutMix(alpha=1.0, prob=0.5)
    """

    def __init__(
        self,
        alpha: float = 1.0,
        prob: float = 1.0,
        input_key: BatchKey | None = None,
        target_key: BatchKey | None = None,
    ):
        self.alpha = check_alpha("CutMix", alpha)
        super().__init__(prob, input_key, target_key)

    def check_inputs(self, inputs: Any) -> None:
        """Images ``(N, C, H, W)`` only."""
        check_images(inputs, "CutMix", self.input_key, "use MixUp for inputs that are not images.")

    def check_targets(self, targets: Any) -> None:
        """One target per image: class indices ``(N,)`` or dense ``(N, C)``."""
        check_image_targets(targets, "CutMix", "MixUp mixes them.")

    def mix_inputs(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """A clipped box and a random pairing; the inputs with each box pasted in."""
        height, width = inputs.shape[-2:]
        box = sample_cutmix_box(self.alpha, height, width)
        permutation = torch.randperm(inputs.shape[0], device=inputs.device)
        return cutmix(inputs, permutation, box), permutation, box_weight(box, height, width)

    def __repr__(self) -> str:
        return self._repr({"alpha": self.alpha})


def check_images(inputs: Any, plugin: str, input_key: BatchKey | None, instead: str) -> None:
    """Refuses inputs that are not images ``(N, C, H, W)``, naming ``plugin``, where the
    inputs are, and what to use ``instead``."""
    if not isinstance(inputs, torch.Tensor) or inputs.dim() != 4:
        key = "the run's input_key" if input_key is None else f"{input_key!r}"
        raise ValueError(
            f"{plugin} cuts boxes out of images (N, C, H, W), but the inputs at {key} are "
            f"{describe_item(inputs)}; {instead}"
        )


def check_image_targets(targets: Any, plugin: str, instead: str) -> None:
    """Refuses targets other than one per image (class indices ``(N,)``, dense ``(N, C)``):
    a target per pixel would have to be cut like its image, which CutMix does not do."""
    if isinstance(targets, torch.Tensor) and targets.dim() > (
        2 if targets.is_floating_point() else 1
    ):
        raise ValueError(
            f"{plugin} mixes one target per image, class indices (N,) or dense targets "
            f"(N, C), but the targets are {describe_item(targets)}: a target per pixel "
            f"would have to be cut like its image, which CutMix does not do; {instead}"
        )
