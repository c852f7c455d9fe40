"""A folder of images, one subfolder per class, for each split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loom.data.transforms import image_transform

__all__ = ["image_folder"]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def image_folder(
    root: str,
    split: str = "train",
    image_size: int = 224,
    random_resized_crop: bool = False,
    horizontal_flip: bool = False,
    normalize: bool = True,
) -> Any:
    """Images under ``root/<split>/<class name>/`` (torchvision's ``ImageFolder``).

    Class names are the subfolder names, sorted; each image is resized (shorter
    side) and center-cropped to ``image_size``.

    Args:
        root: The folder that holds one subfolder per split.
        split: The split's subfolder, e.g. ``"train"`` or ``"val"``.
        image_size: Side of the square images the model gets.
        random_resized_crop: A random crop of random scale and aspect ratio instead
            of the center crop (the standard ImageNet training augmentation).
        horizontal_flip: Flip half the images.
        normalize: Standardize with the ImageNet channel means and deviations.
    """
    import torchvision

    folder = Path(root).expanduser() / split
    if not folder.is_dir() or not any(child.is_dir() for child in folder.iterdir()):
        raise FileNotFoundError(
            f"dataset 'image_folder': no class folders in {str(folder)!r}. Put the "
            f"{split!r} images there, one subfolder per class: {folder}/<class name>/<image>.png"
        )
    transform = image_transform(
        mean=_IMAGENET_MEAN,
        std=_IMAGENET_STD,
        normalize=normalize,
        horizontal_flip=horizontal_flip,
        resize=image_size,
        random_resized_crop=random_resized_crop,
    )
    return torchvision.datasets.ImageFolder(str(folder), transform=transform)
