"""The loaders of a job: their arguments sit next to the dataset's in a data section, and
its ``loader`` key chooses the kind, a torch DataLoader (the default) or a
:class:`~loom.data.memory_loader.MemoryLoader` that holds the dataset on the device."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from loom.data.memory_loader import MemoryLoader

__all__ = [
    "LOADERS",
    "LOADER_FACTS",
    "eval_loader",
    "memory_eval_loader",
    "memory_train_loader",
    "train_loader",
]

LOADER_FACTS = frozenset({"dataset", "device", "input_key"})
"""What a loader factory is given by the job rather than by its data section: the
dataset, and for a memory loader the run's device and ``trainer.input_key``."""


def train_loader(
    dataset: Dataset,
    batch_size: int = 64,
    shuffle: bool = True,
    num_workers: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    """The training DataLoader.

    Args:
        batch_size: Samples per batch.
        shuffle: A new order every epoch (seeded by the job's ``seed``).
        num_workers: Worker processes loading batches; 0 loads in the training process.
        drop_last: Drop a last partial batch.
    """
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        drop_last=drop_last,
        persistent_workers=num_workers > 0,
    )


def eval_loader(dataset: Dataset, batch_size: int = 256, num_workers: int = 0) -> DataLoader:
    """The evaluation DataLoader, in the dataset's order.

    Args:
        batch_size: Samples per batch.
        num_workers: Worker processes loading batches; 0 loads in the training process.
    """
    return DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)


def memory_train_loader(
    dataset: Dataset,
    device: torch.device,
    input_key: int | str,
    batch_size: int = 64,
    shuffle: bool = True,
    drop_last: bool = False,
    random_crop_padding: int = 0,
    horizontal_flip: bool = False,
) -> MemoryLoader:
    """The training data held whole on the run's device (``loader: memory``).

    Args:
        batch_size: Samples per batch.
        shuffle: A new order every epoch (seeded by the job's ``seed``), the
            DataLoader's.
        drop_last: Drop a last partial batch.
        random_crop_padding: Pad by this many pixels and crop back at a random place,
            batched on the device; 0 for none. A dataset's own option of that name is
            this one's when the loader is ``memory``.
        horizontal_flip: Flip half the images left to right, batched on the device;
            likewise the dataset's option of that name.
    """
    return MemoryLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        device=device,
        input_key=input_key,
        random_crop_padding=random_crop_padding,
        horizontal_flip=horizontal_flip,
    )


def memory_eval_loader(
    dataset: Dataset, device: torch.device, input_key: int | str, batch_size: int = 256
) -> MemoryLoader:
    """The evaluation data held whole on the run's device, in the dataset's order.

    Args:
        batch_size: Samples per batch.
    """
    return MemoryLoader(dataset, batch_size=batch_size, device=device, input_key=input_key)


LOADERS: dict[str, dict[str, Any]] = {
    "train": {"dataloader": train_loader, "memory": memory_train_loader},
    "eval": {"dataloader": eval_loader, "memory": memory_eval_loader},
}
"""Each data section's loader factories, by the name its ``loader`` key gives."""
