"""Running a resolved job into a run directory: what ``loom train`` does."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loom.callbacks import MetricsLogger
from loom.config.build import build_job
from loom.runs.recorder import RunRecorder

__all__ = ["dry_run_job", "train_job"]


def train_job(job: Mapping[str, Any], run_dir: str | os.PathLike[str]) -> dict[str, float]:
    """Builds and trains ``job`` (a resolved job), filling ``run_dir``.

    The run directory gets ``config.yaml``, ``metrics.jsonl``, ``summary.json``,
    ``model.pt`` and the plots (see :class:`RunRecorder`); the console gets the
    job's callbacks (a progress bar) and a table of metrics per epoch.

    Returns:
        The final metrics.
    """
    return _run(job, Path(run_dir), limit_batches=None)


def dry_run_job(job: Mapping[str, Any], num_batches: int) -> list[str]:
    """Runs ``num_batches`` training and evaluation batches of ``job`` through every part
    of it, loggers and run files included, in a temporary directory then removed.

    Returns:
        The names of the files the run wrote.
    """
    if type(num_batches) is not int or num_batches < 1:
        raise ValueError(f"the dry run's batch count must be a positive int, got {num_batches!r}.")
    short = {**job, "trainer": {**job["trainer"], "max_duration": f"{num_batches}ba"}}
    with tempfile.TemporaryDirectory(prefix="loom-dry-run-") as directory:
        run_dir = Path(directory) / "run"
        _run(short, run_dir, limit_batches=num_batches)
        return sorted(path.name for path in run_dir.iterdir())


def _run(job: Mapping[str, Any], run_dir: Path, limit_batches: int | None) -> dict[str, float]:
    parts = build_job(job, limit_batches=limit_batches)
    recorder = RunRecorder(run_dir, job, parts.algorithms, parts.classes)
    trainer = parts.trainer([MetricsLogger(run_dir / "metrics.jsonl"), recorder])
    return trainer.fit()
