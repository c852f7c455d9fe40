"""Run directories: running a job into one, its plots, comparing runs, and exporting a
run's model."""

from loom.config.run_directory import RunDirectory
from loom.runs.compare import (
    FoundRuns,
    RunGroup,
    RunResults,
    compare_runs,
    compare_seeds,
    find_runs,
    group_runs,
    load_run,
)
from loom.runs.export import ExportError, RunExport, export_run
from loom.runs.recorder import RunRecorder, new_run_dir
from loom.runs.train import dry_run_job, job_trainer, train_job

__all__ = [
    "ExportError",
    "FoundRuns",
    "RunDirectory",
    "RunExport",
    "RunGroup",
    "RunRecorder",
    "RunResults",
    "compare_runs",
    "compare_seeds",
    "dry_run_job",
    "export_run",
    "find_runs",
    "group_runs",
    "job_trainer",
    "load_run",
    "new_run_dir",
    "train_job",
]
