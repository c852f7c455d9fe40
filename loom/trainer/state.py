"""State: everything a plugin may read or write during a run."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from loom.trainer.duration import Duration, Timestamp
from loom.trainer.metrics import TrainLoss

__all__ = ["State"]


@dataclass(eq=False)
class State:
    """The run's state, shared by the Trainer and every plugin.

    Plugins read and write these fields and nothing else of the Trainer. Which
    event writes which field is in the :class:`~loom.trainer.event.Event` docstring.

    Attributes:
        model: The module being trained (wrapped, e.g. in DistributedDataParallel,
            when the run is distributed).
        optimizers: The optimizers, stepped in this order after every batch.
        schedulers: Learning-rate schedulers, stepped after every optimizer step.
        max_duration: When training ends.
        train_dataloader: Yields the training batches.
        eval_dataloader: Yields the evaluation batches, or None.
        device: Where the model and batches live.
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        input_key: Where the model's inputs are in a batch (see ``get_batch_item``).
        target_key: Where the targets are in a batch.
        rank: This process's rank among ``world_size`` processes (0 of 1 when
            not distributed).
        world_size: How many processes train together.
        timestamp: The training clock.
        batch: The current batch (training or evaluation), on ``device``. Read and
            write its items with ``get_batch_item`` and ``set_batch_item``.
        outputs: The model's outputs for the current batch, set after the forward.
        loss: The loss of the current (micro)batch, set after the loss, before
            ``backward``; an algorithm may replace it at ``before_backward``.
        metrics: The latest value of every metric, e.g. ``"train/loss"`` at
            ``epoch_end`` and ``"eval/accuracy"`` at ``eval_end``.
        reliability: The latest evaluation's calibration, for a reliability
            diagram: per equal-width confidence bin (``ECE_BINS`` of them), the
            sample ``count``, mean ``confidence`` and ``accuracy``. None before
            the first evaluation.
        grad_scaler: The fp16 gradient scaler, or None.
        stop_reason: Why training was asked to stop, or None; see :meth:`request_stop`.
        algorithms: The run's algorithms, in order (read only).
        callbacks: The run's callbacks, in order (read only).
        train_losses: The current epoch's training losses, kept on the device, read
            by each finite-loss check and once at ``epoch_end`` (``train/loss``).
        last_eval_batch: ``timestamp.batch`` at the latest evaluation, or None.
        epoch_start_rng: Every generator's state when the current epoch's data
            iterator was made: a checkpoint holds it, so a run resumed mid-epoch
            gets the same shuffle.
        interrupt: The signal (``"SIGTERM"``, ``"SIGINT"``) that interrupted
            training, or None. Training then stops after the current batch, the
            plugins' ``fit_end`` runs (a checkpoint callback saves), and ``fit``
            raises :class:`~loom.trainer.interrupts.TrainingInterrupted`.
        checkpoint_path: The latest checkpoint a plugin wrote, or None.
    """

    model: nn.Module
    optimizers: list[torch.optim.Optimizer]
    schedulers: list[Any]
    max_duration: Duration
    train_dataloader: Iterable[Any]
    eval_dataloader: Iterable[Any] | None
    device: torch.device
    precision: str
    input_key: Any = 0
    target_key: Any = 1
    rank: int = 0
    world_size: int = 1
    timestamp: Timestamp = field(default_factory=Timestamp)
    batch: Any = None
    outputs: Any = None
    loss: torch.Tensor | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    reliability: dict[str, list[float]] | None = None
    grad_scaler: torch.amp.GradScaler | None = None
    stop_reason: str | None = None
    algorithms: list[Any] = field(default_factory=list)
    callbacks: list[Any] = field(default_factory=list)
    train_losses: TrainLoss = field(default_factory=TrainLoss)
    last_eval_batch: int | None = None
    epoch_start_rng: dict[str, Any] | None = None
    interrupt: str | None = None
    checkpoint_path: str | None = None

    def request_stop(self, reason: str) -> None:
        """Asks the Trainer to end training after the current batch.

        Training ends once the event in progress has finished: after
        ``batch_end`` when asked during a batch, or after the evaluation that
        follows ``epoch_end`` when asked there. ``fit_end`` still fires.

        Args:
            reason: Shown to the user, e.g. ``"eval/loss has not improved for 3 epochs"``.
        """
        if not isinstance(reason, str) or not reason:
            raise ValueError(f"request_stop(reason={reason!r}): give a non-empty string.")
        self.stop_reason = reason

    @property
    def is_main_process(self) -> bool:
        """True on the one process (rank 0) that writes files and prints."""
        return self.rank == 0
