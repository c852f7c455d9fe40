"""A progress bar on a terminal, plain periodic lines elsewhere (logs, CI, notebooks' files)."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from loom.trainer import Callback, State, TimeUnit, num_batches

__all__ = ["ProgressBar"]

_BAR_WIDTH = 24
_REDRAW_SECONDS = 0.1


class ProgressBar(Callback):
    """Shows the epoch, batch, loss and throughput while training.

    On a terminal it redraws one line in place; when the output is not a
    terminal it prints a plain line every ``every_n_batches`` batches (by
    default about ten per epoch). Only the main process prints. The loss is read
    from the device only when a line is drawn.

    Args:
        every_n_batches: Batches between plain lines when not on a terminal.
        stream: Where to write; standard error by default.

    Examples:
        >>> import io, torch
        >>> from loom import Trainer
        >>> model, stream = torch.nn.Linear(2, 2), io.StringIO()
        >>> trainer = Trainer(
        ...     model, [(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]))], max_duration="1ba",
        ...     optimizers=torch.optim.SGD(model.parameters(), lr=0.1), device="cpu",
        ...     callbacks=[ProgressBar(every_n_batches=1, stream=stream)],
        ... )
        >>> _ = trainer.fit()
        >>> stream.getvalue().split(" loss ")[0]  # then the loss and the throughput
        'epoch 1 [########################] 1/1'
    """

    def __init__(self, every_n_batches: int | None = None, stream: TextIO | None = None):
        if every_n_batches is not None and (
            type(every_n_batches) is not int or every_n_batches < 1
        ):
            raise ValueError(f"every_n_batches={every_n_batches!r} must be an int >= 1 or None.")
        self.every_n_batches = every_n_batches
        self.stream = stream
        self._batches_per_epoch: int | None = None
        self._epoch_started = 0.0
        self._last_draw = 0.0
        self._samples_at_epoch_start = 0

    def fit_start(self, state: State) -> None:
        self._batches_per_epoch = num_batches(state.train_dataloader)

    def epoch_start(self, state: State) -> None:
        self._epoch_started = time.perf_counter()
        self._last_draw = 0.0
        self._samples_at_epoch_start = state.timestamp.samples

    def batch_end(self, state: State) -> None:
        if not state.is_main_process:
            return
        done = state.timestamp.batch_in_epoch
        if self._on_terminal():
            now = time.perf_counter()
            if now - self._last_draw >= _REDRAW_SECONDS or done == self._batches_per_epoch:
                self._last_draw = now
                self._write("\r" + self._line(state) + "\033[K")
        elif done % self._plain_interval() == 0:
            self._write(self._line(state) + "\n")

    def epoch_end(self, state: State) -> None:
        if state.is_main_process and self._on_terminal():
            self._write("\n")

    def _line(self, state: State) -> str:
        timestamp, total = state.timestamp, self._batches_per_epoch
        # At batch_end of an epoch's last batch the clock has not rolled over yet.
        epoch = f"epoch {timestamp.epoch + 1}"
        if state.max_duration.unit is TimeUnit.EPOCH:
            epoch += f"/{state.max_duration.value}"
        done = timestamp.batch_in_epoch
        if total:
            filled = round(_BAR_WIDTH * done / total)
            progress = f"[{'#' * filled}{'.' * (_BAR_WIDTH - filled)}] {done}/{total}"
        else:
            progress = f"batch {done}"
        elapsed = max(time.perf_counter() - self._epoch_started, 1e-9)
        throughput = (timestamp.samples - self._samples_at_epoch_start) / elapsed
        loss = f"loss {state.loss.item():.4f}" if state.loss is not None else ""
        return f"{epoch} {progress} {loss} {throughput:,.0f} samples/s"

    def _plain_interval(self) -> int:
        if self.every_n_batches is not None:
            return self.every_n_batches
        return max(1, -(-(self._batches_per_epoch or 1000) // 10))  # about ten lines per epoch

    def _on_terminal(self) -> bool:
        isatty = getattr(self._stream(), "isatty", None)
        return bool(isatty and isatty())

    def _stream(self) -> Any:
        return self.stream if self.stream is not None else sys.stderr

    def _write(self, text: str) -> None:
        stream = self._stream()
        stream.write(text)
        stream.flush()
