"""``loom train JOB --run-dir DIR --autoresume``: the same command, run again after any
stop, continues the run; what torchrun's restarts (which rerun "the same program
arguments"), a cluster's requeue or a person need.

Rank 0 looks at ``DIR`` and decides for every rank (:func:`decide`): start the job there
(``DIR`` is new or empty, or holds a run of this job that saved no checkpoint before it
stopped), resume it from its latest checkpoint, or nothing (the run finished). ``DIR``
holding a run of another job is refused, naming each difference, as is one still running
(unless the process recorded as running it was an earlier incarnation of this launch:
the same torchrun run at an earlier attempt, the same SLURM job before a requeue).

Examples:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from loom.config.job import resolve_job
    >>> job = resolve_job({
    ...     "model": {"name": "mlp", "hidden_sizes": [8]},
    ...     "data": {"train": {"name": "synthetic", "num_samples": 32, "shape": [4]}},
    ...     "optimizer": {"name": "sgd", "lr": 0.1},
    ...     "trainer": {"max_duration": "1ep", "device": "cpu"},
    ... })
    >>> decide(Path(tempfile.mkdtemp()) / "run", job).action
    'start'
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from loom.config.job import resolve_job
from loom.config.job_changes import (
    describe_differences,
    job_differences,
    length_change_refused,
    unresumable,
)
from loom.config.job_file import read_job_file
from loom.config.run_directory import RunDirectory, RunState, read_status
from loom.config.schema import ConfigError
from loom.runs.status import launch_of_this_process

__all__ = ["AutoresumeError", "Decision", "decide"]


class AutoresumeError(ValueError):
    """The run directory holds something ``--autoresume`` must not continue or replace:
    another job's run, a run still running, files that are no run's."""


@dataclass(frozen=True)
class Decision:
    """What ``--autoresume`` does with a run directory.

    Attributes:
        action: ``"start"`` the job there, ``"resume"`` it from ``checkpoint``, or
            nothing, the run having ``"finished"``.
        checkpoint: The checkpoint to resume from, for ``"resume"``.
        found: What the directory held, for the console.
    """

    action: Literal["start", "resume", "finished"]
    checkpoint: Path | None
    found: str


def decide(run_dir: str | os.PathLike[str], job: dict[str, Any]) -> Decision:
    """What ``--autoresume`` does with ``run_dir`` for ``job`` (a resolved job); call it
    on rank 0 alone (see :func:`~loom.trainer.runtime.decided_by_rank_zero`).

    Raises:
        AutoresumeError: ``run_dir`` is a file, holds files but no run, a run of another
            job (each difference named with both values), or a run still running.
    """
    files = RunDirectory(run_dir)
    path = files.path
    if path.exists() and not path.is_dir():
        raise AutoresumeError(f"--run-dir {path}: it is a file; give a directory.")
    if not path.exists() or not any(path.iterdir()):
        return Decision("start", None, f"{path} is new: the run starts there")
    if not files.config.is_file():
        raise AutoresumeError(
            f"--run-dir {path}: it holds files but no config.yaml, so no run of loom's; "
            "give a new or empty directory, or the directory of this job's run."
        )
    saved = _saved_job(files)
    _check_same_job(files.path, saved, job)
    status = read_status(files)
    if status is not None and status.state is RunState.RUNNING and not _earlier_incarnation(files):
        raise AutoresumeError(
            f"--run-dir {path}: its run is still running ({status.detail}); stop it "
            "(SIGTERM saves a checkpoint), then run this again."
        )
    longer = saved["trainer"]["max_duration"] != job["trainer"]["max_duration"]
    if status is not None and status.state is RunState.FINISHED and not longer:
        return Decision(
            "finished", None, f"{path}: the run finished ({status.detail}); nothing to do"
        )
    checkpoint = files.latest_checkpoint(job)
    how = "stopped" if status is None else status.state.value
    if checkpoint is None:
        return Decision(
            "start", None, f"{path}: the run {how} before its first checkpoint: it starts again"
        )
    return Decision("resume", checkpoint, f"{path}: the run {how}; resuming from {checkpoint}")


def _check_same_job(path: Path, saved: dict[str, Any], job: dict[str, Any]) -> None:
    changed = unresumable(job_differences(saved, job))
    if changed:
        raise AutoresumeError(
            f"--run-dir {path} holds a run of another job: this one changes "
            f"{describe_differences(changed, saved, job)}; a resumed run may change only "
            "trainer.max_duration. Give another --run-dir for this job."
        )
    refused = length_change_refused(saved, job)
    if refused is not None:
        raise AutoresumeError(
            f"--run-dir {path}: {refused}. Give the run's own duration, or another --run-dir."
        )


def _saved_job(files: RunDirectory) -> dict[str, Any]:
    try:
        return resolve_job(read_job_file(files.config))
    except ConfigError as error:
        raise AutoresumeError(
            f"--run-dir {files.path}: its {files.config.name} cannot be read as a job: "
            f"{error} Repair it, or give another --run-dir."
        ) from None


def _earlier_incarnation(files: RunDirectory) -> bool:
    """Whether the process recorded as running the run was an earlier incarnation of
    this launch: the same torchrun run at an earlier attempt, or the same SLURM job
    before a requeue. It ended with its launch (and wherever it ran, it cannot be looked
    at from here); another launch's run is still someone else's."""
    try:
        recorded = json.loads(files.status.read_text(encoding="utf-8")).get("launch") or {}
    except (OSError, ValueError):
        return False
    now = launch_of_this_process()
    for job, count in (
        ("torchelastic_run_id", "torchelastic_attempt"),
        ("slurm_job_id", "slurm_restart_count"),
    ):
        same_launch = job in now and recorded.get(job) == now[job]
        if same_launch and int(recorded.get(count, 0)) < int(now.get(count, 0)):
            return True
    return False
