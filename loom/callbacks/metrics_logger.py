"""Metrics to the console, one row per epoch, and to a JSON-lines file, one record per event."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from loom.callbacks.training_time import TrainingTime
from loom.trainer import Callback, FileWriteError, State, write_atomically

__all__ = ["MetricsLogError", "MetricsLogger", "logged_before_the_checkpoint"]

_COLUMN_WIDTH = 10


class MetricsLogError(ValueError):
    """A metrics log to resume is damaged other than by a kill: the message names the line."""


class MetricsLogger(Callback):
    """Logs ``state.metrics`` after every epoch and every evaluation.

    The console gets a table, one row per epoch with its training loss and the
    evaluation that followed it (``eval/nll`` only where it differs from ``eval/loss``:
    with the default loss they are the same number). The JSON-lines file gets one record per
    ``epoch_end`` and per ``eval_end``, each with the clock (``epoch``, ``batch``,
    ``samples``), the seconds of training (``time``: since the start of ``fit``, plus
    those of the run a checkpoint resumed), and the metrics. A run
    that starts at batch 0 starts the file afresh; a resumed run appends to it, after
    dropping the records of what came after its checkpoint (it logs those again).
    Only the main process writes. List it after any callback that adds metrics.

    Args:
        path: The JSON-lines file, or None for the console alone.
        console: Whether to print the per-epoch table.
        stream: Where the table goes; standard output by default.

    Examples:
        >>> import json, pathlib, tempfile, torch
        >>> from loom import Trainer
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "metrics.jsonl"
        >>> model = torch.nn.Linear(2, 2)
        >>> trainer = Trainer(
        ...     model, [(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]))], max_duration="2ep",
        ...     optimizers=torch.optim.SGD(model.parameters(), lr=0.1), device="cpu",
        ...     callbacks=[MetricsLogger(path, console=False)],
        ... )
        >>> _ = trainer.fit()
        >>> [sorted(json.loads(line)) for line in path.read_text().splitlines()][0]
        ['batch', 'epoch', 'samples', 'time', 'train/loss']
    """

    reads = ("metrics",)

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        console: bool = True,
        stream: TextIO | None = None,
    ):
        if path is not None and not isinstance(path, str | os.PathLike):
            raise TypeError(f"path={path!r} must be a file path or None.")
        self.path = Path(path) if path is not None else None
        self.console = console
        self.stream = stream
        self._clock = TrainingTime()
        self._columns: list[str] | None = None
        self._pending_row: dict[str, Any] | None = None

    def fit_start(self, state: State) -> None:
        self._clock.start()
        if self.path is None or not state.is_main_process:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if state.timestamp.batch == 0:
            self.path.write_text("")
        elif self.path.exists():
            self._drop_records_after_the_checkpoint(state)

    def _drop_records_after_the_checkpoint(self, state: State) -> None:
        """A resumed run logs again what came after its checkpoint; the first run's
        records of that stretch (written before it was killed) go, and so does a last
        line cut short by the kill. The record of the checkpoint's own epoch end comes
        back if the kill came between the save and the log (a checkpoint callback
        listed before this one)."""
        records = _read_log(self.path)
        kept = [line for line, record in records if logged_before_the_checkpoint(record, state)]
        timestamp = state.timestamp
        if timestamp.batch_in_epoch == 0 and not any(
            record["batch"] == timestamp.batch and not _is_evaluation(record)
            for _, record in records
        ):
            kept.append(json.dumps(self._record(state, "train/")))
        write_atomically(self.path, "".join(f"{line}\n" for line in kept))

    def epoch_start(self, state: State) -> None:
        self._print_pending_row(state)

    def epoch_end(self, state: State) -> None:
        record = self._record(state, "train/")
        self._append(state, record)
        self._pending_row = record

    def eval_end(self, state: State) -> None:
        record = self._record(state, "eval/")
        self._append(state, record)
        if self._pending_row is not None and self._pending_row["batch"] == record["batch"]:
            self._pending_row.update(record)
        else:  # an evaluation between epoch ends, e.g. with eval_interval="500ba"
            self._print_pending_row(state)
            self._pending_row = record
            self._print_pending_row(state)

    def state_dict(self) -> dict[str, Any]:
        """The seconds of training so far, so that a resumed run's ``time`` goes on."""
        return self._clock.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._clock.load_state_dict(state)

    def fit_end(self, state: State) -> None:
        self._clock.stop()
        self._print_pending_row(state)
        if state.stop_reason is not None and self.console and state.is_main_process:
            print(f"stopped early: {state.stop_reason}", file=self._stream())

    def _record(self, state: State, prefix: str) -> dict[str, Any]:
        timestamp = state.timestamp
        record: dict[str, Any] = {
            "epoch": timestamp.epoch,
            "batch": timestamp.batch,
            "samples": timestamp.samples,
            "time": round(self._clock.seconds(), 3),
        }
        record.update((k, v) for k, v in state.metrics.items() if k.startswith(prefix))
        return record

    def _append(self, state: State, record: dict[str, Any]) -> None:
        if self.path is None or not state.is_main_process:
            return
        try:
            with self.path.open("a", encoding="utf-8") as file:
                file.write(json.dumps(record) + "\n")
                file.flush()
                os.fsync(file.fileno())  # on disk before a checkpoint that comes after it
        except OSError as error:
            raise FileWriteError.of(error, self.path) from None

    def _print_pending_row(self, state: State) -> None:
        row, self._pending_row = self._pending_row, None
        if row is None or not self.console or not state.is_main_process:
            return
        metrics = [key for key in row if "/" in key and not _repeats_the_loss(row, key)]
        if self._columns is None or any(key not in self._columns for key in metrics):
            self._columns = ["epoch", "batch", *metrics, "time"]
            print(self._format(self._columns), file=self._stream())
        cells = [_cell(row.get(column)) for column in self._columns]
        print(self._format(cells), file=self._stream())

    def _format(self, cells: list[str]) -> str:
        widths = (max(_COLUMN_WIDTH, len(column) + 2) for column in self._columns or ())
        return "".join(f"{cell:>{width}}" for cell, width in zip(cells, widths, strict=False))

    def _stream(self) -> TextIO:
        return self.stream if self.stream is not None else sys.stdout


