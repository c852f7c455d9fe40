"""What loom's experiment trackers share (:class:`RecordLogger`), the flat CSV one, and the
job as flat hyperparameters. TensorBoard and MLflow have modules of their own."""

from __future__ import annotations

import csv
import io
import itertools
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loom.callbacks.metrics_logger import logged_before_the_checkpoint
from loom.callbacks.writer_process import WriterProcess
from loom.trainer import Callback, State, write_atomically

__all__ = ["CSVLogger", "ProcessLogger", "RecordLogger", "flat_hyperparameters"]


class RecordLogger(Callback):
    """The base of the trackers: one record per ``epoch_end`` (the ``train/`` metrics)
    and per evaluation of the loop's (the ``eval/`` metrics; not one called as
    ``trainer.eval()``), each at the run's batch and epoch, both x-axes, between
    ``open`` and ``close``; only the main process writes. A tracker implements :meth:`open`,
    :meth:`write` and :meth:`close`; at ``close`` it may upload ``state.plots``, which
    the plugin that draws them (a job's run recorder) fills at ``fit_end`` before it.

    A resumed run logs again what came after its checkpoint: each tracker keeps, of
    what its first run logged, only what came before (see
    :func:`~loom.callbacks.metrics_logger.logged_before_the_checkpoint`).
    """

    reads = ("metrics", "plots")

    def fit_start(self, state: State) -> None:
        if state.is_main_process:
            self.open(state)

    def epoch_end(self, state: State) -> None:
        self.log(state, "train/")

    def eval_end(self, state: State) -> None:
        if state.evaluation != "called":  # one a person runs, after fit perhaps, is theirs
            self.log(state, "eval/")

    def fit_end(self, state: State) -> None:
        if state.is_main_process:
            self.close(state)

    def log(self, state: State, prefix: str) -> None:
        """Writes the metrics under ``prefix`` at the run's batch and epoch."""
        if not state.is_main_process:
            return
        timestamp = state.timestamp
        metrics = {k: float(v) for k, v in state.metrics.items() if k.startswith(prefix)}
        self.write(timestamp.batch, timestamp.epoch, metrics)

    def log_the_checkpoints_records(self, state: State) -> None:
        """What a resumed run logs again as it opens, for a tracker that dropped
        everything from its checkpoint's batch on: the checkpoint's metrics of the
        epoch end and of the evaluation at that batch, where there were ones."""
        timestamp = state.timestamp
        if timestamp.batch_in_epoch == 0:
            self.log(state, "train/")
        if state.last_eval_batch == timestamp.batch:
            self.log(state, "eval/")

    def open(self, state: State) -> None:
        """At ``fit_start``: open the destination; ``state.timestamp`` is the checkpoint's
        for a resumed run, batch 0 for a fresh one."""
        raise NotImplementedError

    def write(self, batch: int, epoch: int, metrics: dict[str, float]) -> None:
        """One record: ``metrics`` at ``batch`` (the step axis) and ``epoch``."""
        raise NotImplementedError

    def close(self, state: State) -> None:
        """At ``fit_end``, however training ended: flush and close."""
        raise NotImplementedError


class ProcessLogger(RecordLogger):
    """A tracker whose library writes from a process of its own (see
    :mod:`loom.callbacks.writer_process`): training only sends it the records, the
    ``epoch`` beside them once a step. A subclass starts the writer in :meth:`open`
    with :meth:`start_writer`, sends its own requests with :meth:`send`, and closes
    with :meth:`end_writer`; a checkpoint's :meth:`state_dict` waits until the records
    so far are written.

    Args:
        timeout: The most seconds to wait for the writer (to open, to write what was
            sent when a checkpoint is taken, at the end); past it the writer is
            stopped and the callback raises.
    """

    def __init__(self, timeout: float = 300.0):
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not 0 < timeout < math.inf
        ):
            raise ValueError(f"timeout={timeout!r} must be a number of seconds above 0.")
        self.timeout = float(timeout)
        self._writer: WriterProcess | None = None
        self._tokens = itertools.count()
        self._epoch_logged_at: int | None = None  # the step of the last epoch record

    def start_writer(self, sink: Path, where: str, settings: dict[str, Any], wait: bool) -> Any:
        """Starts the writer of ``sink`` with ``settings``; with ``wait``, returns what it
        is ready with (its failure to open is raised here, else at the next record)."""
        if self._writer is not None:  # a fit before this one raised: its run failed
            writer, self._writer = self._writer, None
            writer.abandon()
        writer = WriterProcess(sink, type(self).__name__, where, self.timeout)
        ready = writer.start(settings, wait=wait)
        self._writer, self._epoch_logged_at = writer, None
        return ready

    def write(self, batch: int, epoch: int, metrics: dict[str, float]) -> None:
        if self._writer is None:
            return
        milliseconds = int(time.time() * 1000)
        records = [[key, value, milliseconds, batch] for key, value in metrics.items()]
        if batch != self._epoch_logged_at:  # an epoch end and its evaluation share a step
            self._epoch_logged_at = batch
            records.insert(0, ["epoch", float(epoch), milliseconds, batch])
        self.send({"metrics": records})

    def send(self, request: dict[str, Any]) -> None:
        self._call(self._writer.send, request)

    def end_writer(self, state: State) -> None:
        """Ends the run ``KILLED`` when training was interrupted, else ``FINISHED``, and
        waits for the writer to exit."""
        writer, self._writer = self._writer, None
        writer.end("KILLED" if state.interrupt is not None else "FINISHED")

    def state_dict(self) -> dict[str, Any]:
        """A checkpoint is being taken: the records so far are written first."""
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


