"""The standard input pipeline of the image sets: optional augmentation, then normalization."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = ["image_transform"]


def image_transform(
    *,
    mean: Sequence[float],
    std: Sequence[float],
    normalize: bool = True,
    random_crop_padding: int = 0,
    horizontal_flip: bool = False,
    resize: int | None = None,
    random_resized_crop: bool = False,
) -> Callable[[Any], torch.Tensor]:
    """A PIL image or uint8 tensor in, a float ``(C, H, W)`` tensor out.

    Args:
        mean, std: Per-channel statistics for normalization.
        normalize: Subtract ``mean`` and divide by ``std`` (else values lie in [0, 1]).
        random_crop_padding: Pad by this many pixels, then crop back to the
            original size at a random place (4 is the CIFAR standard); 0 for none.
        horizontal_flip: Flip half the images left to right.
        resize: Resize the shorter side to this, then center-crop a square (for
            folders of images of mixed sizes); None keeps the size.
        random_resized_crop: With ``resize``, a random crop of random scale and
            aspect ratio resized to ``resize`` instead of the center crop.
    """
    from torchvision.transforms import v2  # here, so that importing loom.data stays light

    if type(random_crop_padding) is not int or random_crop_padding < 0:
        raise ValueError(f"random_crop_padding={random_crop_padding!r} must be an int >= 0.")
    if random_resized_crop and resize is None:
        raise ValueError("random_resized_crop needs the output size: set image_size.")
    steps: list[Any] = [v2.ToImage()]
    if resize is not None and random_resized_crop:
        steps.append(v2.RandomResizedCrop(resize, antialias=True))
    elif resize is not None:
        steps += [v2.Resize(resize, antialias=True), v2.CenterCrop(resize)]
    if random_crop_padding:
        steps.append(_RandomCropSameSize(random_crop_padding))
    if horizontal_flip:
        steps.append(v2.RandomHorizontalFlip())
    steps.append(v2.ToDtype(torch.float32, scale=True))
    if normalize:
        steps.append(v2.Normalize(list(mean), list(std)))
    return v2.Compose(steps)


class _RandomCropSameSize(torch.nn.Module):
    """Pads, then crops a random window of the input's own size."""

    def __init__(self, padding: int):
        super().__init__()
        self.padding = padding

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms import v2

        height, width = image.shape[-2:]
        return v2.RandomCrop((height, width), padding=self.padding)(image)
