"""CIFAR-10 and CIFAR-100 from the "python version" archives, read without running pickles."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from loom.data.local_files import require_files
from loom.data.transforms import image_transform

__all__ = ["CifarDataset", "cifar10", "cifar100"]

_MEAN = (0.4914, 0.4822, 0.4465)
_STD = (0.2470, 0.2435, 0.2616)

_CIFAR10_FILES = {
    "train": [f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)],
    "test": ["cifar-10-batches-py/test_batch"],
    "meta": "cifar-10-batches-py/batches.meta",
}
_CIFAR100_FILES = {
    "train": ["cifar-100-python/train"],
    "test": ["cifar-100-python/test"],
    "meta": "cifar-100-python/meta",
}


class CifarDataset(Dataset):
    """32x32 RGB images held as one uint8 tensor, with their labels and class names."""

    def __init__(
        self, images: torch.Tensor, targets: list[int], classes: list[str], transform: Any
    ):
        self.images = images
        self.targets = targets
        self.classes = classes
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[index]), self.targets[index]


def cifar10(
    root: str,
    split: Literal["train", "test"] = "train",
    random_crop_padding: int = 0,
    horizontal_flip: bool = False,
    normalize: bool = True,
) -> CifarDataset:
    """CIFAR-10 from ``root/cifar-10-batches-py/`` (the extracted ``cifar-10-python.tar.gz``).

    Args:
        root: The folder that holds ``cifar-10-batches-py``.
        split: ``"train"`` (50000 images) or ``"test"`` (10000).
        random_crop_padding: Random crops after padding by this many pixels (4 is
            the standard augmentation); 0 for none.
        horizontal_flip: Flip half the images (the standard augmentation).
        normalize: Standardize with CIFAR-10's channel means and deviations.
    """
    return _load(
        root,
        split,
        "cifar10",
        _CIFAR10_FILES,
        b"labels",
        b"label_names",
        random_crop_padding,
        horizontal_flip,
        normalize,
    )


def cifar100(
    root: str,
    split: Literal["train", "test"] = "train",
    random_crop_padding: int = 0,
    horizontal_flip: bool = False,
    normalize: bool = True,
) -> CifarDataset:
    """CIFAR-100, fine labels, from ``root/cifar-100-python/`` (from ``cifar-100-python.tar.gz``).

    Args:
        root: The folder that holds ``cifar-100-python``.
        split: ``"train"`` (50000 images) or ``"test"`` (10000).
        random_crop_padding: Random crops after padding by this many pixels (4 is
            the standard augmentation); 0 for none.
        horizontal_flip: Flip half the images (the standard augmentation).
        normalize: Standardize with CIFAR's channel means and deviations.
    """
    return _load(
        root,
        split,
        "cifar100",
        _CIFAR100_FILES,
        b"fine_labels",
        b"fine_label_names",
        random_crop_padding,
        horizontal_flip,
        normalize,
    )


def _load(
    root: str,
    split: str,
    dataset: str,
    files: dict[str, Any],
    label_key: bytes,
    names_key: bytes,
    random_crop_padding: int,
    horizontal_flip: bool,
    normalize: bool,
) -> CifarDataset:
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r} must be 'train' or 'test'.")
    archive = "cifar-10-python.tar.gz" if dataset == "cifar10" else "cifar-100-python.tar.gz"
    folder = require_files(
        root,
        dataset,
        [*files[split], files["meta"]],
        f"the extracted {archive} from https://www.cs.toronto.edu/~kriz/cifar.html",
    )
    batches = [_read_pickle(folder / name) for name in files[split]]
    data = np.concatenate([batch[b"data"] for batch in batches])
    targets = [int(label) for batch in batches for label in batch[label_key]]
    classes = [name.decode() for name in _read_pickle(folder / files["meta"])[names_key]]
    images = torch.from_numpy(np.ascontiguousarray(data.reshape(-1, 3, 32, 32), dtype=np.uint8))
    transform = image_transform(
        mean=_MEAN,
        std=_STD,
        normalize=normalize,
        random_crop_padding=random_crop_padding,
        horizontal_flip=horizontal_flip,
    )
    return CifarDataset(images, targets, classes, transform)


class _ArraysOnly(pickle.Unpickler):
    """Unpickles dicts, lists, bytes and NumPy arrays; refuses every other global.

    The CIFAR archives are pickles, and a pickle can run any code: a file
    swapped in the data folder must not be able to.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing {module}.{name}: not a CIFAR data file")
        return super().find_class(module, name)


def _read_pickle(path: Path | os.PathLike[str]) -> dict[bytes, Any]:
    try:
        with open(path, "rb") as file:
            return _ArraysOnly(file, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
        raise ValueError(f"{path} is not a readable CIFAR data file: {error}") from error
