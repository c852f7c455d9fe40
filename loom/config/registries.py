"""Every name a job file can use, one registry per section."""

from __future__ import annotations

import torch

from loom import data, metrics, models, optim
from loom.algorithms import (
    EMA,
    SAM,
    SWA,
    ChannelsLast,
    CutMix,
    Distillation,
    LabelSmoothing,
    MixUp,
    MixUpOrCutMix,
    OnlineLabelSmoothing,
    StochasticDepth,
)
from loom.callbacks import (
    Checkpoint,
    CSVLogger,
    EarlyStopping,
    LearningRates,
    MaxTime,
    MLflowLogger,
    NoiseMemorization,
    ProgressBar,
    TensorBoardLogger,
    Throughput,
)
from loom.config.registry import Registry

__all__ = [
    "ALGORITHMS",
    "CALLBACKS",
    "DATASETS",
    "METRICS",
    "MODELS",
    "OPTIMIZERS",
    "REGISTRIES",
    "SCHEDULERS",
    "WRAPPERS",
]

# Filled from the training dataset when a job leaves them out.
DATASET_FACTS = ("num_classes", "n_classes", "in_channels", "in_features")

ALGORITHMS = Registry(
    "algorithm",
    {
        "channels_last": ChannelsLast,
        "cutmix": CutMix,
        "distillation": Distillation,
        "ema": EMA,
        "label_smoothing": LabelSmoothing,
        "mixup": MixUp,
        "mixup_or_cutmix": MixUpOrCutMix,
        "online_label_smoothing": OnlineLabelSmoothing,
        "sam": SAM,
        "stochastic_depth": StochasticDepth,
        "swa": SWA,
    },
    supplied=DATASET_FACTS,
)
"""Training methods: the name is the algorithm's folder in loom/algorithms."""

CALLBACKS = Registry(
    "callback",
    {
        "progress_bar": ProgressBar,
        "checkpoint": Checkpoint,
        "early_stopping": EarlyStopping,
        "learning_rates": LearningRates,
        "throughput": Throughput,
        "max_time": MaxTime,
        "noise_memorization": NoiseMemorization,
        "csv": CSVLogger,
        "tensorboard": TensorBoardLogger,
        "mlflow": MLflowLogger,
    },
    supplied={"folder", "log_dir", "csv_path", "hparams", "tracking_uri", "run_name"},
)
"""Observers. Every job also logs metrics to its run directory and the console, and
checkpoints every epoch into it unless it lists a ``checkpoint`` of its own, whose
``folder`` is the run directory's ``checkpoints/`` when left out; a ``tensorboard``
logger's ``log_dir`` is its ``tensorboard/`` (and its ``hparams`` the resolved job), a
``csv`` logger's file its ``metrics.csv``; an ``mlflow`` logger's ``tracking_uri`` is
``$MLFLOW_TRACKING_URI`` when set, else a SQLite store in its ``mlflow/``, its
``run_name`` the run directory's name and its ``hparams`` the resolved job. Trackers
run after the job's other callbacks, whose metrics they get too."""

METRICS = Registry(
    "metric",
    {
        "f1": metrics.f1,
        "precision": metrics.precision,
        "recall": metrics.recall,
        "auroc": metrics.auroc,
        "average_precision": metrics.average_precision,
        "matthews": metrics.matthews,
        "cohen_kappa": metrics.cohen_kappa,
    },
    supplied=DATASET_FACTS,
)
"""Evaluation metrics beside loom's own, on torchmetrics (``loom[metrics]``): each
entry of ``eval_metrics`` is recorded as ``eval/<key>``, its ``key`` the entry's
``name`` unless it gives one (``{name: recall, average: micro, key: micro_recall}``);
``num_classes`` comes from the dataset."""

DATASETS = Registry(
    "dataset",
    {
        "digits": data.digits,
        "synthetic": data.synthetic,
        "cifar10": data.cifar10,
        "cifar100": data.cifar100,
        "mnist": data.mnist,
        "fashion_mnist": data.fashion_mnist,
        "image_folder": data.image_folder,
    },
)
"""Datasets: each yields ``(image, class index)`` and knows its class names."""

WRAPPERS = Registry(
    "wrapper", {"label_noise": data.NoisyLabels, "as_dict": data.AsDict}, skip={"dataset"}
)
"""Dataset wrappers, named in a data section's ``wrap`` list and applied in its order,
each around the dataset the previous one made."""

MODELS = Registry(
    "model",
    {
        "small_cnn": models.SmallCNN,
        "mlp": models.MLP,
        "cifar_resnet": models.CifarResNet,
        "torchvision": models.torchvision_model,
    },
    supplied=DATASET_FACTS,
)
"""Models: ``num_classes``, ``in_channels`` and ``in_features`` come from the dataset."""

OPTIMIZERS = Registry(
    "optimizer",
    {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW},
    skip={"params"},
)
"""torch's optimizers, built on the model's parameters: their signatures are the schema."""

SCHEDULERS = Registry(
    "scheduler",
    {
        "constant": optim.constant,
        "cosine": optim.cosine,
        "step": optim.step,
        "multistep": optim.multistep,
        "onecycle": optim.onecycle,
        "plateau": optim.plateau,
    },
    skip={"optimizer", "batches_per_epoch", "total_batches"},
)
"""Learning-rate schedules stepped every batch, with times in epochs or batches, and
``plateau``, stepped after each evaluation on the metric it monitors."""

REGISTRIES = {
    "model": MODELS,
    "dataset": DATASETS,
    "wrapper": WRAPPERS,
    "optimizer": OPTIMIZERS,
    "scheduler": SCHEDULERS,
    "algorithm": ALGORITHMS,
    "callback": CALLBACKS,
    "metric": METRICS,
}
"""Each registry by the kind of component it holds, in the order of a job file."""
