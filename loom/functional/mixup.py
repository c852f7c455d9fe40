"""MixUp (Zhang et al., 2018): convex combinations of examples and of their targets."""

from __future__ import annotations

import torch

from loom.functional.label_smoothing import smooth_labels

__all__ = ["mix", "mix_targets"]


def mix(tensor: torch.Tensor, permutation: torch.Tensor, weight: float) -> torch.Tensor:
    """``weight * tensor + (1 - weight) * tensor[permutation]``, along the first dimension.

    Examples:
        >>> import torch
        >>> mix(torch.tensor([[0.0], [10.0]]), torch.tensor([1, 0]), 0.75)
        tensor([[2.5000],
                [7.5000]])
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight={weight!r} must be in [0, 1].")
    if not tensor.is_floating_point():
        raise TypeError(
            f"mixing needs floating-point values, got {tensor.dtype}; convert the inputs "
            "to float (e.g. with the dataset's transform) before MixUp."
        )
    return torch.lerp(tensor[permutation], tensor, weight)


def mix_targets(
    logits: torch.Tensor, target: torch.Tensor, permutation: torch.Tensor, weight: float
) -> torch.Tensor:
    """Dense targets mixed like their examples.

    Class indices become one-hot first (positions equal to -100 become all-zero
    rows, left out of the loss); dense targets, such as label smoothing's, are
    mixed as they are. Mixing and smoothing commute, so in either order the result
    is the smoothed mixture.

    Args:
        logits: The model's outputs ``(N, C, ...)``; their shape, dtype and device.
        target: Class indices ``(N, ...)`` or dense targets shaped like ``logits``.
        permutation: The order the examples were mixed with, ``(N,)``.
        weight: The weight of each example itself, in [0, 1].

    Examples:
        >>> import torch
        >>> mix_targets(torch.zeros(2, 3), torch.tensor([0, 2]), torch.tensor([1, 0]), 0.75)
        tensor([[0.7500, 0.0000, 0.2500],
                [0.2500, 0.0000, 0.7500]])
    """
    dense = target if target.is_floating_point() else smooth_labels(logits, target, 0.0)
    return mix(dense, permutation, weight)
