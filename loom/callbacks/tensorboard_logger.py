"""TensorBoard: every epoch end's and evaluation's metrics, the job's hyperparameters and
the run's plots, through torch's own ``SummaryWriter``."""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loom.callbacks.loggers import RecordLogger, flat_hyperparameters
from loom.callbacks.writer_process import WriterProcess
from loom.trainer import State

__all__ = ["TensorBoardLogger"]


class TensorBoardLogger(RecordLogger):
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
        if not isinstance(log_dir, str | os.PathLike):
            raise TypeError(f"log_dir={log_dir!r} must be a folder's path.")
        if hparams is not None and not isinstance(hparams, Mapping):
            raise TypeError(f"hparams={hparams!r} must be a mapping or None.")
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not 0 < timeout < math.inf
        ):
            raise ValueError(f"timeout={timeout!r} must be a number of seconds above 0.")
        _summary_writer()  # the extra is missing: say so now, before training
        self.log_dir = Path(log_dir)
        self.hparams = flat_hyperparameters(hparams) if hparams is not None else None
        self.timeout = float(timeout)
        self._writer: WriterProcess | None = None  # see tensorboard_writer
        self._tokens = itertools.count()
        self._epoch_logged_at: int | None = None  # the step of the last epoch scalar

    def open(self, state: State) -> None:
        if self._writer is not None:  # a fit before this one raised
            writer, self._writer = self._writer, None
            writer.abandon()
        batch = state.timestamp.batch
        self.log_dir.mkdir(parents=True, exist_ok=True)  # a folder it cannot be: said now
        writer = WriterProcess(
            _SINK, "TensorBoardLogger", f"TensorBoard in {self.log_dir}", self.timeout
        )
        # Not waited for: the writer imports torch, a second or two, while training starts.
        writer.start({"log_dir": str(self.log_dir), "purge_step": batch or None}, wait=False)
        self._writer, self._epoch_logged_at = writer, None
        if batch > 0:
            self.log_the_checkpoints_records(state)

    def write(self, batch: int, epoch: int, metrics: dict[str, float]) -> None:
        if self._writer is None:
            return
        milliseconds = int(time.time() * 1000)
        records = [[key, value, milliseconds, batch] for key, value in metrics.items()]
        if batch != self._epoch_logged_at:  # an epoch end and its evaluation share a step
            self._epoch_logged_at = batch
            records.insert(0, ["epoch", float(epoch), milliseconds, batch])
        self._call(self._writer.send, {"metrics": records})

    def close(self, state: State) -> None:
        if self._writer is None:
            return
        if self.hparams is not None:
            final = {key: float(value) for key, value in state.metrics.items()}
            self._call(self._writer.send, {"hparams": [self.hparams, final]})
        if state.plots:
            self._call(self._writer.send, {"images": [list(state.plots), state.timestamp.batch]})
        writer, self._writer = self._writer, None
        writer.end("KILLED" if state.interrupt is not None else "FINISHED")

    def state_dict(self) -> dict[str, Any]:
        """Nothing to keep; a checkpoint is being taken: the events so far are written
        to the file first."""
        if self._writer is not None:
            self._call(self._writer.flush, next(self._tokens))
        return {}

    def _call(self, method: Any, argument: Any) -> None:
        """A request to the writer; the writer is let go once it has failed."""
        try:
            method(argument)
        except Exception:
            if self._writer is not None and not self._writer.running:
                self._writer = None
            raise


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
