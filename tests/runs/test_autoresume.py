"""``loom train JOB --run-dir DIR --autoresume``: starts, resumes or does nothing as DIR
says, and refuses what it must not continue or replace, each in one line."""

import json
import os
import re
import shutil
import socket

import pytest
import torch

from loom.cli import main
from loom.config.job import resolve_job
from loom.config.job_file import read_job_file
from loom.runs.autoresume import AutoresumeError, decide

JOB = (
    "seed: 0\n"
    "model: {name: mlp, hidden_sizes: [8]}\n"
    "data: {train: {name: synthetic, num_samples: 48, shape: [4], batch_size: 16}}\n"
    "optimizer: {name: sgd, lr: 0.1, momentum: 0.9}\n"
    "callbacks: [{name: checkpoint, interval: 2ba, keep_last: 1}]\n"
    "trainer: {max_duration: 2ep, device: cpu}\n"
)


@pytest.fixture
def job(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(JOB)
    return path


def train(capsys, *arguments):
    status = main(["train", *map(str, arguments)])
    output = capsys.readouterr()
    return status, output.out, output.err


def weights(run_dir):
    return torch.load(run_dir / "model.pt", weights_only=True)


def test_a_new_directory_starts_the_run_and_a_finished_run_is_left_as_it_is(job, tmp_path, capsys):
    run_dir = tmp_path / "run"
    status, out, err = train(capsys, job, "--run-dir", run_dir, "--autoresume")
    assert status == 0, err
    assert out.splitlines()[0] == f"autoresume: {run_dir} is new: the run starts there"
    before = (run_dir / "model.pt").stat().st_mtime_ns
    status, out, err = train(capsys, job, "--run-dir", run_dir, "--autoresume")
    assert (status, err) == (0, "")
    assert out == (
        f"autoresume: {run_dir}: the run finished (reached max_duration); nothing to do\n"
    )
    assert (run_dir / "model.pt").stat().st_mtime_ns == before


def test_a_longer_run_of_the_same_job_resumes_from_its_checkpoint(job, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert train(capsys, job, "--run-dir", run_dir, "trainer.max_duration=1ep")[0] == 0
    status, out, err = train(capsys, job, "--run-dir", run_dir, "--autoresume")
    assert status == 0, err
    checkpoint = run_dir / "checkpoints" / "epoch1-batch3.pt"
    assert out.splitlines()[0] == (
        f"autoresume: {run_dir}: the run finished; resuming from {checkpoint}"
    )
    straight = tmp_path / "straight"
    assert train(capsys, job, "--run-dir", straight)[0] == 0
    for key, value in weights(straight).items():
        assert torch.equal(weights(run_dir)[key], value), key


def test_a_run_that_stopped_before_its_first_checkpoint_starts_again(job, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert train(capsys, job, "--run-dir", run_dir)[0] == 0
    shutil.rmtree(run_dir / "checkpoints")
    (run_dir / "status.json").write_text(json.dumps({"state": "failed", "detail": "killed"}))
    status, out, err = train(capsys, job, "--run-dir", run_dir, "--autoresume")
    assert status == 0, err
    assert out.splitlines()[0] == (
        f"autoresume: {run_dir}: the run failed before its first checkpoint: it starts again"
    )
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2  # none kept twice


def test_another_job_in_the_directory_is_refused_naming_each_difference(job, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert train(capsys, job, "--run-dir", run_dir)[0] == 0
    status, out, err = train(
        capsys, job, "--run-dir", run_dir, "--autoresume", "optimizer.lr=0.5", "seed=1"
    )
    assert (status, out) == (2, "")
    assert err == (
        f"loom train: error: --run-dir {run_dir} holds a run of another job: this one "
        "changes optimizer.lr (0.1 in the run, 0.5 now), seed (0 in the run, 1 now); a "
        "resumed run may change only trainer.max_duration. Give another --run-dir for this "
        "job.\n"
    )


def test_a_run_still_running_is_refused(job, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copy(job, run_dir / "config.yaml")
    alive = {"state": "running", "detail": "training", "pid": os.getpid()}
    (run_dir / "status.json").write_text(json.dumps({**alive, "host": socket.gethostname()}))
    with pytest.raises(AutoresumeError, match=r"its run is still running \(process \d+ on "):
        decide(run_dir, resolve_job(read_job_file(job)))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda path: path.write_text("x"), r"it is a file; give a directory"),
        (
            lambda path: (path.mkdir(), (path / "notes.txt").write_text("x")),
            r"it holds files but no config\.yaml, so no run of loom's",
        ),
        (
            lambda path: (path.mkdir(), (path / "config.yaml").write_text("model: [")),
            r"its config\.yaml cannot be read as a job: ",
        ),
    ],
    ids=["file", "not a run", "damaged job"],
)
def test_what_is_no_run_of_this_job_is_refused(job, tmp_path, make, message):
    path = tmp_path / "run"
    make(path)
    with pytest.raises(AutoresumeError, match=rf"^--run-dir {path}: {message}"):
        decide(path, resolve_job(read_job_file(job)))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ([], r"--autoresume needs --run-dir DIR: the directory a rerun"),
        (["--run-dir", "r", "--resume", "r"], r"give --autoresume or --resume, not both"),
        (["--run-dir", "r", "--seeds", "0,1"], r"give --autoresume or --seeds, not both"),
        (["--run-dir", "r", "--dry-run", "2"], r"--dry-run writes no run to resume"),
    ],
    ids=["no run dir", "resume", "seeds", "dry run"],
)
def test_arguments_that_do_not_go_with_autoresume(job, capsys, arguments, message):
    status, _, err = train(capsys, job, "--autoresume", *arguments)
    assert status == 2
    assert re.search(message, err), err


