"""CutMix (Yun et al., 2019): a box of each image replaced by the same box of another."""

from __future__ import annotations

import math
import random

import torch

__all__ = ["Box", "box_weight", "cutmix", "cutmix_box", "sample_cutmix_box"]

Box = tuple[int, int, int, int]
"""``(top, bottom, left, right)``: rows ``top:bottom`` and columns ``left:right``."""


def cutmix_box(height: int, width: int, weight: float, center: tuple[int, int]) -> Box:
    """The box that covers ``1 - weight`` of a ``height x width`` image, centred at
    ``center`` (row, column), then clipped to the image.

    Its sides are ``int(height * sqrt(1 - weight))`` by ``int(width * sqrt(1 - weight))``,
    reaching half of each side (rounded down) either way from the centre, as in the
    authors' code and timm's; an odd side loses one row or column, and near an edge
    the clipped box is smaller, so the weight that says how much of each image is
    left is :func:`box_weight` of the box, not ``weight``.

    Examples:
        >>> cutmix_box(8, 8, 0.75, center=(4, 4))
        (2, 6, 2, 6)
        >>> cutmix_box(8, 8, 0.75, center=(0, 7))  # clipped at the corner
        (0, 2, 5, 8)
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight={weight!r} must be in [0, 1].")
    row, column = center
    if not (0 <= row < height and 0 <= column < width):
        raise ValueError(f"center={center!r} must lie in the {height}x{width} image.")
    cut = math.sqrt(1.0 - weight)
    cut_height, cut_width = int(height * cut), int(width * cut)
    top, bottom = max(row - cut_height // 2, 0), min(row + cut_height // 2, height)
    left, right = max(column - cut_width // 2, 0), min(column + cut_width // 2, width)
    return top, bottom, left, right


def box_weight(box: Box, height: int, width: int) -> float:
    """The share of each image a box leaves as it was: ``1 - area(box) / (height * width)``,
    the targets' mixing weight (timm's ``correct_lam``).

    Examples:
        >>> box_weight((0, 2, 5, 8), 8, 8)
        0.90625
    """
    top, bottom, left, right = box
    return 1.0 - (bottom - top) * (right - left) / (height * width)


def sample_cutmix_box(
    alpha: float, height: int, width: int, generator: random.Random | None = None
) -> Box:
    """A box for CutMix: ``weight ~ Beta(alpha, alpha)``, its centre uniform over the image.

    Drawn with Python's ``random`` (or ``generator``), so that no draw waits for a device.

    Examples:
        >>> top, bottom, left, right = sample_cutmix_box(1.0, 32, 32, random.Random(0))
        >>> 0 <= top <= bottom <= 32 and 0 <= left <= right <= 32
        True
    """
    draw = generator or random
    weight = draw.betavariate(alpha, alpha)
    center = (draw.randrange(height), draw.randrange(width))
    return cutmix_box(height, width, weight, center)


def cutmix(inputs: torch.Tensor, permutation: torch.Tensor, box: Box) -> torch.Tensor:
    """``inputs`` with the ``box`` of each image replaced by that of ``inputs[permutation]``.

    Mix the targets with ``box_weight(box, H, W)`` (:func:`loom.functional.mix_targets`)
    so that they say how much of each image the model sees.

    Args:
        inputs: Images ``(N, C, H, W)``, of any height and width.
        permutation: Which image each one takes its box from, ``(N,)``.
        box: ``(top, bottom, left, right)``, from :func:`cutmix_box`.

    Returns:
        A new tensor; ``inputs`` is not changed.

    Examples:
        >>> images = torch.arange(2.0).view(2, 1, 1, 1).expand(2, 1, 2, 2)
        >>> cutmix(images, torch.tensor([1, 0]), (0, 1, 0, 2))[0, 0]
        tensor([[1., 1.],
                [0., 0.]])
    """
    if not isinstance(inputs, torch.Tensor) or inputs.dim() != 4:
        shape = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
        raise ValueError(f"CutMix cuts boxes out of images (N, C, H, W), got inputs {shape}.")
    top, bottom, left, right = box
    mixed = inputs.clone()
    mixed[:, :, top:bottom, left:right] = inputs[permutation, :, top:bottom, left:right]
    return mixed
