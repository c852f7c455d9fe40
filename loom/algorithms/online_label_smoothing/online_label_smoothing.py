"""OnlineLabelSmoothing: soft labels learned per class from the model's correct predictions."""

from __future__ import annotations

from typing import Any, Literal

import torch

from loom.functional import ClassIndices, OnlineLabelSmoothingLoss
from loom.trainer import (
    Algorithm,
    Artifact,
    BatchKey,
    State,
    changes,
    reads,
    restores,
    validate_batch_key,
)

__all__ = ["OnlineLabelSmoothing"]


class OnlineLabelSmoothing(Algorithm):
    """Trains against ``alpha * onehot + (1 - alpha) * S[:, y]``, learning ``S`` as it goes.

    ``S`` starts as label smoothing (``1 - smoothing`` on the diagonal) and, at every
    ``epoch_end``, each of its columns becomes the mean softmax of the epoch's correctly
    predicted training samples of that class (see
    :class:`loom.functional.OnlineLabelSmoothingLoss`, whose matrix logic this uses).
    At ``before_loss`` the run's targets are replaced by those soft targets; at
    ``after_loss`` the originals go back and the batch's correct predictions are
    accumulated from ``state.outputs``, leaving out the samples a ``DistributedSampler``
    repeated (``state.repeated_samples``), so that the matrix does not depend on the
    number of ranks. Evaluation never touches the statistics, and a second pass of a
    batch (``state.recomputing``: SAM's) counts nothing again.

    Each class's whole target is derived from the matrix once per epoch (and after a
    checkpoint is loaded), not once per batch; a batch's class indices are checked
    once, at ``before_loss``, for both hooks.

    Args:
        n_classes: The number of classes, at least 2.
        alpha: Weight of the hard labels, in [0, 1]; the paper uses 0.5.
        smoothing: The first epoch's label smoothing, in [0, 1].
        target_key: Where the targets are in a batch, when not at the run's
            ``target_key`` (int, str or (getter, setter)); None uses the run's.
        warmup: Epochs before statistics are accumulated (the reference's warm-up).
        ls_as_hard: Label smoothing, not one-hot, as the hard targets.
        first_epoch: The matrix before any statistics: ``"label_smoothing"``,
            ``"zero"`` or ``"uniform"``.
        empty_column: What a class with no correct prediction in an epoch gets:
            ``"zero"``, ``"keep"`` (its previous column) or ``"uniform"``.
        freeze_at: A column whose largest value reaches it keeps its values (the
            authors' fine-grained code: 0.88); None never freezes.

    These five are the variants of the reference criterion and of the paper's code, as
    for :class:`loom.functional.OnlineLabelSmoothingLoss`; the method card has a table
    of which setting reproduces which code.

    Examples:
        >>> from loom.algorithms import OnlineLabelSmoothing
        >>> algorithm = OnlineLabelSmoothing(n_classes=3, alpha=0.5)
        >>> algorithm.matrix.shape
        torch.Size([3, 3])
    """

    effects = (
        reads(
            "targets",
            at="before_loss",
            needs="original",
            hint="It looks its soft targets up by class index, which dense targets are not.",
        ),
        changes(
            "targets",
            at="before_loss",
            how="smooths",
            hint="Online label smoothing starts from label smoothing and learns its own: "
            "keep one of the two.",
        ),
        restores("targets", at="after_loss"),
        reads("targets", at="after_loss", needs="original"),
    )

    def __init__(
        self,
        n_classes: int,
        alpha: float = 0.5,
        smoothing: float = 0.1,
        target_key: BatchKey | None = None,
        *,
        warmup: int = 0,
        ls_as_hard: bool = False,
        first_epoch: Literal["label_smoothing", "zero", "uniform"] = "label_smoothing",
        empty_column: Literal["zero", "keep", "uniform"] = "zero",
        freeze_at: float | None = None,
    ):
        # Private: the class targets below follow its matrix, so only this class changes it.
        self._criterion = OnlineLabelSmoothingLoss(
            alpha,
            n_classes,
            smoothing,
            warmup,
            ls_as_hard,
            first_epoch=first_epoch,
            empty_column=empty_column,
            freeze_at=freeze_at,
        )
        if target_key is not None:
            validate_batch_key(target_key, "target_key")
        self.target_key = target_key
        self._class_targets = self._criterion.class_targets()
        self._original_targets: Any = None
        self._indices: ClassIndices | None = None

    @property
    def matrix(self) -> torch.Tensor:
        """The current soft labels, column ``c`` for class ``c`` (a copy, on the CPU)."""
        return self._criterion.matrix.detach().cpu().clone()

    def init(self, state: State) -> None:
        self._criterion.to(state.device)
        self._class_targets = self._criterion.class_targets()

    def before_loss(self, state: State) -> None:
        targets = state.get_targets(self.target_key)
        if targets.is_floating_point():
            raise ValueError(
                "OnlineLabelSmoothing reads class indices, but the targets are already dense "
                f"({targets.dtype} {tuple(targets.shape)}); list it before the algorithms "
                "that make dense targets (label smoothing, MixUp)."
            )
        self._original_targets = targets
        self._indices = self._criterion.check_targets(state.outputs, targets)
        soft = self._criterion.soft_targets(
            state.outputs, self._indices, class_targets=self._class_targets
        )
        state.set_targets(soft, self.target_key)

    def after_loss(self, state: State) -> None:
        state.set_targets(self._original_targets, self.target_key)
        indices = self._indices
        if state.repeated_samples:  # repeats of samples counted elsewhere in the epoch
            indices = indices.without_last_samples(state.repeated_samples, len(state.outputs))
        if not state.recomputing:  # a second pass of the batch (SAM's) counts it once
            self._criterion.accumulate(state.outputs, indices)
        self._original_targets = self._indices = None

    def epoch_end(self, state: State) -> None:
        self._criterion.next_epoch()
        self._class_targets = self._criterion.class_targets()

    def state_dict(self) -> dict[str, Any]:
        """The matrix, accumulators, counts and epoch counter, as plain CPU tensors."""
        return {
            name: tensor.detach().cpu().clone()
            for name, tensor in self._criterion.state_dict().items()
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._criterion.load_state_dict(state)
        self._class_targets = self._criterion.class_targets()

    def artifacts(self) -> dict[str, Artifact]:
        """``soft_labels``: row ``y`` is the soft label learned for class ``y``."""
        return {
            "soft_labels": Artifact(
                self.matrix.T,
                title="learned soft labels (online label smoothing)",
                axes=("target class", "probability given to class"),
            )
        }

    def __repr__(self) -> str:
        criterion = self._criterion
        options = {"n_classes": criterion.n_classes, "alpha": criterion.alpha}
        options |= criterion.variants()
        if self.target_key is not None:
            options["target_key"] = self.target_key
        listed = ", ".join(f"{name}={value!r}" for name, value in options.items())
        return f"OnlineLabelSmoothing({listed})"
