"""MNIST and Fashion-MNIST from their raw IDX files, through torchvision, offline."""

from __future__ import annotations

from typing import Any, Literal

from loom.data.local_files import require_files
from loom.data.transforms import image_transform

__all__ = ["fashion_mnist", "mnist"]

_RAW_FILES = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
]


def mnist(
    root: str,
    split: Literal["train", "test"] = "train",
    random_crop_padding: int = 0,
    normalize: bool = True,
) -> Any:
    """MNIST from ``root/MNIST/raw/`` (the four IDX files, uncompressed).

    Args:
        root: The folder that holds ``MNIST/raw``.
        split: ``"train"`` (60000 images) or ``"test"`` (10000).
        random_crop_padding: Random crops after padding by this many pixels; 0 for none.
        normalize: Standardize with MNIST's mean and deviation.
    """
    return _load("MNIST", root, split, random_crop_padding, normalize, (0.1307,), (0.3081,))


def fashion_mnist(
    root: str,
    split: Literal["train", "test"] = "train",
    random_crop_padding: int = 0,
    normalize: bool = True,
) -> Any:
    """Fashion-MNIST from ``root/FashionMNIST/raw/`` (the four IDX files, uncompressed).

    Args:
        root: The folder that holds ``FashionMNIST/raw``.
        split: ``"train"`` (60000 images) or ``"test"`` (10000).
        random_crop_padding: Random crops after padding by this many pixels; 0 for none.
        normalize: Standardize with Fashion-MNIST's mean and deviation.
    """
    return _load("FashionMNIST", root, split, random_crop_padding, normalize, (0.2860,), (0.3530,))


def _load(
    folder: str,
    root: str,
    split: str,
    random_crop_padding: int,
    normalize: bool,
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> Any:
    import torchvision

    if split not in ("train", "test"):
        raise ValueError(f"split={split!r} must be 'train' or 'test'.")
    name = "mnist" if folder == "MNIST" else "fashion_mnist"
    require_files(
        root,
        name,
        [f"{folder}/raw/{file}" for file in _RAW_FILES],
        f"the four uncompressed {folder} IDX files in {folder}/raw/",
    )
    dataset_class = getattr(torchvision.datasets, folder)
    transform = image_transform(
        mean=mean, std=std, normalize=normalize, random_crop_padding=random_crop_padding
    )
    return dataset_class(root, train=split == "train", transform=transform, download=False)