def running_elsewhere(run_dir, job, launch):
    run_dir.mkdir()
    shutil.copy(job, run_dir / "config.yaml")
    record = {"state": "running", "detail": "training", "pid": 1, "host": "another-host"}
    (run_dir / "status.json").write_text(json.dumps({**record, "launch": launch}))


@pytest.mark.parametrize(
    ("recorded", "now"),
    [
        (
            {"torchelastic_run_id": "job-7", "torchelastic_attempt": "0"},
            {"TORCHELASTIC_RUN_ID": "job-7", "TORCHELASTIC_RESTART_COUNT": "1"},
        ),
        (
            {"slurm_job_id": "4242", "slurm_restart_count": "0"},
            {"SLURM_JOB_ID": "4242", "SLURM_RESTART_COUNT": "1"},
        ),
    ],
    ids=["torchrun restart", "slurm requeue"],
)
def test_a_run_left_running_by_an_earlier_incarnation_of_this_launch_is_its_own(
    job, tmp_path, monkeypatch, recorded, now
):
    for name, value in now.items():
        monkeypatch.setenv(name, value)
    run_dir = tmp_path / "run"
    running_elsewhere(run_dir, job, recorded)
    assert decide(run_dir, resolve_job(read_job_file(job))).action == "start"


def test_another_launch_s_running_run_is_refused_even_on_a_restart(job, tmp_path, monkeypatch):
    """Before, any torchrun restart skipped the check: a start refused for a live run,
    retried by torchrun, resumed that run beside it."""
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "mine")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    run_dir = tmp_path / "run"
    running_elsewhere(run_dir, job, {"torchelastic_run_id": "theirs", "torchelastic_attempt": "0"})
    with pytest.raises(AutoresumeError, match=r"its run is still running \(process 1 on another"):
        decide(run_dir, resolve_job(read_job_file(job)))


def test_status_json_records_the_launch(job, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    run_dir = tmp_path / "run"
    assert train(capsys, job, "--run-dir", run_dir, "--autoresume")[0] == 0
    status = json.loads((run_dir / "status.json").read_text())
    assert status["launch"]["slurm_job_id"] == "4242"
