"""TensorBoard: every epoch end's and evaluation's metrics, the job's hyperparameters and
the run's plots, through torch's own ``SummaryWriter``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loom.callbacks.loggers import RecordLogger, flat_hyperparameters
from loom.trainer import State

__all__ = ["TensorBoardLogger"]


class TensorBoardLogger(RecordLogger):
    """Every epoch end's and evaluation's metrics to TensorBoard, through torch's own
    ``SummaryWriter`` (install ``loom[tensorboard]``): each metric a scalar at the run's
    batch (the step axis), beside an ``epoch`` scalar at the same steps, so either can be
    the x-axis; the run's job as its hyperparameters (``hparams``, a dotted key each),
    with the final metrics against them; the run's plots (``state.plots``: a job's
    curves, reliability diagram and matrices) as images, ``plots/<name>``, at the last
    batch. A resumed run purges what its first run logged after the checkpoint and
    logs it again.

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

    def open(self, state: State) -> None:
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
        self.log_the_checkpoints_records(state)

    def write(self, batch: int, epoch: int, metrics: dict[str, float]) -> None:
        if self._writer is None:
            return
        # One summary of every scalar: a fifth of add_scalar's cost, one call a scalar.
        summary = self._summary
        values = [summary.Value(tag="epoch", simple_value=epoch)]
        values += [summary.Value(tag=key, simple_value=value) for key, value in metrics.items()]
        self._writer.file_writer.add_summary(summary(value=values), global_step=batch)

    def close(self, state: State) -> None:
        if self._writer is None:
            return
        try:
            if self.hparams is not None:
                self._write_hyperparameters(state)
            for plot in state.plots:
                self._write_image(Path(plot), state.timestamp.batch)
        finally:
            self._writer.close()  # what was written stays, whatever failed
            self._writer = None

    def _write_image(self, png: Path, batch: int) -> None:
        """A plot as an image (tag ``plots/<name>``) at ``batch``: the PNG's own bytes,
        which TensorBoard shows as they are (no decoding and encoding again)."""
        data = png.read_bytes()
        width, height, channels = _png_size(data, png)
        image = self._summary.Image(
            height=height, width=width, colorspace=channels, encoded_image_string=data
        )
        value = self._summary.Value(tag=f"plots/{png.stem}", image=image)
        self._writer.file_writer.add_summary(self._summary(value=[value]), global_step=batch)

    def _write_hyperparameters(self, state: State) -> None:
        """The hyperparameters and the final metrics, into this run's own event file
        (``SummaryWriter.add_hparams`` would open a folder of its own)."""
        from torch.utils.tensorboard.summary import hparams as hparams_summaries

        final = {key: float(value) for key, value in state.metrics.items()}
        for summary in hparams_summaries(self.hparams, final):  # metrics: the scalars' tags
            self._writer.file_writer.add_summary(summary)


def _summary_writer() -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ImportError(
            "TensorBoardLogger needs tensorboard: python3 -m pip install 'loom[tensorboard]' "
            "(or python3 -m pip install tensorboard)."
        ) from None
    return SummaryWriter


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOURS = {b"\x00": 1, b"\x02": 3, b"\x03": 3, b"\x04": 2, b"\x06": 4}
"""A PNG's colour type (its header's 26th byte) -> its channels as TensorBoard counts
them: grey, RGB, a palette's (RGB), grey and alpha, RGBA."""


def _png_size(data: bytes, path: Path) -> tuple[int, int, int]:
    """A PNG's width, height and channels, from its header (the IHDR chunk's first bytes)."""
    header = data[:26]
    if header[:8] != _PNG_SIGNATURE or header[12:16] != b"IHDR" or header[25:] not in _COLOURS:
        raise ValueError(
            f"plot {str(path)!r} is not a PNG image that TensorBoard shows (grey, RGB, "
            "palette, grey and alpha or RGBA)."
        )
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return width, height, _COLOURS[header[25:]]
