"""The two ends of a tracker's writer process: the lines between them, and a writer
that dies (MLflow's and TensorBoard's own tests run the whole protocol)."""

import os
import resource
import signal

import pytest
import torch

from loom import Trainer
from loom.callbacks import Checkpoint, TensorBoardLogger
from loom.callbacks.writer_process import Lines
from loom.trainer import Callback


def test_lines_come_whole_and_wait_at_most_their_timeout():
    read, write = os.pipe()
    lines = Lines(read)
    os.write(write, b'{"a": 1}\n{"b"')
    assert lines.next(timeout=1) == '{"a": 1}'
    assert lines.next(timeout=0.01) is None  # half a line: not yet
    os.write(write, b": 2}\n")
    assert lines.next(timeout=1) == '{"b": 2}'
    os.close(write)
    assert lines.next(timeout=1) == ""  # the end
    lines.close()
    os.close(read)


@pytest.mark.skipif(
    resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 1100, reason="needs 1100 file descriptors"
)
def test_lines_read_a_descriptor_past_1024():
    """select.select refuses descriptors from 1024 on: a process with many files open."""
    read, write = os.pipe()
    high = os.dup2(read, 1050)
    lines = Lines(high)
    os.write(write, b"x\n")
    assert lines.next(timeout=1) == "x"
    lines.close()
    for descriptor in (read, write, high):
        os.close(descriptor)


def test_a_tensorboard_writer_that_dies_is_named_when_it_is_next_asked(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    logger = TensorBoardLogger(tmp_path / "tb")

    class Kill(Callback):
        def batch_end(self, state):
            if state.timestamp.batch == 1:
                os.kill(logger._writer.pid, signal.SIGKILL)

    model = torch.nn.Linear(3, 2)
    trainer = Trainer(
        model, [(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]))] * 2, max_duration="2ep",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.1), device="cpu",
        callbacks=[logger, Kill(), Checkpoint(tmp_path / "checkpoints")],
    )  # fmt: skip
    with pytest.raises(RuntimeError, match=r"TensorBoardLogger: its writer process ended \(ki"):
        trainer.fit()
    assert logger._writer is None
