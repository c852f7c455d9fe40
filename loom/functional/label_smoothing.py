"""Label smoothing (Szegedy et al., 2016) as a function of the logits and targets."""

from __future__ import annotations

import weakref
from typing import NamedTuple

import torch

from loom.functional.checks import check_class_indices, check_fraction, every_index_is_a_class
from loom.functional.dense_cross_entropy import rows_with_mass

__all__ = ["fused_form", "smooth_labels"]


class _SmoothedFrom(NamedTuple):
    """What :func:`smooth_labels` built one dense target tensor from."""

    targets: weakref.ref
    indices: torch.Tensor
    smoothing: float
    ignore_index: int
    state: tuple[int, ...]
    """Both tensors' version counters and data pointers when the targets were built."""


_NOTES: dict[int, _SmoothedFrom] = {}
"""A note for each live target tensor that smooth_labels built from class indices, by
``id``. Held here rather than on the tensor, so that no copy, deepcopy or pickle of the
targets carries it; each note goes when its targets are freed."""


def _state(targets: torch.Tensor, indices: torch.Tensor) -> tuple[int, ...]:
    return (targets._version, indices._version, targets.data_ptr(), indices.data_ptr())


def _note(
    targets: torch.Tensor, indices: torch.Tensor, smoothing: float, ignore_index: int
) -> None:
    if targets.is_inference() or indices.is_inference():
        return  # inference tensors keep no version counter: an edit could not be told

    key = id(targets)

    def forget(reference: weakref.ref) -> None:
        note = _NOTES.get(key)
        if note is not None and note.targets is reference:  # not a later tensor's note
            del _NOTES[key]

    reference = weakref.ref(targets, forget)
    state = _state(targets, indices)
    _NOTES[key] = _SmoothedFrom(reference, indices, smoothing, ignore_index, state)


def fused_form(targets: torch.Tensor) -> tuple[torch.Tensor, float, int] | None:
    """``(indices, smoothing, ignore_index)`` when ``targets`` are, unchanged, what
    :func:`smooth_labels` built from those class indices; None otherwise.

    A loss can then compute the same cross-entropy with
    ``F.cross_entropy(logits, indices, label_smoothing=smoothing, ignore_index=...)``,
    which never reads the dense targets. The answer is None for any other tensor (a
    copy, a view, a cast, a deepcopy or unpickled copy), once the targets or the indices
    have been edited in place (their version counters move) or given new storage, and
    for targets that require a gradient, which the fused kernel would not give them.
    An edit that bypasses autograd's version counter (through ``.data`` or a NumPy view)
    cannot be seen, here as in autograd itself.
    """
    note = _NOTES.get(id(targets))
    if (
        note is None
        or note.targets() is not targets
        or targets.requires_grad
        or _state(targets, note.indices) != note.state
    ):
        return None
    return note.indices, note.smoothing, note.ignore_index


