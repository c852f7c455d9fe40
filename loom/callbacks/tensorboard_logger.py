"""TensorBoard: every epoch end's and evaluation's metrics, the job's hyperparameters and
the run's plots, through torch's own ``SummaryWriter``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loom.callbacks.loggers import ProcessLogger, flat_hyperparameters
from loom.trainer import State

__all__ = ["TensorBoardLogger"]


class TensorBoardLogger(ProcessLogger):
    """Every epoch end's and evaluation's metrics to TensorBoard, through torch's own
    ``SummaryWriter`` (install ``loom[tensorboard]``): each metric a scalar at the run's
    batch (the step axis), beside an ``epoch`` scalar at the same steps (once a step);
    the run's job as its hyperparameters (``hparams``, a dotted key each), with the
    final metrics against them; the run's plots (``state.plots``: a job's curves,
    reliability diagram and matrices) as images, ``plots/<name>``, at the last batch. A
    resumed run purges what its first run logged after the checkpoint and logs it again.

    A process of its own writes the event file (TensorBoard's pure-Python CRC of each
    event, on a thread of the training process, would hold the interpreter's lock for
    as long as a small model's step): training only sends it the records, and waits for
    it when a checkpoint is taken (the events so far are in the file first) and at the
    end. A ``fit`` that raised leaves what it sent written, at the process's exit.

    Args:
        log_dir: The folder of the event files (in a job: ``tensorboard/`` in the run
            directory). Open it with ``tensorboard --logdir``.
        hparams: The hyperparameters to record (in a job: the resolved job), nested
            mappings flattened to dotted keys; None for none.
        timeout: The most seconds to wait for the writer, when a checkpoint is taken
            and at the end; past it the writer is stopped and the callback raises.

    Examples:
        >>> import pathlib, tempfile, torch
        >>> from loom import Trainer
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> model = torch.nn.Linear(2, 2)
        >>> trainer = Trainer(
        ...     model, [(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]))], max_duration="2ep",
        ...     optimizers=torch.optim.SGD(model.parameters(), lr=0.1), device="cpu",
        ...     callbacks=[TensorBoardLogger(folder, hparams={"optimizer": {"lr": 0.1}})],
        ... )
        >>> _ = trainer.fit()
        >>> any(path.name.startswith("events.out.tfevents") for path in folder.iterdir())
        True
    """

    def __init__(
        self,
        log_dir: str | os.PathLike[str],
        hparams: Mapping[str, Any] | None = None,
        timeout: float = 300.0,
    ):
        super().__init__(timeout)
        if not isinstance(log_dir, str | os.PathLike):
            raise TypeError(f"log_dir={log_dir!r} must be a folder's path.")
        if hparams is not None and not isinstance(hparams, Mapping):
            raise TypeError(f"hparams={hparams!r} must be a mapping or None.")
        _summary_writer()  # the extra is missing: say so now, before training
        self.log_dir = Path(log_dir)
        self.hparams = flat_hyperparameters(hparams) if hparams is not None else None

    def open(self, state: State) -> None:
        batch = state.timestamp.batch
        self.log_dir.mkdir(parents=True, exist_ok=True)  # a folder it cannot be: said now
        settings = {"log_dir": str(self.log_dir), "purge_step": batch or None}
        # Not waited for: the writer imports torch, a second or two, while training starts.
        self.start_writer(_SINK, f"TensorBoard in {self.log_dir}", settings, wait=False)
        if batch > 0:
            self.log_the_checkpoints_records(state)

    def close(self, state: State) -> None:
        if self._writer is None:
            return
        if self.hparams is not None:
            final = {key: float(value) for key, value in state.metrics.items()}
            self.send({"hparams": [self.hparams, final]})
        if state.plots:
            self.send({"images": [list(state.plots), state.timestamp.batch]})
        self.end_writer(state)


_SINK = Path(__file__).with_name("tensorboard_writer.py")


def _summary_writer() -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ImportError(
            "TensorBoardLogger needs tensorboard: python3 -m pip install 'loom[tensorboard]' "
            "(or python3 -m pip install tensorboard)."
        ) from None
    return SummaryWriter
