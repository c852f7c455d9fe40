"""Fixtures of the fault-injection suite: the job, one uninterrupted reference run
(traced, so that each test picks its point of failure from what a run does), the seed
of those picks, and small file systems to fill or make read-only."""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.faults import runs

SEED_VARIABLE = "LOOM_FAULTS_SEED"


def pytest_report_header(config):
    return f"fault points: {SEED_VARIABLE}={_SEED}"


_SEED = int(os.environ.get(SEED_VARIABLE) or random.SystemRandom().randrange(10**6))


@pytest.fixture(scope="session")
def seed() -> int:
    """The seed of every random choice of where to fail (set ``LOOM_FAULTS_SEED`` to
    repeat a session's choices; every failure message names it)."""
    return _SEED


@dataclass(frozen=True)
class Reference:
    """The uninterrupted run: its directory and the trace of its events."""

    job: Path
    run_dir: Path
    trace: list[runs.Event]


@pytest.fixture(scope="session")
def job(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("job") / "job.yaml"
    path.write_text(runs.JOB, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def torchrun_reference(job, tmp_path_factory) -> Path:
    """The job run once under a 2-process torchrun, uninterrupted."""
    run_dir = tmp_path_factory.mktemp("torchrun-reference") / "run"
    result = runs.train(job, run_dir, torchrun=True)
    assert result.returncode == 0, runs.tail(result)
    return run_dir


@pytest.fixture(scope="session")
def reference(job, tmp_path_factory) -> Reference:
    """The job run once, without a fault: what every interrupted run must end as."""
    folder = tmp_path_factory.mktemp("reference")
    run_dir, trace = folder / "run", folder / "trace.jsonl"
    command = runs.loom_command("train", job, "--run-dir", run_dir, "--import", runs.INJECT)
    result = runs.run(command, runs.fault_environment(root=run_dir, trace=trace))
    assert result.returncode == 0, runs.tail(result)
    return Reference(job, run_dir, runs.read_trace(trace))


@pytest.fixture
def why(seed, request):
    """The start of a failure message: the test and the seed that repeats it."""

    def describe(fault) -> str:
        return f"{request.node.name} with {SEED_VARIABLE}={seed}, fault {fault}"

    return describe


@contextlib.contextmanager
def mounted_tmpfs(folder: Path, size_kib: int) -> Iterator[Path]:
    """A tmpfs of ``size_kib`` at ``folder``, unmounted on the way out; skips the test
    where this process cannot mount one (not root, or no mount in the container)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs (a full or read-only file system)")
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def remount(folder: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(folder)], check=True)
