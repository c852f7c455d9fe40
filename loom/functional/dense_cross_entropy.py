"""Cross-entropy against dense targets with its gradient formed in the forward pass.

The gradient of ``sum_c -t_c * log_softmax(x)_c`` with respect to ``x`` is
``p * sum_c(t_c) - t``, where ``p = softmax(x)``. Autograd reaches it through the
log-softmax and the product, two losses' worth of graph; the functions here compute
``p`` once, use it for the loss, for the gradient and (in online label smoothing) for
the statistics of correct predictions, and leave the backward pass a single scaling.

Every tensor here is in the positions layout ``(P, C)``: one row per position, the
classes along dimension 1. The callers flatten ``(N, C, ...)`` logits into it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from loom.functional.checks import check_choice

__all__ = [
    "REDUCTIONS",
    "accumulate_correct_predictions",
    "at_least_float32",
    "check_reduction",
    "class_target_cross_entropy",
    "dense_cross_entropy",
    "from_positions",
    "gather_class_targets",
    "label_is_prediction",
    "position_losses",
    "rows_with_mass",
    "to_positions",
    "zero_when_nothing_counts",
]


ONE_PASS_FROM = 2**16
"""Logits of fewer elements than this go through autograd's log-softmax: below it the
count of operations, each a few microseconds of dispatch, costs more than the passes
over memory that the one-pass form saves (measured on the CPU, forward + backward:
41 against 57 us at 64 x 10, 72 against 86 at 256 x 100, 299 against 191 at 128 x 1000)."""

COUNT_MAXIMA_FROM = 2**13
"""Probabilities of fewer elements than this are tested with ``argmax``, which costs
less there than counting the maxima (2.5 against 7.7 us at 64 x 10; 16 against 9.5 at
128 x 100)."""


REDUCTIONS = ("mean", "sum", "none")
"""The reductions of every loss in loom, as in ``torch.nn.functional.cross_entropy``."""


def check_reduction(reduction: object) -> str:
    """``reduction`` when it is one of :data:`REDUCTIONS`; a ValueError naming it otherwise."""
    return check_choice(reduction, "reduction", REDUCTIONS)


class _ReducedLossWithPrecomputedGradient(torch.autograd.Function):
    """Hands autograd a summed or mean loss whose gradient the forward pass already computed.

    ``negative_gradient`` holds ``t - p * sum(t)`` per position, minus the gradient of
    the summed loss; the backward pass scales it in place and returns it, so that the
    loss allocates no buffer of its own for the gradient. The buffer is then spent:
    a second backward pass through the same loss is refused, and so is one that would
    differentiate the gradient again (``create_graph=True``), which this form cannot.
    ``count``: the mean's divisor, or None for the sum.
    """

    @staticmethod
    def forward(
        ctx: Any,
        logits: torch.Tensor,
        loss_sum: torch.Tensor,
        count: torch.Tensor | None,
        negative_gradient: torch.Tensor,
    ) -> torch.Tensor:
        ctx.save_for_backward(negative_gradient, count)
        ctx.spent = False
        return loss_sum.clone() if count is None else _mean_of(loss_sum, count)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        if torch.is_grad_enabled():  # create_graph=True: a second derivative is wanted
            raise RuntimeError(
                "loom's cross-entropy against dense targets has no second derivative "
                "(its gradient comes precomputed): for create_graph=True, as in a "
                "gradient penalty or MAML, compute the loss with torch's own ops, e.g. "
                "-(targets * logits.log_softmax(dim=1)).sum(dim=1).mean()."
            )
        if ctx.spent:
            raise RuntimeError(
                "loom's cross-entropy against dense targets returns its gradient from "
                "a buffer used once: backward through the same loss twice "
                "(retain_graph=True) is not supported; compute the loss again instead."
            )
        ctx.spent = True
        negative_gradient, count = ctx.saved_tensors
        scale = grad_output if count is None else _mean_of(grad_output, count)
        return negative_gradient.mul_(-scale), None, None, None


def zero_when_nothing_counts(mean: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """A mean loss that torch computed, made 0 where ``count``, its divisor, is 0: the
    loss of a batch whose every position is ignored is 0 in loom, NaN (0/0) in torch.
    The gradient is zero in both."""
    return mean.masked_fill(count == 0, 0.0)


def _mean_of(total: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """``total / count``, and 0 when nothing counted (0/0 would be NaN): the loss of a
    batch whose every position is ignored is 0, with a zero gradient."""
    return total / count.clamp(min=1)


def dense_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """``-sum_c targets_c * log_softmax(logits)_c`` at each position, reduced.

    Args:
        logits: ``(N, C, ...)``, float32 or float64.
        targets: The logits' shape and dtype.
        reduction: ``"mean"`` over the positions whose target is not all zero (0 when
            there is none), ``"sum"``, or ``"none"`` (shape ``(N, ...)``, 0 at ignored
            positions), as ``F.cross_entropy``'s with ``ignore_index``.

    Small logits (see :data:`ONE_PASS_FROM`), ``reduction="none"`` and targets that
    require a gradient go through torch's own log-softmax, which also gives the targets
    theirs. A batch with nothing counted has a zero gradient either way.
    """
    if (
        reduction == "none"
        or logits.numel() < ONE_PASS_FROM
        or (targets.requires_grad and torch.is_grad_enabled())
    ):
        # Autograd's way: fewer operations, and a gradient for targets that want one.
        if reduction == "none":
            return position_losses(logits, targets)
        total = F.cross_entropy(logits, targets, reduction="sum")
        return _mean_of(total, targets.any(dim=1).sum()) if reduction == "mean" else total
    logits, targets = to_positions(logits), to_positions(targets)
    values = logits.detach()
    probabilities = values.softmax(dim=1)
    largest = probabilities.amax(dim=1, keepdim=True)
    log_probabilities = _log_softmax_from(values, largest)
    loss_sum = -_summed_product(log_probabilities, targets)

    def negative_gradient() -> torch.Tensor:
        mass = targets.sum(dim=1, keepdim=True)
        # Written over the probabilities, which are not needed after it: no new buffer.
        return torch.addcmul(targets, probabilities, mass, value=-1, out=probabilities)

    count = rows_with_mass(targets).sum() if reduction == "mean" else None
    return _reduced(logits, loss_sum, count, negative_gradient)


def position_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Autograd's ``-sum_c targets_c * log_softmax(logits)_c`` at each position,
    ``(N, ...)``: 0 where a target is all zero, as torch's loss of class indices is at
    ignored positions (its -0 made +0)."""
    return F.cross_entropy(logits, targets, reduction="none") + 0.0


