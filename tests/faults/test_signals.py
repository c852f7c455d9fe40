"""SIGTERM twice, and a signal once training is over: the interruption checkpoint is
never skipped, and a finished run stays finished (docs/checkpoints.md, Signals)."""

from __future__ import annotations

import random
import re
import signal

import pytest

from tests.faults import compare, runs

pytestmark = pytest.mark.slow

SECOND_SIGNALS = {
    "right after the first": None,
    "inside the interruption checkpoint's write": {"kind": "checkpoint_save", "moment": "during"},
    "before the interruption checkpoint's rename": {"kind": "replace", "moment": "before"},
    "inside the final weights' write": {"kind": "save", "moment": "during"},
}
"""Where the second SIGTERM comes, counted from the first: each while the first is
being handled (the batch finishing, the checkpoint and the run's files being written)."""


def test_sigterm_twice_still_saves_the_interruption_checkpoint_and_resumes_exactly(
    reference, tmp_path, seed, why
):
    """A SIGTERM in a random training batch, and a second one while the first is being
    handled (at once, inside the interruption checkpoint's write, before its rename, or
    inside model.pt's write): loom train still saves the checkpoint of the batch the
    first one stopped (whole, named in the message), records the run as interrupted,
    exits 143, and the resumed run equals the uninterrupted one bitwise."""
    choices = random.Random(f"{seed}-sigterm-twice")
    forwards = [e for e in reference.trace if e.kind == "train_forward" and e.n > 1]
    first = choices.choice(forwards).fault("before", "term")
    where = choices.choice(sorted(SECOND_SIGNALS))
    second = SECOND_SIGNALS[where]
    if second is None:
        faults = [{**first, "repeat": 2}]
    else:
        faults = [first, {**second, "n": 1, "after": 0, "action": "term"}]
    message = why(f"{faults}, the second {where}")
    run_dir = tmp_path / "run"
    stopped = runs.train(reference.job, run_dir, faults)
    assert stopped.returncode == 128 + signal.SIGTERM, f"{message}: {runs.tail(stopped)}"
    saved = re.search(r"checkpoint saved to (\S+\.pt)", stopped.stderr)
    assert saved, f"{message}: no checkpoint named; {runs.tail(stopped)}"
    assert f"resume with: loom train --resume {run_dir}" in stopped.stderr, message
    compare.assert_every_file_whole(run_dir, message)
    batch = compare.load(saved[1])["timestamp"]["batch"]
    assert batch == first["n"], f"{message}: checkpoint of batch {batch}, not {first['n']}"
    assert compare.status(run_dir) == "interrupted", message
    resumed = runs.resume(run_dir)
    assert resumed.returncode == 0, f"{message}: {runs.tail(resumed)}"
    compare.assert_same_run(run_dir, reference.run_dir, message)


def test_a_signal_during_the_final_writes_leaves_the_run_finished(reference, tmp_path, seed, why):
    """SIGTERM or SIGINT at a random point of the final writes of a run whose training
    is over (the last checkpoints, summary.json, model.pt, plots, artifacts, up to the
    status itself): the run is finished, not interrupted: status.json says so, loom
    train exits 0, and every file is the uninterrupted run's."""
    choices = random.Random(f"{seed}-final-signal")
    last = runs.final_phase(reference.trace)[-1]  # status.json: after it, loom has returned
    points = [
        point
        for point in runs.fault_points(reference.trace, "final files")
        if (point["kind"], point["n"], point["moment"]) != (last.kind, last.n, "after")
    ]
    fault = {**choices.choice(points), "action": choices.choice(["term", "int"])}
    run_dir = tmp_path / "run"
    result = runs.train(reference.job, run_dir, [fault])
    assert result.returncode == 0, f"{why(fault)}: {runs.tail(result)}"
    compare.assert_same_run(run_dir, reference.run_dir, why(fault))
