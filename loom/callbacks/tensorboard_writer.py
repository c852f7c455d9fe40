"""The sink of a :class:`~loom.callbacks.TensorBoardLogger`'s writer process (see
:mod:`loom.callbacks.writer_process`), loaded there by its path, writing through torch's
own ``SummaryWriter``: whose pure-Python CRC of every event, on a thread of the training
process, held the interpreter's lock for as long as a small model's step.

Its settings: ``log_dir``, and the ``purge_step`` of a resumed run or null. Its own
requests: ``{"hparams": [flat, final_metrics]}`` and ``{"images": [[path, ...], step]}``.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOURS = {b"\x00": 1, b"\x02": 3, b"\x03": 3, b"\x04": 2, b"\x06": 4}
"""A PNG's colour type (its header's 26th byte) -> its channels as TensorBoard counts
them: grey, RGB, a palette's (RGB), grey and alpha, RGBA."""


class _EventFile:
    """One SummaryWriter's event file."""

    ready = None

    def __init__(self, settings: dict[str, Any]):
        from tensorboard.compat.proto.summary_pb2 import Summary
        from torch.utils.tensorboard import SummaryWriter

        self.summary = Summary
        # TensorBoard purges by step, from the checkpoint's on: what a killed first run
        # logged after it, and what it logged at that step, which is logged again.
        purge_step = settings["purge_step"]
        self.writer = SummaryWriter(settings["log_dir"], purge_step=purge_step)

    def log_metrics(self, records: list[list[Any]]) -> None:
        """A summary of every scalar of a step: a fifth of add_scalar's cost each."""
        for (step, milliseconds), values in itertools.groupby(
            records, key=lambda record: (record[3], record[2])
        ):
            summary = self.summary(
                value=[self.summary.Value(tag=key, simple_value=value) for key, value, *_ in values]
            )
            self.writer.file_writer.add_summary(summary, step, milliseconds / 1000)

    def handle(self, request: dict[str, Any]) -> None:
        if "hparams" in request:
            self._write_hyperparameters(*request["hparams"])
        elif "images" in request:
            paths, step = request["images"]
            for path in paths:
                self._write_image(Path(path), step)
        else:
            raise ValueError(f"unknown request {request!r}")

    def flush(self) -> None:
        self.writer.flush()

    def end(self, status: str) -> None:
        del status  # an event file has no status
        self.writer.close()

    def _write_hyperparameters(self, flat: dict[str, Any], final: dict[str, float]) -> None:
        """The hyperparameters and the final metrics, into this run's own event file
        (``SummaryWriter.add_hparams`` would open a folder of its own)."""
        from torch.utils.tensorboard.summary import hparams as hparams_summaries

        for summary in hparams_summaries(flat, final):  # metrics: the scalars' tags
            self.writer.file_writer.add_summary(summary)

    def _write_image(self, png: Path, step: int) -> None:
        """A plot as an image (tag ``plots/<name>``) at ``step``: the PNG's own bytes,
        which TensorBoard shows as they are (no decoding and encoding again)."""
        data = png.read_bytes()
        width, height, channels = _png_size(data, png)
        image = self.summary.Image(
            height=height, width=width, colorspace=channels, encoded_image_string=data
        )
        value = self.summary.Value(tag=f"plots/{png.stem}", image=image)
        self.writer.file_writer.add_summary(self.summary(value=[value]), global_step=step)


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


open_sink = _EventFile
"""The event file the settings name, as :func:`loom.callbacks.writer_process.serve` takes it."""
