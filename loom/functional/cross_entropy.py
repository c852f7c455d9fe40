"""Cross-entropy against class indices or dense (one-hot or soft) targets."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from loom.functional.checks import check_class_indices
from loom.functional.dense_cross_entropy import (
    ONE_PASS_FROM,
    at_least_float32,
    dense_cross_entropy,
)
from loom.functional.label_smoothing import fused_form

__all__ = ["cross_entropy", "soft_cross_entropy"]

IGNORE_INDEX = -100
"""The class index that marks a position to leave out, as in ``F.cross_entropy``."""


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``logits`` against dense target distributions.

    ``logits`` and ``targets`` have the same shape ``(N, C, ...)``, the class
    dimension second. The loss at each position is ``-sum_c targets[c] *
    log_softmax(logits)[c]``; the mean is over positions whose target is not
    all zero, so a position marked as ignored by an all-zero target counts
    neither in the sum nor in the mean, as with ``F.cross_entropy(ignore_index=...)``.
    The log-probabilities are computed in float32 at least, also under autocast.

    On logits of at least ``ONE_PASS_FROM`` elements (65,536) two faster paths are
    taken, to the same number. Targets that :func:`smooth_labels` made from class
    indices, unchanged since, are not read: the loss is torch's fused
    ``F.cross_entropy(logits, indices, label_smoothing=s)``. Other targets go through
    one softmax whose result serves both the loss and its gradient, which is formed in
    the forward pass; the backward pass scales it, once: ``retain_graph=True`` and a
    second derivative (``create_graph=True``) are refused with a message. Smaller
    logits go through autograd's log-softmax, which costs fewer operations there.

    Args:
        logits: Unnormalised scores, shape ``(N, C, ...)``.
        targets: Target distributions over the ``C`` classes, same shape.

    Returns:
        A scalar tensor: the mean loss (NaN when every target is all zero; the
        gradient is then zero, as ``F.cross_entropy``'s is when every index is ignored).

    Raises:
        ValueError: ``targets`` does not have the shape of ``logits``.

    Examples:
        >>> import torch
        >>> logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
        >>> targets = torch.tensor([[1.0, 0.0], [0.0, 0.0]])  # second row ignored
        >>> round(soft_cross_entropy(logits, targets).item(), 4)
        0.1269
    """
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
        return F.cross_entropy(
            logits, indices, label_smoothing=smoothing, ignore_index=ignore_index
        )
    return dense_cross_entropy(logits, targets.to(logits.dtype))


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy against class indices or dense targets; the Trainer's default loss.

    Integer ``targets`` of shape ``(N, ...)`` are class indices (``-100`` is
    ignored), handled by ``F.cross_entropy``; floating ``targets`` with the
    shape of ``logits`` are distributions, handled by :func:`soft_cross_entropy`.
    Either way the mean is over the positions that are not ignored.

    Raises:
        ValueError: On the CPU, a class index outside ``[0, C)`` that is not ``-100``,
            named with its position (torch's own kernel finds it as it reads the
            indices; loom's range check then says which, at no cost to a good batch).

    Examples:
        >>> import torch
        >>> logits = torch.tensor([[2.0, 0.0]])
        >>> hard = cross_entropy(logits, torch.tensor([0]))
        >>> soft = cross_entropy(logits, torch.tensor([[1.0, 0.0]]))
        >>> bool(torch.isclose(hard, soft))
        True
    """
    if targets.dtype.is_floating_point:  # the dtype's flag: no call into torch's dispatcher
        return soft_cross_entropy(logits, targets)
    try:
        return F.cross_entropy(logits, targets)
    except (IndexError, RuntimeError):
        if targets.device.type != "cpu" or logits.dim() < 2:
            raise
        try:
            check_class_indices(targets, targets != IGNORE_INDEX, logits.shape[1], IGNORE_INDEX)
        except ValueError as out_of_range:
            raise out_of_range from None  # the clear message alone, not torch's under it
        raise  # the indices were in range: torch's error is about something else
