"""scikit-learn's bundled handwritten digits: 1797 real 8x8 images, no download."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from loom.data.labelled import LabelledTensors

__all__ = ["NUM_TEST_IMAGES", "digits"]

NUM_TEST_IMAGES = 360
"""Images held out as the test split: 20% of 1797, rounded up to a multiple of 10."""

_SPLIT_SEED = 0  # the split is part of the dataset's definition: never change it


def digits(split: Literal["train", "test"] = "train") -> LabelledTensors:
    """The UCI handwritten digits shipped inside scikit-learn, as ``(1, 8, 8)`` images.

    A fixed random 80/20 split (the same on every machine: NumPy's legacy seeded
    generator) gives 1437 training and 360 test images. Pixels (0 to 16) are scaled
    to [0, 1], then standardized by the training split's mean and deviation.

    Args:
        split: ``"train"`` or ``"test"``.

    Raises:
        ImportError: scikit-learn is not installed; the message says how to get it.

    Examples:
        >>> train = digits("train")
        >>> len(train), tuple(train[0][0].shape), train.classes[:3]
        (1437, (1, 8, 8), ['0', '1', '2'])
    """
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r} must be 'train' or 'test'.")
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ImportError(
            "the 'digits' dataset comes with scikit-learn, which is not installed; "
            "install it with: python3 -m pip install scikit-learn "
            "(or install loom with its 'digits' extra: python3 -m pip install -e \".[digits]\")"
        ) from error
    bunch = load_digits()
    images = bunch.images.astype(np.float32) / 16.0
    order = np.random.RandomState(_SPLIT_SEED).permutation(len(images))
    test_indices, train_indices = order[:NUM_TEST_IMAGES], order[NUM_TEST_IMAGES:]
    mean, std = images[train_indices].mean(), images[train_indices].std()
    indices = train_indices if split == "train" else test_indices
    inputs = torch.from_numpy((images[indices] - mean) / std).unsqueeze(1)
    targets = torch.from_numpy(bunch.target[indices]).long()
    return LabelledTensors(inputs, targets, [str(name) for name in bunch.target_names])
