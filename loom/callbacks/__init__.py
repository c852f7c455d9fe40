"""Observers of a run: progress, metric logs and trackers (CSV, TensorBoard, MLflow),
checkpoints, early stopping, monitors (learning rates, throughput, a time limit),
label-noise memorisation."""

from loom.callbacks.checkpoint import Checkpoint, latest_checkpoint
from loom.callbacks.early_stopping import EarlyStopping
from loom.callbacks.loggers import CSVLogger, RecordLogger
from loom.callbacks.metrics_logger import MetricsLogError, MetricsLogger
from loom.callbacks.mlflow_logger import MLflowLogger
from loom.callbacks.monitors import LearningRates, MaxTime, Throughput
from loom.callbacks.noise_memorization import NoiseMemorization
from loom.callbacks.progress import ProgressBar
from loom.callbacks.tensorboard_logger import TensorBoardLogger

__all__ = [
    "CSVLogger",
    "Checkpoint",
    "EarlyStopping",
    "LearningRates",
    "MLflowLogger",
    "MaxTime",
    "MetricsLogError",
    "MetricsLogger",
    "NoiseMemorization",
    "ProgressBar",
    "RecordLogger",
    "TensorBoardLogger",
    "Throughput",
    "latest_checkpoint",
]
