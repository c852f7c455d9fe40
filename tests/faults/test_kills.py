"""SIGKILL at a random point of each phase of a run, then ``--resume``: the run ends as
the uninterrupted one did, bitwise (docs/checkpoints.md)."""

from __future__ import annotations

import signal

import pytest

from tests.faults import compare, runs

pytestmark = pytest.mark.slow


def killed_then_resumed(reference, tmp_path, fault, why):
    """Runs the job with ``fault`` (a SIGKILL), checks what the kill left, resumes it."""
    run_dir = tmp_path / "run"
    killed = runs.train(reference.job, run_dir, [fault])
    assert killed.returncode == -signal.SIGKILL, f"{why}: not killed there; {runs.tail(killed)}"
    compare.assert_every_file_whole(run_dir, why)
    resumed = runs.resume(run_dir)
    assert resumed.returncode == 0, f"{why}: the resume failed; {runs.tail(resumed)}"
    compare.assert_same_run(run_dir, reference.run_dir, why)
    return run_dir


@pytest.mark.parametrize(
    "phase", ["mid-epoch", "evaluation", "checkpoint write", "between save and log", "final files"]
)
def test_a_kill_at_a_random_point_of_each_phase_resumes_to_the_uninterrupted_run(
    reference, tmp_path, seed, why, phase
):
    """SIGKILL at a point of the phase drawn from the reference run's trace: in a
    training batch; in an evaluation; inside a checkpoint's write (half of it written,
    or all of it but not yet renamed); right between a checkpoint and the metrics
    record of the same event (either order); among the final files (the last
    checkpoints, summary, weights, plots, artifacts, status). Every file under its own
    name stays whole, and the resumed run equals the uninterrupted one bitwise."""
    fault = runs.choose(runs.fault_points(reference.trace, phase), seed, phase)
    killed_then_resumed(reference, tmp_path, fault, why(fault))


def test_a_kill_right_after_an_epoch_end_checkpoint_loses_no_metrics_record(
    reference, tmp_path, why
):
    """SIGKILL just after the checkpoint saved at the end of the first epoch (the
    callback that saves every epoch) is whole, next to that epoch's record in
    metrics.jsonl, whichever of the two comes first: the resumed run's metrics.jsonl
    holds every record once, as the uninterrupted run's does."""
    # The trace's first checkpoint-and-record pair: the first epoch's end.
    fault = runs.fault_points(reference.trace, "between save and log")[0]
    killed_then_resumed(reference, tmp_path, fault, why(fault))


def test_a_kill_in_the_middle_of_a_metrics_record_is_repaired_on_resume(
    reference, tmp_path, seed, why
):
    """SIGKILL with half of a metrics.jsonl record written (a line cut short, no
    newline): the resume repairs the file instead of failing to parse it, and ends
    with every record, as the uninterrupted run."""
    fault = runs.choose(runs.fault_points(reference.trace, "metrics append"), seed, "append")
    run_dir = tmp_path / "run"
    killed = runs.train(reference.job, run_dir, [fault])
    assert killed.returncode == -signal.SIGKILL, f"{why(fault)}: {runs.tail(killed)}"
    text = (run_dir / "metrics.jsonl").read_text(encoding="utf-8")
    assert not text.endswith("\n"), f"{why(fault)}: the record was not cut short: {text!r}"
    resumed = runs.resume(run_dir)
    assert resumed.returncode == 0, f"{why(fault)}: {runs.tail(resumed)}"
    compare.assert_same_run(run_dir, reference.run_dir, why(fault))


def test_stale_temporary_files_go_and_a_planted_link_is_not_followed(
    reference, tmp_path, seed, why
):
    """A run killed mid-epoch, then given stale ``.NAME.<8 hex>.tmp`` files (what a save
    killed earlier leaves, under names this run will not write again) and symbolic links
    at ``.NAME.tmp``, the one temporary name loom used to write each file through (its
    last checkpoint, summary.json, model.pt), pointing outside the run: the resume
    removes the stale files, writes through no link (the files they point to keep their
    contents; before, loom overwrote them) and ends as the uninterrupted run."""
    fault = runs.choose(runs.fault_points(reference.trace, "mid-epoch"), seed, "stale")
    run_dir = tmp_path / "run"
    killed = runs.train(reference.job, run_dir, [fault])
    assert killed.returncode == -signal.SIGKILL, f"{why(fault)}: {runs.tail(killed)}"
    stale = [
        run_dir / "checkpoints" / ".epoch0-batch1.pt.0a1b2c3d.tmp",
        run_dir / "epochs" / ".epoch9-batch99.pt.9f8e7d6c.tmp",
        run_dir / ".metrics.jsonl.5e4d3c2b.tmp",
    ]
    for path in stale:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"half of a file a killed save left")
    outside = tmp_path / "outside"
    outside.mkdir()
    links = {
        run_dir / "checkpoints" / ".epoch3-batch24.pt.tmp": outside / "checkpoint",
        run_dir / ".summary.json.tmp": outside / "summary",
        run_dir / ".model.pt.tmp": outside / "model",
    }
    for link, target in links.items():
        target.write_bytes(f"precious: {target.name}".encode())
        link.symlink_to(target)
    resumed = runs.resume(run_dir)
    assert resumed.returncode == 0, f"{why(fault)}: {runs.tail(resumed)}"
    written = [str(t) for t in links.values() if t.read_bytes() != f"precious: {t.name}".encode()]
    assert written == [], f"{why(fault)}: loom wrote through planted links into {written}"
    left = [str(path) for path in stale if path.exists()]
    assert left == [], f"{why(fault)}: stale temporary files left: {left}"
    for link in links:  # not loom's names now: the next run leaves them, as any file of yours
        link.unlink()
    compare.assert_same_run(run_dir, reference.run_dir, why(fault))
