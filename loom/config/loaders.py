"""The DataLoaders of a job: their arguments sit next to the dataset's in a data section."""

from __future__ import annotations

from torch.utils.data import DataLoader, Dataset

__all__ = ["eval_loader", "train_loader"]


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
