"""Run directories: what a job leaves behind, its plots, and comparing runs."""

from loom.runs.compare import compare_runs, load_run
from loom.runs.recorder import RunRecorder, new_run_dir

__all__ = ["RunRecorder", "compare_runs", "load_run", "new_run_dir"]