def class_target_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    kept: torch.Tensor | None,
    class_targets: torch.Tensor,
    statistics: tuple[torch.Tensor, torch.Tensor] | None = None,
    workspace: tuple[torch.Tensor, torch.Tensor] | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Cross-entropy against ``class_targets[labels]``, the target rows of a class table,
    summed or averaged over the kept positions.

    Args:
        logits: ``(P, C)``, float32 or float64.
        labels: ``(P,)`` class indices, each in ``[0, C)`` (0 where ``kept`` is False).
        kept: ``(P,)`` bool, where the positions count; None when all of them do.
        class_targets: ``(C, C)`` in the logits' dtype: row ``c`` is class ``c``'s target.
        statistics: ``(accumulator_rows, counts)``; when given, the batch's correct
            predictions are added to them by :func:`accumulate_correct_predictions`.
        workspace: Two buffers of the logits' shape and dtype that the forward pass
            may overwrite (for the probabilities and the log-probabilities, which
            die with it), kept by a caller that calls it every step.
        reduction: ``"mean"`` (0 when no position is kept, with a zero gradient) or
            ``"sum"``.

    Returns:
        A scalar.
    """
    values = logits.detach()
    probabilities_out, log_probabilities_out = (None, None) if workspace is None else workspace
    probabilities = torch.softmax(values, dim=1, out=probabilities_out)
    largest = probabilities.amax(dim=1, keepdim=True)
    correct = None
    if statistics is not None:  # before the log-softmax, whose buffer it may borrow
        correct = label_is_prediction(probabilities, labels, largest, log_probabilities_out)
    log_probabilities = _log_softmax_from(values, largest, log_probabilities_out)
    targets = gather_class_targets(class_targets, labels, kept)
    if reduction == "sum":
        count = None
    elif kept is None:
        # torch.full, not new_tensor: no copy from the host, so no wait for the device.
        count = torch.full((), labels.numel(), device=labels.device)
    else:
        count = kept.sum()
    loss_sum = -_summed_product(log_probabilities, targets)
    if statistics is not None:
        # The log-probabilities are spent: their buffer can take the weighted probabilities.
        accumulate_correct_predictions(
            probabilities, labels, kept, *statistics, correct=correct, scratch=log_probabilities
        )

    def negative_gradient() -> torch.Tensor:
        if labels.numel() > class_targets.shape[0]:
            # Fewer sums over the table than over the batch; the same sums, bit for bit.
            mass = class_targets.sum(dim=1).index_select(0, labels).unsqueeze(1)
            if kept is not None:
                mass.mul_(kept.unsqueeze(1))
        else:
            mass = targets.sum(dim=1, keepdim=True)
        return targets.addcmul_(probabilities, mass, value=-1)

    return _reduced(logits, loss_sum, count, negative_gradient)


def gather_class_targets(
    class_targets: torch.Tensor, labels: torch.Tensor, kept: torch.Tensor | None
) -> torch.Tensor:
    """``class_targets[labels]``, ``(P, C)``: each position's target row, all zero where
    ``kept`` is False (an ignored position)."""
    targets = class_targets.index_select(0, labels)
    if kept is not None:
        targets.mul_(kept.unsqueeze(1))
    return targets


def at_least_float32(logits: torch.Tensor) -> torch.Tensor:
    """``logits`` in float32 when they are half or bfloat16: low-precision
    log-probabilities would lose the soft targets' small mass."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        return logits.float()
    return logits