class CSVLogger(RecordLogger):
    """One flat CSV file of every epoch end's and evaluation's metrics: a row each, the
    columns ``epoch``, ``batch``, then every metric seen so far (a row that lacks one
    leaves it empty). No dependency beyond Python's ``csv``. Each row is appended in one
    write; a new metric rewrites the file, atomically, with its column. A run that
    starts at batch 0 starts the file afresh; a resumed run keeps the rows from before
    its checkpoint (and drops a last row a crash cut short).

    Args:
        csv_path: The file (in a job: ``metrics.csv`` in the run directory, or a path
            inside it).

    Examples:
        >>> import csv, pathlib, tempfile, torch
        >>> from loom import Trainer
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "metrics.csv"
        >>> model = torch.nn.Linear(2, 2)
        >>> batches = [(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]))]
        >>> trainer = Trainer(
        ...     model, batches, batches, max_duration="2ep", device="cpu",
        ...     optimizers=torch.optim.SGD(model.parameters(), lr=0.1),
        ...     callbacks=[CSVLogger(path)],
        ... )
        >>> _ = trainer.fit()
        >>> rows = list(csv.DictReader(path.read_text().splitlines()))
        >>> len(rows), list(rows[0])[:4]
        (4, ['epoch', 'batch', 'train/loss', 'eval/loss'])
    """

    def __init__(self, csv_path: str | os.PathLike[str]):
        if not isinstance(csv_path, str | os.PathLike):
            raise TypeError(f"csv_path={csv_path!r} must be a file path.")
        self.path = Path(csv_path)
        self._rows: list[dict[str, Any]] = []
        self._columns: list[str] = ["epoch", "batch"]

    def open(self, state: State) -> None:
        self._rows, self._columns = [], ["epoch", "batch"]
        if state.timestamp.batch == 0 or not self.path.is_file():
            self.path.unlink(missing_ok=True)  # a fresh run's file starts with its first row
            return
        lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True)
        if lines and not lines[-1].endswith("\n"):
            lines.pop()  # a row a crash cut short
        for row in csv.DictReader(lines):
            record = {key: value for key, value in row.items() if value != ""}
            if logged_before_the_checkpoint(record, state):
                self._add(record)
        write_atomically(self.path, self._text(self._rows, header=True))

    def write(self, batch: int, epoch: int, metrics: dict[str, float]) -> None:
        columns = len(self._columns)
        row = {"epoch": epoch, "batch": batch, **metrics}
        self._add(row)
        if len(self._columns) == columns and self.path.is_file():
            with self.path.open("a", newline="", encoding="utf-8") as file:
                file.write(self._text([row], header=False))  # one write: the whole row
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(self.path, self._text(self._rows, header=True))  # a new column

    def _text(self, rows: list[dict[str, Any]], header: bool) -> str:
        text = io.StringIO()
        writer = csv.DictWriter(text, self._columns, lineterminator="\n")
        if header:
            writer.writeheader()
        writer.writerows(rows)
        return text.getvalue()

    def close(self, state: State) -> None:
        del state  # every row is on disk as it comes

    def _add(self, row: dict[str, Any]) -> None:
        self._rows.append(row)
        self._columns += [key for key in row if key not in self._columns]


def flat_hyperparameters(nested: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested job as ``{"optimizer.lr": 0.1, ...}``, as trackers take it: numbers,
    strings and bools as they are; a list's items under their index
    (``"model.hidden_sizes.0"``); anything else as text of at most 250 characters; a
    None left out, so that one key keeps one type across runs.

    Examples:
        >>> flat_hyperparameters({"optimizer": {"name": "sgd", "lr": 0.1}, "seed": None})
        {'optimizer.name': 'sgd', 'optimizer.lr': 0.1}
        >>> flat_hyperparameters({"model": {"hidden_sizes": [64, 32]}})
        {'model.hidden_sizes.0': 64, 'model.hidden_sizes.1': 32}
    """
    flat: dict[str, Any] = {}
    for key, value in nested.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flat_hyperparameters(value, f"{name}."))
        elif isinstance(value, list | tuple):
            flat.update(flat_hyperparameters(dict(enumerate(value)), f"{name}."))
        elif isinstance(value, bool | int | float):
            flat[name] = value
        elif value is not None:
            flat[name] = str(value)[:_TEXT_LIMIT]
    return flat


_TEXT_LIMIT = 250
