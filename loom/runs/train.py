"""Running a resolved job into a run directory: what ``loom train`` does."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from loom.callbacks import Checkpoint, MetricsLogger
from loom.config.build import build_job
from loom.config.run_directory import RunDirectory
from loom.config.schema import ConfigError
from loom.runs.recorder import RunRecorder
from loom.runs.status import recording_status
from loom.trainer import Trainer

__all__ = ["dry_run_job", "job_trainer", "train_job"]


def train_job(
    job: Mapping[str, Any],
    run_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    checkpoint: str | os.PathLike[str] | None = None,
    on_start: Callable[[], None] | None = None,
) -> dict[str, float]:
    """Builds and trains ``job`` (a resolved job), filling ``run_dir``.

    The run directory gets ``status.json`` (running, then how it ended: see
    :mod:`loom.runs.status`), ``config.yaml``, ``metrics.jsonl``, ``summary.json``,
    ``model.pt``, the plots (see :class:`RunRecorder`) and ``checkpoints/`` (every
    epoch, the latest kept, unless the job lists a ``checkpoint`` callback of its
    own); the console gets the job's callbacks and a table of metrics per epoch.

    Args:
        job: A resolved job.
        run_dir: The run directory.
        resume: Continue the run in ``run_dir`` from its latest checkpoint.
        checkpoint: Continue the run in ``run_dir`` from this checkpoint (one that
            every rank was told, rather than each rank's look at the latest).
        on_start: Called once the job is built, just before training starts (and so
            before the run directory is filled): a job that cannot be built never
            calls it.

    Returns:
        The final metrics.

    Raises:
        ConfigError: ``resume`` and ``run_dir`` holds no checkpoint.
    """
    files = RunDirectory(run_dir)
    load_path = None if checkpoint is None else Path(checkpoint)
    if resume and load_path is None:
        load_path = files.latest_checkpoint(job)
        if load_path is None:
            folders = ", ".join(map(str, files.checkpoint_folders(job)))
            raise ConfigError(
                f"--resume {files.path}: no checkpoint in {folders}; "
                "give the run directory of a run that saved one."
            )
    return _run(job, files, limit_batches=None, load_path=load_path, on_start=on_start)


def dry_run_job(job: Mapping[str, Any], num_batches: int) -> list[str]:
    """Runs ``num_batches`` training and evaluation batches of ``job`` through every part
    of it, loggers, checkpoints and run files included, in a temporary directory then
    removed.

    Returns:
        The names of the files the run wrote.
    """
    if type(num_batches) is not int or num_batches < 1:
        raise ValueError(f"the dry run's batch count must be a positive int, got {num_batches!r}.")
    short = {**job, "trainer": {**job["trainer"], "max_duration": f"{num_batches}ba"}}
    with tempfile.TemporaryDirectory(prefix="loom-dry-run-") as directory:
        files = RunDirectory(Path(directory) / "run")
        _run(short, files, limit_batches=num_batches, load_path=None)
        if not files.path.exists():  # a rank other than 0 of a torchrun job writes nothing
            return []
        return sorted(path.name for path in files.path.iterdir())


def job_trainer(
    job: Mapping[str, Any],
    run_dir: str | os.PathLike[str],
    *,
    limit_batches: int | None = None,
    load_path: str | os.PathLike[str] | None = None,
) -> Trainer:
    """The Trainer that :func:`train_job` runs: the job's parts, then the callbacks that
    fill ``run_dir``.

    Those come after the job's own callbacks, in the order they read each other: the
    metrics log reads what the job's callbacks add to ``state.metrics``; the checkpoint
    callbacks (the job's, or one every epoch) come after the log, so that no checkpoint
    is ever ahead of it, and before the recorder, whose summary reads the
    ``state.checkpoint_path`` that they set, at ``fit_end`` too. The job's trackers
    come last, after the recorder that draws the plots they upload. The order is
    :meth:`~loom.config.build.JobParts.trainer`'s.
    ``trainer.schedule()`` shows it.
    """
    files = RunDirectory(run_dir)
    parts = build_job(
        job,
        limit_batches=limit_batches,
        checkpoint_folder=files.checkpoints,
        dry_run=limit_batches is not None,  # only a dry run limits the batches
    )
    extra = [MetricsLogger(files.metrics)]
    if not any(isinstance(callback, Checkpoint) for callback in parts.callbacks):
        extra.append(Checkpoint(files.checkpoints, interval="1ep", keep_last=1))
    extra.append(RunRecorder(files, job, parts.classes))
    return parts.trainer(extra, load_path=load_path)


def _run(
    job: Mapping[str, Any],
    files: RunDirectory,
    limit_batches: int | None,
    load_path: Path | None,
    on_start: Callable[[], None] | None = None,
) -> dict[str, float]:
    trainer = job_trainer(job, files.path, limit_batches=limit_batches, load_path=load_path)
    if on_start is not None:
        on_start()
    with recording_status(files, trainer.state):
        return trainer.fit()
