"""Online label smoothing (Zhang et al., "Delving Deep into Label Smoothing", IEEE TIP 2021)."""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import torch
from torch import nn

from loom.functional.checks import (
    check_choice,
    check_class_indices,
    check_fraction,
    every_index_is_a_class,
)
from loom.functional.collectives import all_reduce_sum
from loom.functional.dense_cross_entropy import (
    accumulate_correct_predictions,
    at_least_float32,
    check_reduction,
    class_target_cross_entropy,
    from_positions,
    gather_class_targets,
    position_losses,
    to_positions,
)

__all__ = ["ClassIndices", "OnlineLabelSmoothingLoss"]

FIRST_EPOCH_MATRICES = ("label_smoothing", "zero", "uniform")
"""What the matrix holds before any epoch has ended: the reference criterion's label
smoothing, the authors' CIFAR code's zeros (epoch 1 trains on ``alpha * CE`` alone),
their fine-grained code's uniform ``1 / C``."""

EMPTY_COLUMNS = ("zero", "keep", "uniform")
"""What :meth:`OnlineLabelSmoothingLoss.next_epoch` gives a class with no correct
prediction in the epoch: the reference criterion's zero column, its previous column,
or the authors' uniform ``1 / C``."""

# The reference criterion's buffer names, and loom's for the same tensors.
_REFERENCE_BUFFERS = {"supervise": "matrix", "update": "accumulator", "idx_count": "counts"}


