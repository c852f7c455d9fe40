"""The two ends of a tracker's writer process: the lines between them, and a writer
that dies (MLflow's and TensorBoard's own tests run the whole protocol)."""

import os
import resource
import signal
import subprocess
import sys
import warnings

import pytest
import torch

from loom import Trainer
from loom.callbacks import Checkpoint, TensorBoardLogger
from loom.callbacks.writer_process import Lines, WriterProcess
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


def tensorboard_writer(folder):
    from loom.callbacks import tensorboard_logger

    writer = WriterProcess(tensorboard_logger._SINK, "TensorBoardLogger", "here", 60)
    writer.start({"log_dir": str(folder), "purge_step": None}, wait=True)
    return writer


def test_a_stalled_writer_whose_pipe_is_full_is_a_timeout_not_a_training_stopped(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    writer = tensorboard_writer(tmp_path)
    writer.timeout = 1  # once it has opened, which takes longer
    os.kill(writer.pid, signal.SIGSTOP)
    record = {"metrics": [["train/loss", 0.5, 0, step] for step in range(100)]}

    def flood():
        for _ in range(1000):  # a few MB: far more than a pipe holds
            writer.send(record)

    with pytest.raises(TimeoutError, match="its writer took over timeout=1 s to take the rec"):
        flood()
    assert not writer.running  # killed


def test_the_writer_runs_where_python_puts_no_script_folder_on_its_path(tmp_path):
    """PYTHONSAFEPATH (Python 3.11+): the writer loads its sink by path, not by import."""
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    script = (
        "import sys\nfrom loom.callbacks import tensorboard_logger, writer_process\n"
        f"w = writer_process.WriterProcess(tensorboard_logger._SINK, 'T', 'here', 60)\n"
        f"w.start({{'log_dir': {str(tmp_path)!r}, 'purge_step': None}}, wait=True)\n"
        "w.send({'metrics': [['train/loss', 0.5, 0, 1]]})\nw.end('FINISHED')\n"
    )
    environment = {**os.environ, "PYTHONSAFEPATH": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=environment,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert any(path.name.startswith("events.out.tfevents") for path in tmp_path.iterdir())


def test_a_forked_child_that_exits_does_not_end_its_parents_writer(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    writer = tensorboard_writer(tmp_path)
    with warnings.catch_warnings():  # Python 3.12+ warns of fork() beside threads
        warnings.simplefilter("ignore", DeprecationWarning)
        child = os.fork()
    if child == 0:  # the child's exit runs the atexit handlers it inherited
        writer.abandon()
        os._exit(0)
    os.waitpid(child, 0)
    writer.flush(1)  # still the parent's, still open
    writer.end("FINISHED")
