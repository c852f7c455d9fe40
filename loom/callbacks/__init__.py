"""Observers of a run: progress, metric logs, checkpoints."""

from loom.callbacks.checkpoint import Checkpoint, latest_checkpoint
from loom.callbacks.metrics_logger import MetricsLogger
from loom.callbacks.progress import ProgressBar

__all__ = ["Checkpoint", "MetricsLogger", "ProgressBar", "latest_checkpoint"]
