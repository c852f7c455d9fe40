"""Samples as mappings: ``(input, label)`` becomes ``{"image": input, "label": label}``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch.utils.data import Dataset

__all__ = ["AsDict"]


class AsDict(Dataset):
    """``dataset`` whose samples are mappings, one key per item of each tuple sample.

    The default collate then makes dict batches, for models, losses and plugins that
    read batches by key (give the run's ``input_key`` and ``target_key`` as keys).

    Args:
        dataset: A dataset of tuple samples, e.g. ``(image, class index)``.
        keys: One name per item of a sample, in order.

    Examples:
        >>> from loom.data import synthetic
        >>> named = AsDict(synthetic(num_samples=4, shape=[2]), keys=["image", "label"])
        >>> sorted(named[0]), len(named), named.classes[:2]
        (['image', 'label'], 4, ['class_0', 'class_1'])
    """

    def __init__(self, dataset: Any, keys: Sequence[str] = ("image", "label")):
        if (
            isinstance(keys, str)
            or not keys
            or not all(isinstance(key, str) and key for key in keys)
            or len(set(keys)) != len(keys)
        ):
            raise ValueError(f"keys={keys!r} must be a list of distinct non-empty strings.")
        sample = dataset[0]
        if not isinstance(sample, tuple | list) or len(sample) != len(keys):
            shape = (
                f"a {len(sample)}-item {type(sample).__name__}"
                if isinstance(sample, tuple | list)
                else f"a {type(sample).__name__}"
            )
            raise ValueError(
                f"keys={list(keys)!r} names {len(keys)} items, but the dataset's samples are "
                f"{shape}; give one key per item."
            )
        self.dataset = dataset
        self.keys = list(keys)
        self.classes = getattr(dataset, "classes", None)
        self.targets = getattr(dataset, "targets", None)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return dict(zip(self.keys, self.dataset[index], strict=True))
