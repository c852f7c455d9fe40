"""Elastic restarts: ``torchrun --max-restarts 3 ... loom train JOB --run-dir DIR
--autoresume``, one worker SIGKILLed at a different moment of each of three attempts;
torchrun restarts the group each time, the job finds its run and resumes it, and it
ends as the uninterrupted 2-process run did, bitwise."""

from __future__ import annotations

import pytest

from tests.faults import compare, runs

pytestmark = pytest.mark.slow

# 4 steps an epoch under two ranks, a checkpoint every 3 steps (and at each epoch's end).
KILLS = [
    # Attempt 0: rank 1 before the forward of step 7, in the middle of epoch 2 (the
    # latest checkpoint is step 6's, mid-epoch too).
    {"kind": "train_forward", "n": 7, "moment": "before", "action": "kill", "rank": 1},
    # Attempt 1: rank 1 in the first evaluation after resuming (epoch 2's).
    {"kind": "eval_forward", "n": 1, "moment": "before", "action": "kill", "rank": 1},
    # Attempt 2: rank 0 right after the first interval checkpoint it saves is in place.
    {
        "kind": "replace",
        "matching": r"checkpoints/epoch\d+-batch\d+\.pt",
        "n": 1,
        "moment": "after",
        "action": "kill",
        "rank": 0,
    },
]


def test_a_worker_killed_three_times_restarts_and_the_job_ends_as_uninterrupted(
    job, torchrun_reference, tmp_path
):
    faults = [{**kill, "attempt": attempt} for attempt, kill in enumerate(KILLS)]
    run_dir = tmp_path / "run"
    command = runs.loom_command(
        "train", job, "--run-dir", run_dir, "--autoresume", "--import", runs.INJECT,
        torchrun=True, restarts=len(KILLS),
    )  # fmt: skip
    result = runs.run(
        command, runs.fault_environment(faults, root=run_dir), timeout=6 * runs.TIMEOUT
    )
    assert result.returncode == 0, runs.tail(result)
    injected = [line for line in result.stderr.splitlines() if line.startswith("fault injected")]
    assert len(injected) == len(KILLS), runs.tail(result)
    found = [line for line in result.stdout.splitlines() if line.startswith("autoresume:")]
    assert found[0] == f"autoresume: {run_dir} is new: the run starts there"
    assert len(found) == 1 + len(KILLS)
    assert all("resuming from" in line for line in found[1:]), found
    compare.assert_same_run(run_dir, torchrun_reference, f"restarted after {KILLS}")
