"""Observers of a run: progress, metric logs."""

from loom.callbacks.metrics_logger import MetricsLogger
from loom.callbacks.progress import ProgressBar

__all__ = ["MetricsLogger", "ProgressBar"]
