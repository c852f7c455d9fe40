"""Two ``loom train`` runs of one job started at once, in one directory, without
``--run-dir``: each gets a run directory of its own."""

from __future__ import annotations

import pytest

from tests.faults import compare, runs

pytestmark = pytest.mark.slow


def test_two_runs_started_in_the_same_second_get_a_directory_each(reference, tmp_path):
    """Both processes wait at a barrier, then pick their default run directory
    (``runs/job-<timestamp>``) in the same wall-clock second: they get two distinct
    directories, each with its own complete run (status, config.yaml, metrics.jsonl,
    checkpoints, weights), the same as the uninterrupted reference run."""
    cwd, barrier = tmp_path / "cwd", tmp_path / "barrier"
    cwd.mkdir()
    barrier.mkdir()
    (cwd / "job.yaml").write_text(runs.JOB, encoding="utf-8")
    environment = runs.fault_environment(root=cwd, barrier=f"{barrier}:2")
    command = runs.loom_command("train", "job.yaml", "--import", runs.INJECT)
    processes = [runs.start(command, environment, cwd=cwd) for _ in range(2)]
    try:
        results = [runs.finish(process) for process in processes]
    finally:
        for process in processes:
            runs.kill_group(process)
    for result in results:
        assert result.returncode == 0, runs.tail(result)
    announced = sorted(
        line.removeprefix("run directory: ")
        for result in results
        for line in result.stdout.splitlines()
        if line.startswith("run directory: ") and "(" not in line
    )
    made = sorted((cwd / "runs").iterdir())
    got = f"two runs started at once got {[p.name for p in made]} (announced {announced})"
    assert len(made) == 2, got
    assert len(set(announced)) == 2, got
    # Both took their name in the same second (the barrier lets them go together): the
    # second to create it took the suffix.
    assert made[1].name == f"{made[0].name}-2", got
    for run_dir in made:
        assert (run_dir / "config.yaml").is_file(), run_dir
        compare.assert_same_run(run_dir, reference.run_dir, f"the concurrent run {run_dir.name}")
