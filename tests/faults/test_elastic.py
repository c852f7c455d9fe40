"""Elastic restarts: ``torchrun --max-restarts 3 ... loom train JOB --run-dir DIR
--autoresume``, one worker SIGKILLed at a different moment of each of three attempts;
torchrun restarts the group each time, the job finds its run and resumes it, and it
ends as the uninterrupted 2-process run did, bitwise."""

from __future__ import annotations

import sys

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


def test_a_worker_killed_on_one_of_two_nodes_restarts_both_and_the_job_ends_as_uninterrupted(
    job, torchrun_reference, tmp_path
):
    """Two torchrun agents ("nodes" of one process each, c10d on 127.0.0.1), each
    restart with a store of its own (TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1, which loom
    asks for: check_restarts_can_rejoin): the second node's worker is SIGKILLed in the
    middle of epoch 2, both agents restart their workers, and the job resumes its run.
    The agents count restarts each its own way (the first node's count may stay at 0),
    so only the second node is given the kill (at its attempt 0)."""
    run_dir, endpoint = tmp_path / "run", f"127.0.0.1:{runs.free_port()}"
    kill = {"kind": "train_forward", "n": 7, "moment": "before", "action": "kill", "rank": "any"}
    nodes = []
    for node in (0, 1):
        command = [
            sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
            "--nproc_per_node", "1", "--max-restarts", "1", "--rdzv_backend", "c10d",
            "--rdzv_endpoint", endpoint, "--rdzv_id", "elastic",
            "-m", "loom", "train", str(job), "--run-dir", str(run_dir), "--autoresume",
            "--import", runs.INJECT,
        ]  # fmt: skip
        environment = runs.fault_environment([kill] if node == 1 else [], root=run_dir)
        environment["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"
        nodes.append(runs.start(command, environment))
    finished = [runs.finish(process, timeout=4 * runs.TIMEOUT) for process in nodes]
    for node, result in enumerate(finished):
        assert result.returncode == 0, f"node {node}: {runs.tail(result)}"
    injected = [
        line
        for result in finished
        for line in result.stderr.splitlines()
        if line.startswith("fault injected")
    ]
    assert len(injected) == 1, [runs.tail(result) for result in finished]
    compare.assert_same_run(run_dir, torchrun_reference, "a node's worker killed")
