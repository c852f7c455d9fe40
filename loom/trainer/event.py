"""The event vocabulary: every point of the training loop where plugins may run."""

from __future__ import annotations

from enum import Enum

__all__ = ["Event"]


class Event(str, Enum):
    """Points in the training loop at which plugins run.

    Each value is the name of the hook method a plugin defines to run at that
    point: ``Event.BEFORE_LOSS.value == "before_loss"``, so a plugin that needs
    the targets before the loss is computed defines ``before_loss(self, state)``.

    The loop, with every event at its place::

        INIT                                  Trainer built, plugins registered
        FIT_START
        for epoch in epochs:
            EPOCH_START                       state.timestamp.batch_in_epoch == 0
            for batch in train_dataloader:
                BATCH_START                   state.batch on the device
                for microbatch in batch (grad_accum of them, one by default):
                    BEFORE_FORWARD
                    outputs = model(inputs)   inputs read from state.batch now
                    AFTER_FORWARD             state.outputs set
                    BEFORE_LOSS
                    loss = loss_fn(outputs, targets)  targets read from state.batch now
                    AFTER_LOSS                state.loss set
                    BEFORE_BACKWARD
                    loss.backward()
                    AFTER_BACKWARD
                gradient clipping, optimizer step, scheduler step
                BATCH_END                     state.timestamp advanced
                evaluation when due in batches (EVAL_* below)
            EPOCH_END                         state.timestamp.epoch advanced,
                                              state.metrics["train/loss"] set
            evaluation when due in epochs:
                EVAL_START
                for batch in eval_dataloader:
                    EVAL_BATCH_START
                    EVAL_BEFORE_FORWARD
                    outputs = model(inputs)
                    EVAL_AFTER_FORWARD
                    EVAL_BATCH_END
                EVAL_END                      state.metrics["eval/..."] set
        FIT_END

    Training stops after the ``BATCH_END`` at which ``max_duration`` is reached
    or a plugin called :meth:`State.request_stop`; ``EPOCH_END`` fires only for
    epochs that ran to the end. When training ends at a point that was not
    just evaluated, one last evaluation runs before ``FIT_END``.

    Algorithms run before callbacks at every event. At ``after_*`` and ``*_end``
    events each group runs in reverse order, so paired changes unwind like a
    stack: the algorithm that changed the batch first restores it last.

    Examples:
        >>> Event.BEFORE_LOSS.value
        'before_loss'
        >>> Event.AFTER_LOSS.runs_in_reverse, Event.BEFORE_LOSS.runs_in_reverse
        (True, False)
    """

    INIT = "init"
    FIT_START = "fit_start"
    EPOCH_START = "epoch_start"
    BATCH_START = "batch_start"
    BEFORE_FORWARD = "before_forward"
    AFTER_FORWARD = "after_forward"
    BEFORE_LOSS = "before_loss"
    AFTER_LOSS = "after_loss"
    BEFORE_BACKWARD = "before_backward"
    AFTER_BACKWARD = "after_backward"
    BATCH_END = "batch_end"
    EPOCH_END = "epoch_end"
    EVAL_START = "eval_start"
    EVAL_BATCH_START = "eval_batch_start"
    EVAL_BEFORE_FORWARD = "eval_before_forward"
    EVAL_AFTER_FORWARD = "eval_after_forward"
    EVAL_BATCH_END = "eval_batch_end"
    EVAL_END = "eval_end"
    FIT_END = "fit_end"

    @property
    def runs_in_reverse(self) -> bool:
        """Whether plugins run in reverse registration order at this event."""
        return "after_" in self.value or self.value.endswith("_end")

    def __str__(self) -> str:
        return self.value