def accumulate_correct_predictions(
    probabilities: torch.Tensor,
    labels: torch.Tensor,
    kept: torch.Tensor | None,
    accumulator_rows: torch.Tensor,
    counts: torch.Tensor,
    *,
    correct: torch.Tensor | None = None,
    scratch: torch.Tensor | None = None,
) -> None:
    """Adds each correctly predicted kept position's probabilities to its class's row.

    A position is correct when its label is the ``argmax`` of its probabilities (see
    :func:`label_is_prediction`). Each position is weighted by its 0/1 correctness
    instead of being selected by a boolean mask, so that no call waits for the device.
    ``correct``: that test's result, when the caller has it; ``scratch``: a buffer of
    the probabilities' shape for the weighted rows, which may be the probabilities
    themselves when the caller needs them no more.
    """
    if correct is None:
        correct = label_is_prediction(probabilities, labels)
    if kept is not None:
        correct = correct & kept
    weights = correct.to(accumulator_rows.dtype)
    weighted = torch.mul(probabilities, weights.unsqueeze(1).to(probabilities.dtype), out=scratch)
    accumulator_rows.index_add_(0, labels, weighted.to(accumulator_rows.dtype))
    counts.index_add_(0, labels, weights)


def label_is_prediction(
    probabilities: torch.Tensor,
    labels: torch.Tensor,
    largest: torch.Tensor | None = None,
    scratch: torch.Tensor | None = None,
) -> torch.Tensor:
    """Whether each row's label is ``probabilities.argmax(dim=1)``, the first largest.

    On the CPU, ``argmax`` is a scalar loop that costs as much as the softmax; where
    no row has two classes at its maximum, the label is the argmax exactly when it
    holds the maximum, which a subtraction, a sign and a sum tell. The maxima are counted
    exactly: ``p - largest`` is zero only where ``p`` equals it. A batch with a tie
    (or a NaN) goes to ``argmax``, and so do small batches (see
    :data:`COUNT_MAXIMA_FROM`), batches of 2**24 elements or more (where a float32
    count stops being exact), code under ``torch.compile`` and every batch off the
    CPU, where reading the count would wait for the device.

    Args:
        probabilities: ``(P, C)``.
        labels: ``(P,)`` class indices in ``[0, C)``.
        largest: ``probabilities.amax(dim=1, keepdim=True)``, when the caller has it.
        scratch: A spare buffer of the probabilities' shape for the count.
    """
    rows, classes = probabilities.shape
    size = rows * classes
    # Below 2**24 elements the float32 sum of -1s and 0s is exact.
    if (
        probabilities.device.type == "cpu"
        and COUNT_MAXIMA_FROM <= size < 2**24
        and not torch.compiler.is_compiling()  # reading the count would break the graph
    ):
        if largest is None:
            largest = probabilities.amax(dim=1, keepdim=True)
        # sign(p - largest) is -1 below the maximum and 0 at it, so its sum counts the
        # elements below their row's maximum. (heaviside would count the maxima, slower.)
        below = torch.sub(probabilities, largest, out=scratch).sign_().sum()
        if size + below.item() == rows:  # one maximum a row
            return probabilities.gather(1, labels.unsqueeze(1)).squeeze(1) == largest.squeeze(1)
    return probabilities.argmax(dim=1) == labels


