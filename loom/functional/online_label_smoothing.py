"""Online label smoothing (Zhang et al., "Delving Deep into Label Smoothing", IEEE TIP 2021)."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

from loom.functional.checks import check_class_indices, check_fraction, every_index_is_a_class
from loom.functional.collectives import all_reduce_sum
from loom.functional.dense_cross_entropy import (
    accumulate_correct_predictions,
    at_least_float32,
    class_target_cross_entropy,
    from_positions,
    gather_class_targets,
    to_positions,
)

__all__ = ["ClassIndices", "OnlineLabelSmoothingLoss"]


class ClassIndices(NamedTuple):
    """Class indices checked against the logits once, for several calls on one batch.

    Made by :meth:`OnlineLabelSmoothingLoss.check_targets`.
    """

    labels: torch.Tensor
    """One class index per position, flat; 0 where the position is ignored."""
    kept: torch.Tensor | None
    """Where the positions count (flat, bool), or None when none is ignored."""


class OnlineLabelSmoothingLoss(nn.Module):
    """Cross-entropy against soft labels learned from the model's own correct predictions.

    A ``C x C`` matrix ``S`` holds one soft label per class: **column** ``c`` is the
    target for class ``c``. The first epoch uses ``1 - smoothing`` on the diagonal and
    ``smoothing / (C - 1)`` elsewhere. In ``train()`` mode every sample whose prediction
    is correct adds its softmax probabilities to its class's column of an accumulator;
    :meth:`next_epoch` makes each column of ``S`` the mean of what it gathered. The loss
    is ``alpha * CE(logits, y) + (1 - alpha) * CE(logits, S[:, y])``, computed as one
    cross-entropy against ``alpha * onehot(y) + (1 - alpha) * S[:, y]`` (cross-entropy is
    linear in its target).

    A drop-in for the widely used ``OnlineLabelSmoothing`` criterion: same arguments,
    ``forward(logits, target)`` returns the mean loss, ``next_epoch()`` advances the
    matrix, statistics accumulate only in ``train()`` mode, and the matrix and the
    accumulators are buffers in ``state_dict``. Its losses and matrices equal that
    criterion's whenever every class had at least one correct prediction in the epoch.
    It differs on purpose in two ways: a class with no correct prediction keeps its
    previous column (instead of an all-zero one, which silently drops its soft loss),
    and a ``next_epoch()`` with nothing accumulated leaves the matrix as it is.

    Nothing derived from the matrix is cached between calls: the per-class targets are
    built from it on every call (a ``C x C`` computation). A loop that calls it every
    step with many classes may build them once per epoch with :meth:`class_targets`
    and pass them in; and :meth:`check_targets` checks a batch's indices once for the
    several calls an algorithm makes on it. What the module does keep is scratch: two
    buffers of the logits' size that each forward pass overwrites (a fresh buffer of
    millions of elements costs more to fault into memory than a pass over it).

    The forward pass computes one softmax and uses it three times: for the loss (with
    the log-softmax read off it), for the gradient, which it forms there
    (``p - alpha * onehot(y) - (1 - alpha) * S[:, y]``, so the backward pass only
    scales it), and for the statistics. The backward pass runs once per forward and
    not under ``create_graph=True`` (both refused with a message).

    Beyond that criterion: statistics are kept in float32 whatever the autocast dtype;
    no step waits for the device (each sample is weighted by its 0/1 correctness instead
    of being selected by a boolean mask); positions equal to ``ignore_index`` are
    skipped; logits ``(N, C, ...)`` count one sample per position; and when
    ``torch.distributed`` is initialised, :meth:`next_epoch` sums the statistics over
    all processes first (one all-reduce), so every process holds the same matrix, one
    that does not depend on the number of processes. Every process must then call it.

    Args:
        alpha: Weight of the hard-label cross-entropy, in [0, 1]; the paper uses 0.5.
        n_classes: The number of classes ``C``, at least 2.
        smoothing: The first epoch's label smoothing, in [0, 1].
        ignore_index: Target positions equal to it count in neither loss nor statistics.

    Examples:
        >>> import torch
        >>> criterion = OnlineLabelSmoothingLoss(alpha=0.5, n_classes=3, smoothing=0.1)
        >>> logits = torch.tensor([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0]])
        >>> loss = criterion(logits, torch.tensor([0, 1]))  # both correct: accumulated
        >>> criterion.next_epoch()
        >>> criterion.matrix[:, 0]  # class 0's soft label: its correct sample's softmax
        tensor([0.9647, 0.0177, 0.0177])
        >>> criterion.matrix[:, 2]  # class 2 had no correct prediction: kept
        tensor([0.0500, 0.0500, 0.9000])
    """

    matrix: torch.Tensor
    accumulator: torch.Tensor
    counts: torch.Tensor
    epoch: torch.Tensor

    def __init__(
        self,
        alpha: float = 0.5,
        n_classes: int | None = None,
        smoothing: float = 0.1,
        ignore_index: int = -100,
    ):
        super().__init__()
        self.alpha = check_fraction(alpha, "alpha")
        if type(n_classes) is not int or n_classes < 2:
            raise ValueError(f"n_classes={n_classes!r} must be an int >= 2.")
        smoothing = check_fraction(smoothing, "smoothing")
        self.n_classes = n_classes
        self.ignore_index = ignore_index
        initial = torch.full((n_classes, n_classes), smoothing / (n_classes - 1))
        initial.fill_diagonal_(1 - smoothing)
        # Both are stored class by class in memory (their transposes are contiguous): a
        # batch reads its classes' targets, and adds to its classes' sums, as whole rows.
        self.register_buffer("matrix", initial.t().contiguous().t())
        self.register_buffer("accumulator", torch.zeros(n_classes, n_classes).t())
        self.register_buffer("counts", torch.zeros(n_classes))
        self.register_buffer("epoch", torch.zeros((), dtype=torch.long))
        self._scratch: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(
        self,
        logits: torch.Tensor,
        target: torch.Tensor | ClassIndices,
        *,
        class_targets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The mean loss; in ``train()`` mode the batch's correct predictions are accumulated.

        Args:
            logits: ``(N, C, ...)``.
            target: Class indices ``(N, ...)``, or what :meth:`check_targets` made of them.
            class_targets: :meth:`class_targets` of the current matrix, when the caller
                keeps them; built here otherwise.
        """
        labels, kept = self._indices(logits, target)
        rows = self._table(class_targets)
        positions = at_least_float32(to_positions(logits))
        statistics = (self.accumulator.t(), self.counts) if self.training else None
        workspace = self._workspace(positions)  # None where it would not pay
        return class_target_cross_entropy(
            positions, labels, kept, rows.to(positions.dtype), statistics, workspace
        )

    def check_targets(self, logits: torch.Tensor, target: torch.Tensor) -> ClassIndices:
        """Checks ``target`` against ``logits`` and flattens it, for the other methods.

        Raises:
            ValueError: The logits do not have ``n_classes`` classes in dimension 1,
                ``target`` is not integer indices of the logits' sample shape, or an
                index is out of range (eagerly on the CPU; elsewhere an asynchronous
                device assertion, so that no call waits for the device).
        """
        if logits.dim() < 2 or logits.shape[1] != self.n_classes:
            raise ValueError(
                f"logits of shape {tuple(logits.shape)} do not have n_classes={self.n_classes} "
                "classes in dimension 1; expected (N, C, ...) with C = n_classes."
            )
        index_shape = (logits.shape[0], *logits.shape[2:])
        if target.shape != index_shape or target.is_floating_point() or target.dtype == torch.bool:
            raise ValueError(
                f"target must be integer class indices of shape {index_shape}, got "
                f"{target.dtype} {tuple(target.shape)}."
            )
        # One min/max pass on the CPU tells the common case, nothing ignored and all
        # in range, which then skips every masking operation.
        if every_index_is_a_class(target, self.n_classes, self.ignore_index):
            return ClassIndices(target.reshape(-1).long(), None)
        kept = target != self.ignore_index
        check_class_indices(target, kept, self.n_classes, self.ignore_index)
        return ClassIndices(torch.where(kept, target, 0).reshape(-1).long(), kept.reshape(-1))

    def class_targets(self) -> torch.Tensor:
        """Row ``c``: class ``c``'s whole target, ``alpha * onehot(c) + (1 - alpha) * S[:, c]``."""
        targets = self.matrix.t() * (1 - self.alpha)  # contiguous rows, as the matrix is stored
        targets.diagonal().add_(self.alpha)
        return targets

    def soft_targets(
        self,
        logits: torch.Tensor,
        target: torch.Tensor | ClassIndices,
        *,
        class_targets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Dense targets ``alpha * onehot + (1 - alpha) * S[:, y]`` with the logits' shape.

        Ignored positions get an all-zero target; the dtype is the logits' but never
        below float32. ``target`` and ``class_targets`` are as for :meth:`forward`.
        """
        labels, kept = self._indices(logits, target)
        targets = gather_class_targets(self._table(class_targets), labels, kept)
        dtype = torch.promote_types(logits.dtype, torch.float32)
        return from_positions(targets, logits.shape).to(dtype)

    def accumulate(self, logits: torch.Tensor, target: torch.Tensor | ClassIndices) -> None:
        """Adds the correctly predicted samples' probabilities to their classes' columns."""
        labels, kept = self._indices(logits, target)
        # From detached logits, so no graph is built (a no_grad context costs more).
        probabilities = to_positions(logits.detach()).float().softmax(dim=1)
        accumulate_correct_predictions(
            probabilities, labels, kept, self.accumulator.t(), self.counts, scratch=probabilities
        )

    @torch.no_grad()
    def next_epoch(self) -> None:
        """Makes each column of the matrix the mean of what it gathered, then starts over.

        A column with nothing gathered keeps its values. Under ``torch.distributed`` the
        statistics are summed over all processes first; every process must call this.
        """
        # One packed (C + 1) x C buffer, summed over every process of a torchrun job.
        statistics = all_reduce_sum(torch.cat([self.accumulator, self.counts.unsqueeze(0)]))
        accumulator, counts = statistics[:-1], statistics[-1]
        means = accumulator / counts.clamp(min=1)
        self.matrix.copy_(torch.where(counts > 0, means, self.matrix))
        self.accumulator.zero_()
        self.counts.zero_()
        self.epoch += 1

    def _workspace(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Two scratch buffers shaped like ``positions``, kept from one call to the next.

        On the CPU a fresh buffer of millions of elements costs more to fault into
        memory than a pass over it; these hold only what dies inside one forward pass.
        CUDA's caching allocator already reuses memory, and compiled code keeps its
        own buffers: there, none is kept.
        """
        if positions.device.type != "cpu" or torch.compiler.is_compiling():
            return None
        scratch = self._scratch
        if (
            scratch is None
            or scratch[0].shape != positions.shape
            or scratch[0].dtype != positions.dtype
        ):
            scratch = self._scratch = (torch.empty_like(positions), torch.empty_like(positions))
        return scratch

    def _apply(self, fn, recurse=True):
        self._scratch = None  # moved or cast: the next call makes its own
        return super()._apply(fn, recurse)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_scratch"] = None  # scratch is not state: no copy or pickle carries it
        return state

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, n_classes={self.n_classes}"

    def _table(self, class_targets: torch.Tensor | None) -> torch.Tensor:
        """The class targets a caller kept, or the current matrix's."""
        return self.class_targets() if class_targets is None else class_targets

    def _indices(self, logits: torch.Tensor, target: torch.Tensor | ClassIndices) -> ClassIndices:
        return target if isinstance(target, ClassIndices) else self.check_targets(logits, target)