def smooth_labels(
    logits: torch.Tensor,
    target: torch.Tensor,
    smoothing: float = 0.1,
    ignore_index: int = -100,
) -> torch.Tensor:
    """Dense label-smoothed targets: ``(1 - smoothing) * onehot + smoothing / C``.

    The convention of ``F.cross_entropy(label_smoothing=...)``, Composer and timm:
    the smoothing mass is spread over all ``C`` classes, the true one included.
    Dense targets get Composer's ``(1 - smoothing) * targets + smoothing / C``, row by
    row, whatever a row sums to (``[1, 1, 0, 0]`` with 0.2 gives ``[.85, .85, .05, .05]``),
    except that a row that is all zero, loom's mark of an ignored position, stays
    all zero.

    Args:
        logits: The model's outputs, ``(N, C, ...)``; only their shape, dtype and
            device are used.
        target: Class indices of shape ``(N, ...)`` (any integer dtype), or dense
            targets with the shape of ``logits`` (one-hot, already soft, or any
            non-negative weights), to which the same formula is applied.
        smoothing: In [0, 1]: 0 gives the one-hot targets, 1 the uniform distribution.
        ignore_index: Index positions equal to it get an all-zero target, which
            :func:`soft_cross_entropy` leaves out of its mean. Dense rows that are
            all zero stay all zero.

    Returns:
        Targets with the shape of ``logits`` and its floating dtype, but never
        below float32 (in bfloat16 the smoothing mass of large ``C`` rounds away).
        Built from class indices, they are noted (beside them, not on them) as made
        from those indices, so that :func:`loom.functional.soft_cross_entropy` can
        compute its loss with torch's fused label-smoothing kernel instead of reading
        them (see :func:`fused_form`).

    Raises:
        TypeError: ``smoothing`` is not a number, or ``logits``/``target`` are not tensors.
        ValueError: ``smoothing`` is outside [0, 1] or NaN; ``target`` has neither
            the index shape nor the logits' shape; indices are floating point; a
            class index is out of range (checked eagerly on the CPU; on CUDA by an
            asynchronous device assertion, so that no call waits for the device).

    Examples:
        >>> import torch
        >>> logits = torch.zeros(2, 4)
        >>> smooth_labels(logits, torch.tensor([1, -100]), smoothing=0.2)
        tensor([[0.0500, 0.8500, 0.0500, 0.0500],
                [0.0000, 0.0000, 0.0000, 0.0000]])
        >>> smooth_labels(logits, torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0] * 4]), smoothing=0.2)
        tensor([[0.8500, 0.8500, 0.0500, 0.0500],
                [0.0000, 0.0000, 0.0000, 0.0000]])
    """
    smoothing = check_fraction(smoothing, "smoothing")
    if not isinstance(logits, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError(
            f"smooth_labels takes tensors, got logits {type(logits).__name__} and "
            f"target {type(target).__name__}."
        )
    if logits.dim() < 2:
        raise ValueError(f"logits must have shape (N, C, ...), got {tuple(logits.shape)}.")
    num_classes = logits.shape[1]
    dtype = torch.promote_types(logits.dtype, torch.float32)
    if target.shape == logits.shape and target.is_floating_point():
        target = target.to(dtype)
        # The uniform part goes to every row but the all-zero (ignored) ones.
        counted = rows_with_mass(target, keepdim=True)
        return torch.add(target * (1 - smoothing), counted, alpha=smoothing / num_classes)
    index_shape = (logits.shape[0], *logits.shape[2:])
    if target.shape != index_shape:
        raise ValueError(
            f"target of shape {tuple(target.shape)} fits neither class indices of shape "
            f"{index_shape} nor dense targets of the logits' shape {tuple(logits.shape)}."
        )
    if target.is_floating_point() or target.dtype == torch.bool:
        raise ValueError(
            f"class indices must be an integer tensor, got {target.dtype}; "
            "convert them with target.long()."
        )
    off_value = smoothing / num_classes
    on_value = 1 - smoothing + off_value
    if every_index_is_a_class(target, num_classes, ignore_index):
        # The common case, told apart by one min/max pass: no row is ignored.
        targets = torch.full(logits.shape, off_value, dtype=dtype, device=logits.device)
        targets.scatter_(1, target.long().unsqueeze(1), on_value)
    else:
        kept = target != ignore_index
        check_class_indices(target, kept, num_classes, ignore_index)
        # One output allocation: every row starts at the off-value (0 where ignored),
        # then one scatter writes the on-value (0 where ignored) at the true class.
        kept_rows = kept.to(dtype).unsqueeze(1)
        targets = torch.empty(logits.shape, dtype=dtype, device=logits.device)
        targets.copy_((kept_rows * off_value).expand(logits.shape))
        class_index = torch.where(kept, target, 0).long().unsqueeze(1)
        targets.scatter_(1, class_index, kept_rows * on_value)
    _note(targets, target, smoothing, ignore_index)
    return targets
