"""Random crops and flips of a whole batch of images at once, on the batch's device.

The per-sample pipeline (:func:`~loom.data.transforms.image_transform`) crops and flips
one image at a time in the loading process; these do the batch in one gather, where
the batch already is (what :class:`~loom.data.memory_loader.MemoryLoader` uses).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["crop_and_flip", "draw_crops_and_flips"]


def draw_crops_and_flips(
    num_images: int,
    padding: int,
    flip: bool,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's crop offset ``(row, column)`` in ``[0, 2 * padding]``, and whether it
    is flipped left to right (half of them when ``flip``, none otherwise), drawn from
    ``generator`` on its device.

    Examples:
        >>> offsets, flips = draw_crops_and_flips(5, 2, True, torch.Generator().manual_seed(0))
        >>> offsets.shape, bool(offsets.max() <= 4), flips.dtype
        (torch.Size([5, 2]), True, torch.bool)
    """
    device = generator.device
    offsets = torch.randint(0, 2 * padding + 1, (num_images, 2), generator=generator, device=device)
    if flip:
        flips = torch.randint(0, 2, (num_images,), generator=generator, device=device).bool()
    else:
        flips = torch.zeros(num_images, dtype=torch.bool, device=device)
    return offsets, flips


def crop_and_flip(
    images: torch.Tensor,
    padding: int,
    offsets: torch.Tensor,
    flips: torch.Tensor,
    fill: float = 0.0,
) -> torch.Tensor:
    """``images`` (``N, C, H, W``) each padded by ``padding`` pixels of ``fill``, cropped
    back to ``H x W`` at its ``offsets`` row and column, and flipped left to right where
    ``flips`` says: one gather for the whole batch, a new tensor.

    Examples:
        >>> image = torch.arange(1.0, 5.0).reshape(1, 1, 2, 2)
        >>> crop_and_flip(image, 1, torch.tensor([[1, 1]]), torch.tensor([True]))[0, 0]
        tensor([[2., 1.],
                [4., 3.]])
        >>> crop_and_flip(image, 1, torch.tensor([[0, 0]]), torch.tensor([False]))[0, 0]
        tensor([[0., 0.],
                [0., 1.]])
    """
    if images.dim() != 4:
        raise ValueError(
            f"random crops and flips take images as (N, C, H, W), got a tensor of shape "
            f"{tuple(images.shape)}."
        )
    num_images, _, height, width = images.shape
    padded = F.pad(images, (padding,) * 4, value=fill) if padding else images
    rows = offsets[:, 0, None] + torch.arange(height, device=images.device)
    columns = torch.arange(width, device=images.device)
    # A flipped image reads its window's columns right to left: flipping is a reversed
    # column index, so one gather both crops and flips.
    columns = torch.where(flips[:, None], columns.flip(0), columns) + offsets[:, 1, None]
    which = torch.arange(num_images, device=images.device)[:, None, None]
    # Advanced indexing on dims 0, 2, 3 with the slice on dim 1 puts channels last.
    crops = padded[which, :, rows[:, :, None], columns[:, None, :]]
    return crops.permute(0, 3, 1, 2).contiguous()