class ClassIndices(NamedTuple):
    """Class indices checked against the logits once, for several calls on one batch.

    Made by :meth:`OnlineLabelSmoothingLoss.check_targets`.
    """

    labels: torch.Tensor
    """One class index per position, flat; 0 where the position is ignored."""
    kept: torch.Tensor | None
    """Where the positions count (flat, bool), or None when none is ignored."""

    def without_last_samples(self, count: int, samples: int) -> ClassIndices:
        """These indices with the positions of the last ``count`` of ``samples`` samples
        ignored too (repeats that a ``DistributedSampler`` added, say).

        Examples:
            >>> indices = ClassIndices(torch.tensor([0, 1, 2, 1]), None)
            >>> indices.without_last_samples(1, samples=4).kept
            tensor([ True,  True,  True, False])
        """
        kept = torch.ones_like(self.labels, dtype=torch.bool) if self.kept is None else self.kept
        kept = kept.clone()
        kept[len(kept) - count * (len(kept) // samples) :] = False
        return ClassIndices(self.labels, kept)


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

    A drop-in for the widely used ``OnlineLabelSmoothing`` criterion
    (ankandrew/online-label-smoothing-pt): the same arguments in the same order
    (``alpha, n_classes, smoothing, warmup, ls_as_hard``), ``forward(logits, target)``
    returns the mean loss, ``next_epoch()`` advances the matrix, statistics accumulate
    only in ``train()`` mode and after ``warmup`` epochs, and the matrix and the
    accumulators are buffers in ``state_dict``; a state dict saved by that criterion
    (``supervise``, ``update``, ``idx_count``) loads as it is. With the default options
    its losses and matrices are that criterion's. Options reproduce the paper authors'
    code instead (zhangchbin/OnlineLabelSmoothing): ``first_epoch="zero"`` and
    ``empty_column="uniform"`` are their CIFAR script's, ``first_epoch="uniform"``,
    ``empty_column="uniform"`` and ``freeze_at=0.88`` their fine-grained one's (which
    weighs its two losses 1 : 1, twice ``alpha=0.5``'s); ``empty_column="keep"``
    keeps a class's previous column when it had no correct prediction, so that its
    soft loss does not vanish for an epoch.

    Nothing derived from the matrix is cached between calls: the per-class targets are
    built from it on every call (a ``C x C`` computation). A loop that calls it every
    step with many classes may build them once per epoch with :meth:`class_targets`
    and pass them in; and :meth:`check_targets` checks a batch's indices once for the
    several calls an algorithm makes on it. What the module does keep is scratch: two
    buffers of the logits' size that each forward pass overwrites (a fresh buffer of
    millions of elements costs more to fault into memory than a pass over it).

    The forward pass computes one softmax and uses it three times: for the loss (with
    the log-softmax read off it), for the gradient, which it forms there
    (``p * sum(t) - t`` for the target ``t``, so the backward pass only scales it), and
    for the statistics. The backward pass runs once per forward and not under
    ``create_graph=True`` (both refused with a message).

    Beyond that criterion: statistics are kept in float32 whatever the autocast dtype;
    no step waits for the device (each sample is weighted by its 0/1 correctness instead
    of being selected by a boolean mask); positions equal to ``ignore_index`` are
    skipped; logits ``(N, C, ...)`` count one sample per position; ``reduction`` is
    torch's; and when ``torch.distributed`` is initialised, :meth:`next_epoch` sums the
    statistics over all processes first (one all-reduce), so every process holds the
    same matrix, one that does not depend on the number of processes. Every process
    must then call it.

    Args:
        alpha: Weight of the hard-label cross-entropy, in [0, 1]; the paper uses 0.5.
        n_classes: The number of classes ``C``, at least 2.
        smoothing: The first epoch's label smoothing, in [0, 1] (``1 - smoothing`` on
            the diagonal, ``smoothing / (C - 1)`` elsewhere); also the hard loss's
            with ``ls_as_hard``.
        warmup: Epochs (calls of :meth:`next_epoch`) before statistics are accumulated;
            until then the matrix stays the first epoch's.
        ls_as_hard: The hard loss against label-smoothed targets (``1 - smoothing``
            on the true class, ``smoothing / (C - 1)`` on the others) instead of one-hot.
        ignore_index: Target positions equal to it count in neither loss nor statistics.
        first_epoch: The matrix before any statistics: ``"label_smoothing"`` (the
            reference's), ``"zero"`` or ``"uniform"`` (see :data:`FIRST_EPOCH_MATRICES`).
        empty_column: What a class with no correct prediction in an epoch gets:
            ``"zero"`` (the reference's), ``"keep"`` or ``"uniform"`` (see
            :data:`EMPTY_COLUMNS`).
        freeze_at: When set, a column whose largest value has reached it keeps its
            values from then on, as in the authors' fine-grained code (0.88 there);
            a class with no correct prediction still gets its ``empty_column``.
        reduction: ``"mean"`` over the positions not ignored (0 when there is none),
            ``"sum"``, or ``"none"`` (one loss per position, shape ``(N, ...)``).

    Examples:
        >>> import torch
        >>> criterion = OnlineLabelSmoothingLoss(alpha=0.5, n_classes=3, smoothing=0.1)
        >>> logits = torch.tensor([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0]])
        >>> loss = criterion(logits, torch.tensor([0, 1]))  # both correct: accumulated
        >>> criterion.next_epoch()
        >>> criterion.matrix[:, 0]  # class 0's soft label: its correct sample's softmax
        tensor([0.9647, 0.0177, 0.0177])
        >>> criterion.matrix[:, 2]  # class 2 had no correct prediction: zero
        tensor([0., 0., 0.])
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
        warmup: int = 0,
        ls_as_hard: bool = False,
        *,
        ignore_index: int = -100,
        first_epoch: Literal["label_smoothing", "zero", "uniform"] = "label_smoothing",
        empty_column: Literal["zero", "keep", "uniform"] = "zero",
        freeze_at: float | None = None,
        reduction: Literal["mean", "sum", "none"] = "mean",
    ):
        super().__init__()
        self.alpha = check_fraction(alpha, "alpha")
        if type(n_classes) is not int or n_classes < 2:
            raise ValueError(f"n_classes={n_classes!r} must be an int >= 2.")
        self.smoothing = check_fraction(smoothing, "smoothing")
        if type(warmup) is not int or warmup < 0:
            raise ValueError(f"warmup={warmup!r} must be an int >= 0 (epochs).")
        if not isinstance(ls_as_hard, bool):
            raise TypeError(f"ls_as_hard={ls_as_hard!r} must be True or False.")
        self.first_epoch = check_choice(first_epoch, "first_epoch", FIRST_EPOCH_MATRICES)
        self.empty_column = check_choice(empty_column, "empty_column", EMPTY_COLUMNS)
        if ls_as_hard and self.smoothing == 1:
            raise ValueError(
                "ls_as_hard=True with smoothing=1.0 would give the true class no mass in the "
                "hard targets; use a smoothing below 1."
            )
        if freeze_at is not None and not (isinstance(freeze_at, int | float) and freeze_at > 0):
            raise ValueError(f"freeze_at={freeze_at!r} must be a positive number or None.")
        self.freeze_at = freeze_at
        self.n_classes = n_classes
        self.warmup, self.ls_as_hard = warmup, ls_as_hard
        self.ignore_index = ignore_index
        self.reduction = check_reduction(reduction)
        initial = self._first_epoch_matrix()
        # Both are stored class by class in memory (their transposes are contiguous): a
        # batch reads its classes' targets, and adds to its classes' sums, as whole rows.
        self.register_buffer("matrix", initial.t().contiguous().t())
        self.register_buffer("accumulator", torch.zeros(n_classes, n_classes).t())
        self.register_buffer("counts", torch.zeros(n_classes))
        self.register_buffer("epoch", torch.zeros((), dtype=torch.long))
        self._collecting = warmup == 0  # follows the epoch count: no device read per step
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
        collecting = self.training and self._collecting
        statistics = (self.accumulator.t(), self.counts) if collecting else None
        if self.reduction == "none":
            return self._position_losses(logits, positions, labels, kept, rows, statistics)
        workspace = self._workspace(positions)  # None where it would not pay
        return class_target_cross_entropy(
            positions, labels, kept, rows.to(positions.dtype), statistics, workspace, self.reduction
        )

    def _position_losses(
        self,
        logits: torch.Tensor,
        positions: torch.Tensor,
        labels: torch.Tensor,
        kept: torch.Tensor | None,
        rows: torch.Tensor,
        statistics: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> torch.Tensor:
        """``reduction="none"``: autograd's cross-entropy at each position, ``(N, ...)``."""
        targets = gather_class_targets(rows.to(positions.dtype), labels, kept)
        losses = position_losses(positions, targets)
        if statistics is not None:
            probabilities = positions.detach().softmax(dim=1)
            accumulate_correct_predictions(
                probabilities, labels, kept, *statistics, scratch=probabilities
            )
        return losses.reshape(logits.shape[0], *logits.shape[2:])

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
        """Row ``c``: class ``c``'s whole target, ``alpha * hard(c) + (1 - alpha) * S[:, c]``,
        where ``hard(c)`` is the one-hot label (or, with ``ls_as_hard``, its label
        smoothing)."""
        targets = self.matrix.t() * (1 - self.alpha)  # contiguous rows, as the matrix is stored
        if self.ls_as_hard:  # symmetric: its rows are its columns
            targets.add_(self._label_smoothing_matrix(self.matrix.device), alpha=self.alpha)
        else:
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
        """Adds the correctly predicted samples' probabilities to their classes' columns
        (in ``train()`` mode or not; during ``warmup``, nothing)."""
        if not self._collecting:
            return
        labels, kept = self._indices(logits, target)
        # From detached logits, so no graph is built (a no_grad context costs more).
        probabilities = to_positions(logits.detach()).float().softmax(dim=1)
        accumulate_correct_predictions(
            probabilities, labels, kept, self.accumulator.t(), self.counts, scratch=probabilities
        )

    @torch.no_grad()
    def next_epoch(self) -> None:
        """Makes each column of the matrix the mean of what it gathered, then starts over.

        A column with nothing gathered becomes what ``empty_column`` says, and one
        that has reached ``freeze_at`` stays. During ``warmup`` the matrix is left as
        it is. Under ``torch.distributed`` the statistics are summed over all processes
        first; every process must call this.
        """
        if self._collecting:
            # One packed (C + 1) x C buffer, summed over every process of a torchrun job.
            statistics = all_reduce_sum(torch.cat([self.accumulator, self.counts.unsqueeze(0)]))
            accumulator, counts = statistics[:-1], statistics[-1]
            means = accumulator / counts.clamp(min=1)  # a column with nothing: zero
            if self.empty_column != "zero":
                empty = self.matrix if self.empty_column == "keep" else 1 / self.n_classes
                means = torch.where(counts > 0, means, empty)
            if self.freeze_at is not None:
                frozen = (self.matrix.amax(dim=0) >= self.freeze_at) & (counts > 0)
                means = torch.where(frozen, self.matrix, means)
            self.matrix.copy_(means)
            self.accumulator.zero_()
            self.counts.zero_()
        self.epoch += 1
        self._collecting = self._collecting or self.warmup <= self._epochs_ended()

    def _epochs_ended(self) -> int:
        """The epoch counter, read from its buffer (once per epoch: it may be on a GPU)."""
        return int(self.epoch)

    def _first_epoch_matrix(self) -> torch.Tensor:
        size = self.n_classes
        if self.first_epoch == "zero":
            return torch.zeros(size, size)
        if self.first_epoch == "uniform":
            return torch.full((size, size), 1 / size)
        return self._label_smoothing_matrix()

    def _label_smoothing_matrix(self, device: torch.device | None = None) -> torch.Tensor:
        """``1 - smoothing`` on the diagonal, ``smoothing / (C - 1)`` elsewhere."""
        size = self.n_classes
        matrix = torch.full((size, size), self.smoothing / (size - 1), device=device)
        return matrix.fill_diagonal_(1 - self.smoothing)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        names = {prefix + old: prefix + new for old, new in _REFERENCE_BUFFERS.items()}
        if all(name in state_dict for name in names) and prefix + "matrix" not in state_dict:
            # Saved by the reference criterion: the same tensors in the same layout
            # (column c for class c) under its names. It keeps no epoch count in its
            # state dict, so this module's stays as it is.
            for old, new in names.items():
                state_dict[new] = state_dict.pop(old)
            state_dict.setdefault(prefix + "epoch", self.epoch.detach().clone())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._collecting = self.warmup <= self._epochs_ended()

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
        options = {"alpha": self.alpha, "n_classes": self.n_classes, **self.variants()}
        return ", ".join(f"{name}={value!r}" for name, value in options.items())

    def variants(self) -> dict[str, Any]:
        """The options set away from their defaults (the reference criterion's), by name."""
        defaults = {
            "smoothing": 0.1,
            "warmup": 0,
            "ls_as_hard": False,
            "ignore_index": -100,
            "first_epoch": "label_smoothing",
            "empty_column": "zero",
            "freeze_at": None,
            "reduction": "mean",
        }
        return {
            name: getattr(self, name)
            for name, default in defaults.items()
            if getattr(self, name) != default
        }

    def _table(self, class_targets: torch.Tensor | None) -> torch.Tensor:
        """The class targets a caller kept, or the current matrix's."""
        return self.class_targets() if class_targets is None else class_targets

    def _indices(self, logits: torch.Tensor, target: torch.Tensor | ClassIndices) -> ClassIndices:
        return target if isinstance(target, ClassIndices) else self.check_targets(logits, target)
