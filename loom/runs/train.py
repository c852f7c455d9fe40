"""Running a resolved job into a run directory: what ``loom train`` does."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loom.callbacks import Checkpoint, MetricsLogger, latest_checkpoint
from loom.config.build import build_job
from loom.config.schema import ConfigError
from loom.runs.noise import NoiseMemorization
from loom.runs.recorder import RunRecorder
from loom.trainer.distributed import is_main_process

__all__ = ["CHECKPOINTS", "dry_run_job", "train_job"]

CHECKPOINTS = "checkpoints"
"""The folder of a run directory that holds its checkpoints."""


def train_job(
    job: Mapping[str, Any], run_dir: str | os.PathLike[str], *, resume: bool = False
) -> dict[str, float]:
    """Builds and trains ``job`` (a resolved job), filling ``run_dir``.

    The run directory gets ``config.yaml``, ``metrics.jsonl``, ``summary.json``,
    ``model.pt``, the plots (see :class:`RunRecorder`) and ``checkpoints/`` (every
    epoch, the latest kept, unless the job lists a ``checkpoint`` callback of its
    own); the console gets the job's callbacks and a table of metrics per epoch.

    Args:
        job: A resolved job.
        run_dir: The run directory.
        resume: Continue the run in ``run_dir`` from its latest checkpoint.

    Returns:
        The final metrics.

    Raises:
        ConfigError: ``resume`` and ``run_dir`` holds no checkpoint.
    """
    run_dir = Path(run_dir)
    load_path = None
    if resume:
        load_path = latest_checkpoint(run_dir / CHECKPOINTS)
        if load_path is None:
            raise ConfigError(
                f"--resume {run_dir}: no checkpoint in {run_dir / CHECKPOINTS}; give the run "
                "directory of a run that saved one."
            )
    return _run(job, run_dir, limit_batches=None, load_path=load_path)


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
        run_dir = Path(directory) / "run"
        _run(short, run_dir, limit_batches=num_batches, load_path=None)
        if not run_dir.exists():  # a rank other than 0 of a torchrun job writes nothing
            return []
        return sorted(path.name for path in run_dir.iterdir())


def _run(
    job: Mapping[str, Any], run_dir: Path, limit_batches: int | None, load_path: Path | None
) -> dict[str, float]:
    parts = build_job(job, limit_batches=limit_batches, checkpoint_folder=run_dir / CHECKPOINTS)
    extra = [MetricsLogger(run_dir / "metrics.jsonl")]
    if not any(isinstance(callback, Checkpoint) for callback in parts.callbacks):
        extra.append(Checkpoint(run_dir / CHECKPOINTS, interval="1ep", keep_last=1))
    noisy = parts.noisy_labels
    noise = noisy.describe() if noisy is not None else None
    extra.append(RunRecorder(run_dir, job, parts.algorithms, parts.classes, noise))
    if noisy is not None:
        extra.append(NoiseMemorization(noisy))  # last: at *_end it runs first, before logging
        if is_main_process():
            print(
                f"label noise: {noise['flipped']} of {len(noisy)} training labels flipped "
                f"({noise['flipped_fraction']:.1%}, {noise['kind']}, seed {noise['seed']})"
            )
    return parts.trainer(extra, load_path=load_path).fit()
