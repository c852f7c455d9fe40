"""A run directory's state: recorded when training starts and however it ends, read back
(a dead process included), and what a comparison makes of it."""

import json
import os
import signal
import socket
import subprocess
import sys
from types import SimpleNamespace

import pytest

from loom.config.job import resolve_job
from loom.runs import RunDirectory, find_runs, train_job
from loom.runs.status import RunState, read_status, recording_status
from loom.trainer import TrainingInterrupted
from loom.trainer.signals import StoppedAtOnce

SMALL = {
    "model": {"name": "mlp", "hidden_sizes": [8]},
    "data": {"train": {"name": "synthetic", "num_samples": 64, "shape": [4], "batch_size": 16}},
    "optimizer": {"name": "sgd", "lr": 0.1},
    "trainer": {"max_duration": "2ep", "device": "cpu"},
}
MAIN_PROCESS = SimpleNamespace(is_main_process=True, stop_reason=None)  # what the status reads
DIVERGING = {**SMALL, "optimizer": {"name": "sgd", "lr": 1e30}}


def test_a_finished_run_says_so_and_names_its_checkpoint(tmp_path):
    train_job(resolve_job(SMALL), tmp_path / "run")
    status = read_status(tmp_path / "run")
    assert status.state is RunState.FINISHED
    assert status.detail == "reached max_duration"
    assert status.checkpoint == tmp_path / "run" / "checkpoints" / "epoch2-batch8.pt"
    recorded = json.loads((tmp_path / "run" / "status.json").read_text())
    assert (recorded["pid"], recorded["host"]) == (os.getpid(), socket.gethostname())


def test_a_run_an_error_ended_is_failed_with_the_errors_first_line(tmp_path):
    with pytest.raises(Exception, match="the training loss is not finite"):
        train_job(resolve_job(DIVERGING), tmp_path / "run")
    status = read_status(tmp_path / "run")
    assert status.state is RunState.FAILED
    assert status.detail.startswith("NonFiniteLossError: the training loss is not finite")
    assert status.checkpoint is None  # it diverged before its first save


def end_inside_recording(files, error):
    """Records the status around a run that ``error`` ends."""
    with recording_status(files, MAIN_PROCESS):
        assert read_status(files).state is RunState.RUNNING  # this very process
        raise error


def test_an_interruption_and_a_signal_that_stops_at_once_are_interrupted(tmp_path):
    files = RunDirectory(tmp_path)
    interruption = TrainingInterrupted("training stopped on SIGTERM after epoch 1", "SIGTERM")
    with pytest.raises(TrainingInterrupted):
        end_inside_recording(files, interruption)
    assert str(read_status(files)) == "interrupted: training stopped on SIGTERM after epoch 1"
    with pytest.raises(KeyboardInterrupt):
        end_inside_recording(files, StoppedAtOnce("SIGTERM"))
    assert str(read_status(files)) == "interrupted: stopped at once by SIGTERM, the third signal"
    with pytest.raises(KeyboardInterrupt):
        end_inside_recording(files, KeyboardInterrupt())  # Python's own, for Ctrl-C
    assert str(read_status(files)) == "interrupted: stopped at once by SIGINT"


def test_a_run_whose_process_died_without_a_word_reads_as_failed(tmp_path):
    files = RunDirectory(tmp_path)
    script = (
        "import sys; from loom.runs import RunDirectory; from loom.runs.status import "
        "recording_status; from types import SimpleNamespace\n"
        "state = SimpleNamespace(is_main_process=True, stop_reason=None)\n"
        f"with recording_status(RunDirectory({str(tmp_path)!r}), state):\n"
        "    print('running', flush=True); sys.stdin.read()\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as process:
        try:
            assert process.stdout.readline() == "running\n"
            status = read_status(files)
            assert status.state is RunState.RUNNING
            assert status.detail.startswith(f"process {process.pid} on {socket.gethostname()}")
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
    status = read_status(files)
    assert status.state is RunState.FAILED
    assert status.detail.endswith("ended without recording how (killed?)")


def test_run_directories_from_before_states_read_from_their_summary(tmp_path):
    for name, summary in [("done", {}), ("cut", {"stop_reason": "interrupted by SIGINT"})]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(summary))
    (tmp_path / "crashed").mkdir()
    (tmp_path / "crashed" / "config.yaml").write_text("seed: 0\n")
    assert str(read_status(tmp_path / "done")) == "finished: reached max_duration"
    assert str(read_status(tmp_path / "cut")) == "interrupted: interrupted by SIGINT"
    assert str(read_status(tmp_path / "crashed")) == (
        "failed: it ended before writing summary.json"
    )
    assert read_status(tmp_path / "nothing") is None


def test_a_comparison_takes_the_finished_runs_and_lists_the_others(tmp_path):
    train_job(resolve_job(SMALL), tmp_path / "runs" / "good")
    with pytest.raises(Exception, match="not finite"):
        train_job(resolve_job(DIVERGING), tmp_path / "runs" / "diverged")
    files = RunDirectory(tmp_path / "runs" / "cut")
    train_job(resolve_job(SMALL), files.path)
    with pytest.raises(TrainingInterrupted):
        end_inside_recording(
            files, TrainingInterrupted("training stopped on SIGINT after epoch 2", "SIGINT")
        )
    found = find_runs([tmp_path / "runs"])
    assert [run.name for run in found.finished] == ["good"]
    assert found.skipped_lines() == [
        f"{files.path}: interrupted: training stopped on SIGINT after epoch 2; "
        f"resume with: loom train --resume {files.path}",
        f"{tmp_path / 'runs' / 'diverged'}: failed: NonFiniteLossError: the training loss is "
        "not finite at epoch 1, batch 2 of the epoch (batch 2 of the run); training stopped "
        "and the checkpoints already written were left as they were. Lower the learning "
        "rate, clip gradients (grad_clip_norm) or check the inputs of that batch.",
    ]
    with pytest.raises(FileNotFoundError, match="is not a run directory and holds none"):
        find_runs([tmp_path / "runs" / "good" / "checkpoints"])


def test_a_status_that_cannot_be_written_at_the_end_leaves_the_runs_own_error(
    tmp_path, monkeypatch
):
    from loom.runs import status as status_module

    files, written = RunDirectory(tmp_path), []

    def write(files, state, detail):
        if state is not RunState.RUNNING:
            raise OSError(28, "No space left on device")
        written.append(state)

    monkeypatch.setattr(status_module, "_write", write)
    with (
        pytest.warns(UserWarning, match="could not record 'failed': .*No space left"),
        pytest.raises(ZeroDivisionError),
        recording_status(files, MAIN_PROCESS),
    ):
        1 / 0  # noqa: B018 (the run's own error)
    assert written == [RunState.RUNNING]