def _log_softmax_from(
    logits: torch.Tensor, largest: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """``log_softmax(logits)`` from ``largest``, each row's largest softmax probability.

    The log-normaliser is ``max(logits) - log(largest)``: the largest probability is
    at least ``1 / C``, so its log loses nothing, and no second exponential is needed.
    ``out``: a buffer of the logits' shape to write into.
    """
    log_normaliser = logits.amax(dim=1, keepdim=True) - largest.log()
    return torch.sub(logits, log_normaliser, out=out)


def _reduced(
    logits: torch.Tensor,
    loss_sum: torch.Tensor,
    count: torch.Tensor | None,
    negative_gradient: Callable[[], torch.Tensor],
) -> torch.Tensor:
    """The mean (``loss_sum / count``) or, when ``count`` is None, the sum, with its
    gradient attached when the logits want one."""
    if not (logits.requires_grad and torch.is_grad_enabled()):
        return loss_sum if count is None else _mean_of(loss_sum, count)
    return _ReducedLossWithPrecomputedGradient.apply(logits, loss_sum, count, negative_gradient())


def rows_with_mass(targets: torch.Tensor, keepdim: bool = False) -> torch.Tensor:
    """Where a target is not all zero along dimension 1, as ``targets.any(dim=1)``: a row
    is all zero when both its extremes are. (Two vectorised reductions, where a boolean
    ``any`` costs ten times as much on the CPU at the sizes the one-pass path takes.)"""
    largest = targets.amax(dim=1, keepdim=keepdim)
    return (largest != 0) | (targets.amin(dim=1, keepdim=keepdim) != 0)


def _summed_product(buffer: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``(buffer * other).sum()``, the product written over ``buffer``.

    Not ``torch.dot``: its running float32 sums lose 1e-6 to 3e-5 of the value over
    millions of elements, where the cascade summation of ``sum`` loses 1e-8.
    """
    return buffer.mul_(other).sum()


def to_positions(values: torch.Tensor) -> torch.Tensor:
    """``(N, C, ...)`` -> ``(positions, C)``, one row per position; a view for ``(N, C)``."""
    return values.movedim(1, -1).reshape(-1, values.shape[1])


def from_positions(values: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``(positions, C)`` -> ``shape`` ``(N, C, ...)``, the inverse of :func:`to_positions`."""
    return values.reshape(shape[0], *shape[2:], shape[1]).movedim(-1, 1)
