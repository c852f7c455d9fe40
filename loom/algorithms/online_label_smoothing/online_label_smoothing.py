"""OnlineLabelSmoothing: soft labels learned per class from the model's correct predictions."""

from __future__ import annotations

from typing import Any

import torch

from loom.functional import OnlineLabelSmoothingLoss
from loom.trainer import (
    Algorithm,
    BatchKey,
    State,
    get_batch_item,
    set_batch_item,
    validate_batch_key,
)

__all__ = ["OnlineLabelSmoothing"]


class OnlineLabelSmoothing(Algorithm):
    """Trains against ``alpha * onehot + (1 - alpha) * S[:, y]``, learning ``S`` as it goes.

    ``S`` starts as label smoothing (``1 - smoothing`` on the diagonal) and, at every
    ``epoch_end``, each of its columns becomes the mean softmax of the epoch's correctly
    predicted training samples of that class (see
    :class:`loom.functional.OnlineLabelSmoothingLoss`, whose matrix logic this uses).
    At ``before_loss`` the targets at ``target_key`` are replaced by those soft targets;
    at ``after_loss`` the originals go back and the batch's correct predictions are
    accumulated from ``state.outputs``. Evaluation never touches the statistics.

    Args:
        n_classes: The number of classes, at least 2.
        alpha: Weight of the hard labels, in [0, 1]; the paper uses 0.5.
        smoothing: The first epoch's label smoothing, in [0, 1].
        target_key: Where the targets are in a batch (int, str or (getter, setter)).

    Examples:
        >>> from loom.algorithms import OnlineLabelSmoothing
        >>> algorithm = OnlineLabelSmoothing(n_classes=3, alpha=0.5)
        >>> algorithm.matrix.shape
        torch.Size([3, 3])
    """

    def __init__(
        self, n_classes: int, alpha: float = 0.5, smoothing: float = 0.1, target_key: BatchKey = 1
    ):
        self.criterion = OnlineLabelSmoothingLoss(
            alpha=alpha, n_classes=n_classes, smoothing=smoothing
        )
        validate_batch_key(target_key, "target_key")
        self.target_key = target_key
        self._original_targets: Any = None

    @property
    def matrix(self) -> torch.Tensor:
        """The current soft labels, column ``c`` for class ``c`` (a copy, on the CPU)."""
        return self.criterion.matrix.detach().cpu().clone()

    def init(self, state: State) -> None:
        self.criterion.to(state.device)

    def before_loss(self, state: State) -> None:
        targets = get_batch_item(state.batch, self.target_key)
        self._original_targets = targets
        soft = self.criterion.soft_targets(state.outputs, targets)
        state.batch = set_batch_item(state.batch, self.target_key, soft)

    def after_loss(self, state: State) -> None:
        targets, self._original_targets = self._original_targets, None
        state.batch = set_batch_item(state.batch, self.target_key, targets)
        self.criterion.accumulate(state.outputs, targets)

    def epoch_end(self, state: State) -> None:
        self.criterion.next_epoch()

    def state_dict(self) -> dict[str, Any]:
        """The matrix, accumulators, counts and epoch counter, as plain CPU tensors."""
        return {
            name: tensor.detach().cpu().clone()
            for name, tensor in self.criterion.state_dict().items()
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.criterion.load_state_dict(state)

    def __repr__(self) -> str:
        criterion = self.criterion
        return (
            f"OnlineLabelSmoothing(n_classes={criterion.n_classes}, alpha={criterion.alpha}, "
            f"target_key={self.target_key!r})"
        )
