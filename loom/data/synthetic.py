"""Gaussian clusters shaped like images: a dataset for quick checks, made on the spot."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from loom.data.labelled import LabelledTensors

__all__ = ["synthetic"]


def synthetic(
    split: Literal["train", "test"] = "train",
    num_samples: int = 1024,
    num_classes: int = 10,
    shape: Sequence[int] = (3, 32, 32),
    noise: float = 1.0,
    seed: int = 0,
) -> LabelledTensors:
    """Examples of ``num_classes`` classes, each a fixed random center plus Gaussian noise.

    The class centers depend on ``seed`` alone, so both splits share them; the
    samples of the ``"test"`` split are drawn from a different stream.

    Args:
        split: ``"train"`` or ``"test"``.
        num_samples: Examples in the split.
        num_classes: Classes, named ``"class_0"``, ``"class_1"``, ...
        shape: The shape of one input.
        noise: Standard deviation of the noise around each center (the centers
            are standard normal), so larger means harder.
        seed: Seeds the centers and the samples.

    Examples:
        >>> data = synthetic(num_samples=8, num_classes=2, shape=[1, 4, 4])
        >>> len(data), tuple(data[0][0].shape), data.classes
        (8, (1, 4, 4), ['class_0', 'class_1'])
    """
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r} must be 'train' or 'test'.")
    for name, value in (("num_samples", num_samples), ("num_classes", num_classes)):
        if type(value) is not int or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive int.")
    if not shape or any(type(size) is not int or size < 1 for size in shape):
        raise ValueError(f"shape={shape!r} must be a list of positive ints.")
    if not noise >= 0:
        raise ValueError(f"noise={noise!r} must be >= 0.")
    centers = torch.randn(num_classes, *shape, generator=torch.Generator().manual_seed(seed))
    samples = torch.Generator().manual_seed(seed + (1 if split == "train" else 2))
    targets = torch.randint(0, num_classes, (num_samples,), generator=samples)
    inputs = centers[targets] + noise * torch.randn(num_samples, *shape, generator=samples)
    return LabelledTensors(inputs, targets, [f"class_{i}" for i in range(num_classes)])