def _read_log(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """The log's lines with their records. A last line that is not a whole record (a
    kill mid-append) is left out; any other is an error naming the line.

    Raises:
        MetricsLogError: A line other than the last is not a JSON record with a ``batch``.
    """
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    found = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or type(record.get("batch")) is not int:
                raise ValueError("no batch")
        except ValueError:
            if number == len(lines):
                break  # cut short by a kill: the resumed run logs it again
            raise MetricsLogError(
                f"{path} line {number} is not a metrics record ({line[:60]!r}); repair or "
                "delete that line, then resume."
            ) from None
        found.append((line, record))
    return found


def _is_evaluation(record: dict[str, Any]) -> bool:
    return any(key.startswith("eval/") for key in record)


def logged_before_the_checkpoint(record: dict[str, Any], state: State) -> bool:
    """Whether a log's ``record`` (its ``batch`` and its metrics) came from before the
    checkpoint a resumed run starts from: those after it are logged again, so a log
    that a killed run left keeps only the ones before."""
    timestamp = state.timestamp
    batch = int(record["batch"])
    if batch != timestamp.batch:
        return batch < timestamp.batch
    if _is_evaluation(record):
        return state.last_eval_batch == timestamp.batch
    return timestamp.batch_in_epoch == 0  # the epoch ended before the checkpoint


def _repeats_the_loss(row: dict[str, Any], key: str) -> bool:
    """Whether ``key`` is ``eval/nll`` and the same number as ``eval/loss``, as with the
    default loss, whose evaluation loss is the NLL: the table shows it once (the files
    keep both)."""
    nll, loss = row.get(key), row.get("eval/loss")
    if key != "eval/nll" or not isinstance(nll, float) or not isinstance(loss, float):
        return False
    return abs(nll - loss) <= 1e-6 * max(1.0, abs(loss))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
