"""Run directories: running a job into one, its plots, and comparing runs."""

from loom.runs.compare import RunResults, compare_runs, load_run
from loom.runs.recorder import RunRecorder, new_run_dir
from loom.runs.train import dry_run_job, train_job

__all__ = [
    "RunRecorder",
    "RunResults",
    "compare_runs",
    "dry_run_job",
    "load_run",
    "new_run_dir",
    "train_job",
]
