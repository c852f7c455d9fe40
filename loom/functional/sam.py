"""Sharpness-aware minimization's ascent step: where to move the weights before the
second gradient (Foret et al., "Sharpness-Aware Minimization for Efficiently Improving
Generalization", ICLR 2021; adaptive: Kwon et al., "ASAM", ICML 2021)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from loom.functional.checks import check_positive

__all__ = ["sam_perturbation"]


def sam_perturbation(
    weights: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    rho: float = 0.05,
    adaptive: bool = False,
    eps: float = 1e-12,
) -> list[torch.Tensor]:
    """The step ``e`` to each weight that SAM takes before its second gradient.

    ``e = rho * g / ||g||`` over all the weights together (the steepest ascent within
    a ball of radius ``rho``); adaptive, ``e = rho * w² g / ||w g||`` (the ball scaled
    by each weight's size, so that the step does not depend on how the weights are
    scaled). The gradient's own scale cancels, so gradients that an fp16 scaler
    multiplied give the same step; gradients that are not finite give no step (zeros).
    No value is read back to the host.

    Args:
        weights: The parameters, as tensors.
        grads: Their gradients, one per weight.
        rho: The radius of the neighbourhood, > 0.
        adaptive: Scale the neighbourhood by the weights (ASAM).
        eps: Added to the norm, against a zero gradient.

    Returns:
        One tensor per weight, shaped like it.

    Examples:
        >>> import torch
        >>> w, g = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])
        >>> sam_perturbation([w], [g], rho=0.5)  # rho times g's direction
        [tensor([0.3000, 0.4000])]
        >>> scaled = sam_perturbation([w], [g * 1024.0], rho=0.5)  # the scale cancels
        >>> torch.allclose(scaled[0], torch.tensor([0.3, 0.4]))
        True
    """
    rho = check_positive(rho, "rho")
    if len(weights) != len(grads):
        raise ValueError(
            f"sam_perturbation takes one gradient per weight: {len(weights)} weights, "
            f"{len(grads)} gradients."
        )
    if not weights:
        return []
    scaled = (
        [weight.abs() * grad for weight, grad in zip(weights, grads, strict=True)]
        if adaptive
        else grads
    )
    # The norm in float32 at least (a bf16 model's squares would round), float64 if given.
    precision = torch.float32
    for grad in grads:
        precision = torch.promote_types(precision, grad.dtype)
    device = grads[0].device
    norm = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(t, dtype=precision).to(device) for t in scaled])
    )
    finite = torch.isfinite(norm)
    scale = torch.where(finite, rho / (norm + eps), torch.zeros_like(norm))
    steps = []
    for weight, grad in zip(weights, grads, strict=True):
        direction = weight * weight * grad if adaptive else grad
        step = torch.where(finite, direction * scale.to(direction.dtype), 0.0)
        steps.append(step)
    return steps
