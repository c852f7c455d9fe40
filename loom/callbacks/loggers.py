"""Experiment trackers: the metrics of every epoch end and evaluation to a CSV file or to
TensorBoard, with the run's job as its hyperparameters."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loom.callbacks.metrics_logger import logged_before_the_checkpoint
from loom.trainer import Callback, State, write_atomically

__all__ = ["CSVLogger", "TensorBoardLogger", "flat_hyperparameters"]


class _RecordLogger(Callback):
    """What the loggers share: one record per ``epoch_end`` (the ``train/`` metrics) and
    per ``eval_end`` (the ``eval/`` metrics), each at the run's batch and epoch; only the
    main process writes; a resumed run logs again what came after its checkpoint."""

    reads = ("metrics",)

    def fit_start(self, state: State) -> None:
        if state.is_main_process:
            self._open(state)

    def epoch_end(self, state: State) -> None:
        self._log(state, "train/")

    def eval_end(self, state: State) -> None:
        self._log(state, "eval/")

    def fit_end(self, state: State) -> None:
        if state.is_main_process:
            self._close(state)

    def _log(self, state: State, prefix: str) -> None:
        if not state.is_main_process:
            return
        timestamp = state.timestamp
        metrics = {k: float(v) for k, v in state.metrics.items() if k.startswith(prefix)}
        self._write(timestamp.batch, timestamp.epoch, metrics)

    def _open(self, state: State) -> None:
        raise NotImplementedError

    def _write(self, batch: int, epoch: int, metrics: dict[str, float]) -> None:
        raise NotImplementedError

    def _close(self, state: State) -> None:
        raise NotImplementedError


class CSVLogger(_RecordLogger):
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

    def _open(self, state: State) -> None:
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

    def _write(self, batch: int, epoch: int, metrics: dict[str, float]) -> None:
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

    def _close(self, state: State) -> None:
        del state

    def _add(self, row: dict[str, Any]) -> None:
        self._rows.append(row)
        self._columns += [key for key in row if key not in self._columns]


class TensorBoardLogger(_RecordLogger):
    """Every epoch end's and evaluation's metrics to TensorBoard, through torch's own
    ``SummaryWriter`` (install ``loom[tensorboard]``): each metric a scalar at the run's
    batch (the step axis), beside an ``epoch`` scalar at the same steps, so either can be
    the x-axis; the run's job as its hyperparameters (``hparams``, a dotted key each),
    with the final metrics against them. A resumed run purges what its first run logged
    after the checkpoint and logs it again.

    Args:
        log_dir: The folder of the event files (in a job: ``tensorboard/`` in the run
            directory). Open it with ``tensorboard --logdir``.
        hparams: The hyperparameters to record (in a job: the resolved job), nested
            mappings flattened to dotted keys; None for none.

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

    def __init__(self, log_dir: str | os.PathLike[str], hparams: Mapping[str, Any] | None = None):
        if not isinstance(log_dir, str | os.PathLike):
            raise TypeError(f"log_dir={log_dir!r} must be a folder's path.")
        if hparams is not None and not isinstance(hparams, Mapping):
            raise TypeError(f"hparams={hparams!r} must be a mapping or None.")
        _summary_writer()  # the extra is missing: say so now, before training
        self.log_dir = Path(log_dir)
        self.hparams = flat_hyperparameters(hparams) if hparams is not None else None
        self._writer: Any = None
        self._summary: Any = None  # tensorboard's Summary message, once the writer opens

    def _open(self, state: State) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary  # the extra, there by now

        self._summary = Summary
        timestamp = state.timestamp
        if timestamp.batch == 0:
            self._writer = _summary_writer()(str(self.log_dir))
            return
        # TensorBoard purges by step, from the checkpoint's on: what a killed first run
        # logged after it, and what it logged at that step before it, which the
        # checkpoint's metrics hold and which is logged again here.
        self._writer = _summary_writer()(str(self.log_dir), purge_step=timestamp.batch)
        if timestamp.batch_in_epoch == 0:
            self._log(state, "train/")
        if state.last_eval_batch == timestamp.batch:
            self._log(state, "eval/")

    def _write(self, batch: int, epoch: int, metrics: dict[str, float]) -> None:
        if self._writer is None:
            return
        # One summary of every scalar: a fifth of add_scalar's cost, one call a scalar.
        summary = self._summary
        values = [summary.Value(tag="epoch", simple_value=epoch)]
        values += [summary.Value(tag=key, simple_value=value) for key, value in metrics.items()]
        self._writer.file_writer.add_summary(summary(value=values), global_step=batch)

    def _close(self, state: State) -> None:
        if self._writer is None:
            return
        if self.hparams is not None:
            self._write_hyperparameters(state)
        self._writer.close()
        self._writer = None

    def _write_hyperparameters(self, state: State) -> None:
        """The hyperparameters and the final metrics, into this run's own event file
        (``SummaryWriter.add_hparams`` would open a folder of its own)."""
        from torch.utils.tensorboard.summary import hparams as hparams_summaries

        final = {key: float(value) for key, value in state.metrics.items()}
        for summary in hparams_summaries(self.hparams, final):  # metrics: the scalars' tags
            self._writer.file_writer.add_summary(summary)


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


def _summary_writer() -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ImportError(
            "TensorBoardLogger needs tensorboard: python3 -m pip install 'loom[tensorboard]' "
            "(or python3 -m pip install tensorboard)."
        ) from None
    return SummaryWriter
