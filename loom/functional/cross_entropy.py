"""Cross-entropy against class indices or dense (one-hot or soft) targets."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.compiler import is_compiling

from loom.functional.checks import check_class_indices
from loom.functional.dense_cross_entropy import (
    ONE_PASS_FROM,
    at_least_float32,
    check_reduction,
    dense_cross_entropy,
    zero_when_nothing_counts,
)
from loom.functional.label_smoothing import fused_form

__all__ = ["cross_entropy", "soft_cross_entropy"]

IGNORE_INDEX = -100
"""The class index that marks a position to leave out, as in ``F.cross_entropy``."""


def soft_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """Cross-entropy of ``logits`` against dense target distributions.

    ``logits`` and ``targets`` have the same shape ``(N, C, ...)``, the class
    dimension second. The loss at each position is ``-sum_c targets[c] *
    log_softmax(logits)[c]``. A position whose target is all zero is ignored, as one
    equal to ``ignore_index`` is by ``F.cross_entropy``: its loss is 0 and the mean
    leaves it out, so that with the targets :func:`smooth_labels` makes, every
    reduction equals ``F.cross_entropy(logits, indices, label_smoothing=s,
    ignore_index=i, reduction=...)``. One difference, on purpose: the mean over a batch
    in which every position is ignored is 0, where torch's is NaN (0/0); the gradient
    is zero in both. Such batches are common in segmentation crops, and a NaN would
    stop the Trainer's finite-loss check. The log-probabilities are computed in
    float32 at least, also under autocast.

    On logits of at least ``ONE_PASS_FROM`` elements (65,536) two faster paths are
    taken, to the same number. Targets that :func:`smooth_labels` made from class
    indices, unchanged since, are not read: the loss is torch's fused
    ``F.cross_entropy(logits, indices, label_smoothing=s)``. Other targets go through
    one softmax whose result serves both the loss and its gradient, which is formed in
    the forward pass; the backward pass scales it, once: ``retain_graph=True`` and a
    second derivative (``create_graph=True``) are refused with a message. Smaller
    logits, and ``reduction="none"``, go through autograd's log-softmax.

    Args:
        logits: Unnormalised scores, shape ``(N, C, ...)``.
        targets: Target distributions over the ``C`` classes, same shape.
        reduction: ``"mean"`` (over the positions not ignored), ``"sum"`` or
            ``"none"`` (one loss per position, shape ``(N, ...)``).

    Returns:
        The reduced loss: a scalar, or ``(N, ...)`` for ``"none"``.

    Raises:
        ValueError: ``targets`` does not have the shape of ``logits``, or
            ``reduction`` is not one of the three.

    Examples:
        >>> import torch
        >>> logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
        >>> targets = torch.tensor([[1.0, 0.0], [0.0, 0.0]])  # second row ignored
        >>> round(soft_cross_entropy(logits, targets).item(), 4)
        0.1269
        >>> soft_cross_entropy(logits, targets, reduction="none")
        tensor([0.1269, 0.0000])
        >>> soft_cross_entropy(logits, torch.zeros(2, 2)).item() == 0  # nothing counted: 0
        True
    """
    check_reduction(reduction)
    if targets.shape != logits.shape:
        raise ValueError(
            f"dense targets must have the shape of the logits {tuple(logits.shape)}, "
            f"got {tuple(targets.shape)}; pass class indices of shape "
            f"{(logits.shape[0], *logits.shape[2:])} or one distribution per position."
        )
    logits = at_least_float32(logits)
    # Torch's fused label smoothing runs more operations than a dense-target loss,
    # which costs more than its saved passes on small logits.
    smoothed = fused_form(targets) if logits.numel() >= ONE_PASS_FROM else None
    if smoothed is not None and targets.device == logits.device:
        # The same loss and gradient as below, from the class indices alone.
        indices, smoothing, ignore_index = smoothed
        # A copy: the kernel saves its indices for backward, and the caller's may change.
        indices = indices.to(torch.long, copy=True)
        loss = F.cross_entropy(
            logits,
            indices,
            label_smoothing=smoothing,
            ignore_index=ignore_index,
            reduction=reduction,
        )
        if reduction != "mean":
            return loss
        return zero_when_nothing_counts(loss, (indices != ignore_index).sum())
    return dense_cross_entropy(logits, targets.to(logits.dtype), reduction)


def cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """Cross-entropy against class indices or dense targets; the Trainer's default loss.

    Integer ``targets`` of shape ``(N, ...)`` are class indices (``-100`` is
    ignored), handled by ``F.cross_entropy``; floating ``targets`` with the
    shape of ``logits`` are distributions, handled by :func:`soft_cross_entropy`.
    Either way the mean is over the positions that are not ignored, and it is 0 for a
    batch in which every position is ignored (torch's is NaN), with a zero gradient.

    Args:
        logits: ``(N, C, ...)``.
        targets: Class indices ``(N, ...)`` or distributions ``(N, C, ...)``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``, as for ``F.cross_entropy``.

    Raises:
        ValueError: On the CPU, a class index outside ``[0, C)`` that is not ``-100``,
            named with its position (torch's own kernel finds it as it reads the
            indices; loom's range check then says which, at no cost to a good batch);
            or a ``reduction`` that is not one of the three.

    Examples:
        >>> import torch
        >>> logits = torch.tensor([[2.0, 0.0]])
        >>> hard = cross_entropy(logits, torch.tensor([0]))
        >>> soft = cross_entropy(logits, torch.tensor([[1.0, 0.0]]))
        >>> bool(torch.isclose(hard, soft))
        True
        >>> cross_entropy(logits, torch.tensor([-100]))  # every position ignored
        tensor(0.)
    """
    if targets.dtype.is_floating_point:  # the dtype's flag: no call into torch's dispatcher
        return soft_cross_entropy(logits, targets, reduction)
    try:
        loss = F.cross_entropy(logits, targets, reduction=reduction)
    except (IndexError, RuntimeError):
        if targets.device.type != "cpu" or logits.dim() < 2:
            raise
        try:
            check_class_indices(targets, targets != IGNORE_INDEX, logits.shape[1], IGNORE_INDEX)
        except ValueError as out_of_range:
            raise out_of_range from None  # the clear message alone, not torch's under it
        raise  # the indices were in range: torch's error is about something else
    except ValueError:
        check_reduction(reduction)  # the message names loom's argument
        raise
    if reduction != "mean":
        return loss
    # On the CPU, reading the scalar costs less than counting: only a NaN mean can be an
    # empty batch's (0/0), and the count then tells it from a diverged model's. (Not
    # under torch.compile, where the read would break the graph.)
    if loss.is_cpu and not is_compiling():
        try:
            if not math.isnan(loss.item()):
                return loss
        except RuntimeError:  # under a functorch transform (vmap), which has no value
            pass
    return zero_when_nothing_counts(loss, (targets != IGNORE_INDEX).sum())
