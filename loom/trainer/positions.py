"""How a place in training is written for people: counted from 1.

The clock (:class:`~loom.trainer.state.Timestamp`) counts what is completed, and so do
the files a run writes (checkpoint names, ``metrics.jsonl``): ``epoch2-batch46.pt`` is
written after 2 epochs, 46 batches. Messages name the batch they are about as people
count it: the first batch of the first epoch is "epoch 1, batch 1".
"""

from __future__ import annotations

__all__ = ["batch_position"]


def batch_position(epoch: int, batch_in_epoch: int, batch: int) -> str:
    """A training batch's place for messages, from the clock's 0-based indices.

    Examples:
        >>> batch_position(epoch=0, batch_in_epoch=4, batch=4)
        'epoch 1, batch 5 of the epoch (batch 5 of the run)'
    """
    return (
        f"epoch {epoch + 1}, batch {batch_in_epoch + 1} of the epoch (batch {batch + 1} of the run)"
    )
