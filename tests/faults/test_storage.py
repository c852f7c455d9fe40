"""A file system that fills up, or turns read-only, under a run: one line of error
naming the file, the checkpoints before it whole, and an exact resume once it can be
written again. Each run directory is on a small tmpfs of its own (root only)."""

from __future__ import annotations

import math
import random
import re

import pytest

from tests.faults import compare, runs
from tests.faults.conftest import mounted_tmpfs, remount

pytestmark = pytest.mark.slow

PAGE = 4096


def assert_one_line_error_naming_a_file(result, run_dir, message):
    """Exit status 1 and ``loom train: error: ...`` naming a file of the run, no traceback."""
    assert result.returncode == 1, f"{message}: {runs.tail(result)}"
    assert "Traceback" not in result.stderr, f"{message}: {runs.tail(result)}"
    errors = [line for line in result.stderr.splitlines() if line.startswith("loom train: error:")]
    assert len(errors) == 1, f"{message}: {runs.tail(result)}"
    assert re.search(rf"{re.escape(str(run_dir))}/\S+", errors[0]), (
        f"{message}: the error names no file of the run: {errors[0]}"
    )


def test_a_full_disk_fails_in_one_line_keeps_the_checkpoints_and_resumes_exactly(
    reference, tmp_path, why
):
    """The run directory on a tmpfs with room for the run's first files and two
    checkpoints, not three: the third checkpoint's write fails with ``loom train:
    error: ...`` naming the file (exit 1, no traceback), every checkpoint already
    written stays whole and no temporary file is left; given room again, the run
    resumes to the uninterrupted one, bitwise."""
    checkpoint = max(p.stat().st_size for p in (reference.run_dir / "checkpoints").glob("*.pt"))
    pages = math.ceil(checkpoint / PAGE)
    # status.json, config.yaml, metrics.jsonl, two checkpoints, half of a third
    size_kib = (3 + 2 * pages + pages // 2) * PAGE // 1024
    message = why(f"a tmpfs of {size_kib} KiB")
    with mounted_tmpfs(tmp_path / "disk", size_kib) as disk:
        run_dir = disk / "run"
        full = runs.train(reference.job, run_dir)
        assert_one_line_error_naming_a_file(full, run_dir, message)
        compare.assert_every_file_whole(run_dir, message)
        assert list((run_dir / "checkpoints").glob("*.pt")), f"{message}: no checkpoint kept"
        assert compare.temporary_files(run_dir) == [], message
        remount(disk, "size=64m")
        resumed = runs.resume(run_dir)
        assert resumed.returncode == 0, f"{message}: {runs.tail(resumed)}"
        compare.assert_same_run(run_dir, reference.run_dir, message)


def test_a_run_directory_turned_read_only_fails_in_one_line_and_resumes_exactly(
    reference, tmp_path, seed, why
):
    """The run directory's file system remounted read-only before a random training
    batch (after the first checkpoint): the next write fails with ``loom train: error:
    ...`` naming the file (exit 1, no traceback), the checkpoints stay whole; remounted
    writable, the run resumes to the uninterrupted one, bitwise."""
    forwards = [e for e in runs.resumable(reference.trace) if e.kind == "train_forward"]
    event = random.Random(f"{seed}-read-only").choice(forwards)
    with mounted_tmpfs(tmp_path / "disk", 64 * 1024) as disk:
        fault = event.fault("before", "remount_ro", path=str(disk))
        message = why(fault)
        run_dir = disk / "run"
        stopped = runs.train(reference.job, run_dir, [fault])
        assert_one_line_error_naming_a_file(stopped, run_dir, message)
        compare.assert_every_file_whole(run_dir, message)
        remount(disk, "rw")
        resumed = runs.resume(run_dir)
        assert resumed.returncode == 0, f"{message}: {runs.tail(resumed)}"
        compare.assert_same_run(run_dir, reference.run_dir, message)
