"""Observers of a run: progress, metric logs and trackers (CSV, TensorBoard),
checkpoints, early stopping, monitors (learning rates, throughput, a time limit),
label-noise memorisation."""

from loom.callbacks.checkpoint import Checkpoint, latest_checkpoint
from loom.callbacks.early_stopping import EarlyStopping
from loom.callbacks.loggers import CSVLogger, TensorBoardLogger
from loom.callbacks.metrics_logger import MetricsLogger
from loom.callbacks.monitors import LearningRates, MaxTime, Throughput
from loom.callbacks.noise_memorization import NoiseMemorization
from loom.callbacks.progress import ProgressBar

__all__ = [
    "CSVLogger",
    "Checkpoint",
    "EarlyStopping",
    "LearningRates",
    "MaxTime",
    "MetricsLogger",
    "NoiseMemorization",
    "ProgressBar",
    "TensorBoardLogger",
    "Throughput",
    "latest_checkpoint",
]
