"""Knowledge distillation (Hinton et al., 2015): a student trained towards a teacher's
softened probabilities, beside its own targets."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from loom.functional.checks import check_fraction, check_positive
from loom.functional.dense_cross_entropy import at_least_float32

__all__ = ["distillation_loss"]


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target_loss: torch.Tensor,
    temperature: float = 4.0,
    alpha: float = 0.9,
) -> torch.Tensor:
    """``alpha * T**2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) *
    target_loss``: Hinton et al.'s blend of the teacher's soft targets and the hard ones.

    The KL divergence is summed over the classes (dimension 1) and averaged over every
    other position: over the batch for ``(N, C)`` logits (torch's ``"batchmean"``), over
    the batch and the positions for ``(N, C, ...)``. Dividing by ``T`` softens both
    distributions, which shrinks the gradient of the KL term by ``1 / T**2``; the
    ``T**2`` factor gives it back, so that ``alpha`` weighs the two terms alike at every
    temperature. The teacher's logits are detached: no gradient reaches the teacher.
    Both are taken in float32 at least, also under autocast.

    Args:
        student_logits: The student's unnormalised scores, ``(N, C, ...)``.
        teacher_logits: The teacher's, for the same inputs, of the same shape.
        target_loss: The student's loss against the (hard or soft) targets, a scalar
            tensor (e.g. ``F.cross_entropy(student_logits, targets)``).
        temperature: ``T`` > 0: how much both distributions are softened; 1 leaves them.
        alpha: The weight of the teacher's term, in [0, 1]; 0 is ``target_loss`` alone.

    Returns:
        The blended loss, a scalar.

    Raises:
        ValueError: The logits' shapes differ (the teacher has another number of
            classes), they have no class dimension, ``target_loss`` is not a scalar,
            ``temperature`` is not positive and finite, or ``alpha`` lies outside [0, 1].
        TypeError: ``target_loss`` is not a tensor, or an argument is not a number.

    Examples:
        >>> import torch
        >>> student = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
        >>> target_loss = torch.tensor(0.5)
        >>> distillation_loss(student, student, target_loss, alpha=0.5)  # the same: KL is 0
        tensor(0.2500)
        >>> teacher = torch.tensor([[0.0, 2.0], [0.0, 1.0]])
        >>> round(distillation_loss(student, teacher, target_loss, temperature=1.0).item(), 4)
        0.7354
    """
    temperature = check_positive(temperature, "temperature")
    alpha = check_fraction(alpha, "alpha")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"the teacher's logits {tuple(teacher_logits.shape)} do not have the shape of the "
            f"student's {tuple(student_logits.shape)}: both must score the same classes "
            "(dimension 1) for the same inputs."
        )
    if student_logits.dim() < 2:
        raise ValueError(
            f"logits of shape {tuple(student_logits.shape)} have no class dimension; "
            "expected (N, C, ...)."
        )
    if not isinstance(target_loss, torch.Tensor):
        raise TypeError(f"target_loss must be a scalar tensor, got {type(target_loss).__name__}.")
    if target_loss.dim() != 0:
        raise ValueError(
            f"target_loss must be a scalar (a reduced loss), got shape {tuple(target_loss.shape)}."
        )
    student = at_least_float32(student_logits) / temperature
    teacher = at_least_float32(teacher_logits.detach()) / temperature
    # kl_div(log q, p) = p * (log p - log q), 0 where p is 0.
    divergence = F.kl_div(
        F.log_softmax(student, dim=1), F.softmax(teacher, dim=1), reduction="none"
    )
    kl = divergence.sum(dim=1).mean()
    return alpha * temperature**2 * kl + (1 - alpha) * target_loss
