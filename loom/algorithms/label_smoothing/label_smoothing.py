"""LabelSmoothing: smoothed targets swapped in for the loss, the originals put back after."""

from __future__ import annotations

from typing import Any

from loom.functional import check_fraction, smooth_labels
from loom.trainer import Algorithm, BatchKey, State, changes, restores, validate_batch_key

__all__ = ["LabelSmoothing"]


class LabelSmoothing(Algorithm):
    """Trains against ``(1 - smoothing) * onehot + smoothing / C`` instead of hard labels.

    At ``before_loss`` the run's targets are replaced by dense smoothed
    targets (computed by :func:`loom.functional.smooth_labels` from the outputs'
    shape); at ``after_loss`` the originals go back, so metrics and every later
    plugin see the hard labels. The Trainer's default loss takes the dense targets.

    Args:
        smoothing: The probability mass spread over all classes, in [0, 1].
        target_key: Where the targets are in a batch, when not at the run's
            ``target_key`` (the Trainer's, or a job's ``trainer.target_key``): an int,
            a str, or a ``(getter, setter)`` pair (see ``loom.trainer.get_batch_item``).
            None, the default, uses the run's.

    Examples:
        >>> from loom.algorithms import LabelSmoothing
        >>> LabelSmoothing(smoothing=0.1)
        LabelSmoothing(smoothing=0.1)
        >>> LabelSmoothing(smoothing=0.1, target_key="label")
        LabelSmoothing(smoothing=0.1, target_key='label')
    """

    effects = (
        changes("targets", at="before_loss", how="smooths"),
        restores("targets", at="after_loss"),
    )

    def __init__(self, smoothing: float = 0.1, target_key: BatchKey | None = None):
        self.smoothing = check_fraction(smoothing, "smoothing")
        if target_key is not None:
            validate_batch_key(target_key, "target_key")
        self.target_key = target_key
        self._original_targets: Any = None

    def before_loss(self, state: State) -> None:
        targets = state.get_targets(self.target_key)
        self._original_targets = targets
        state.set_targets(smooth_labels(state.outputs, targets, self.smoothing), self.target_key)

    def after_loss(self, state: State) -> None:
        state.set_targets(self._original_targets, self.target_key)
        self._original_targets = None

    def __repr__(self) -> str:
        key = "" if self.target_key is None else f", target_key={self.target_key!r}"
        return f"LabelSmoothing(smoothing={self.smoothing}{key})"
