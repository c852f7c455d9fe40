"""Resuming in the middle of an epoch: the data iterator at the checkpoint's position."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from loom.trainer.checkpoint import CheckpointError
from loom.trainer.rng import capture_rng_states, restore_rng_states
from loom.trainer.state import State

__all__ = ["resumed_epoch_batches"]


def resumed_epoch_batches(state: State) -> Iterator[Any]:
    """The epoch's data iterator, past the ``state.timestamp.batch_in_epoch`` batches
    trained before the checkpoint.

    The iterator is made under the generators' state of the epoch's start, so it
    shuffles as it did (and workers get the same seeds); the batches already
    trained are loaded again and dropped; then the generators go back to the
    checkpoint's state.

    Raises:
        CheckpointError: The checkpoint has no record of the epoch's start, or the
            data now has fewer batches per epoch than the checkpoint's position.
    """
    position = state.timestamp.batch_in_epoch
    if state.epoch_start_rng is None:
        raise CheckpointError(
            f"cannot resume at batch {position} of an epoch: the checkpoint has no "
            "record of the epoch's start."
        )
    now = capture_rng_states()
    restore_rng_states(state.epoch_start_rng)
    batches = iter(state.train_dataloader)
    for skipped in range(position):
        if next(batches, None) is None:
            raise CheckpointError(
                f"the checkpoint stopped at batch {position} of an epoch, but "
                f"train_dataloader yields only {skipped} batches per epoch now."
            )
    restore_rng_states(now)
    return batches
