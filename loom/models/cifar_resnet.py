"""ResNets for 32x32 images: a 3x3 stem and no max-pool, as in the CIFAR literature."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from loom.models.checks import check_positive_ints

__all__ = ["CifarResNet"]


class _BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = _shortcut(in_channels, channels, stride)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(inputs)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(inputs))


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int):
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.shortcut = _shortcut(in_channels, out_channels, stride)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(inputs)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(inputs))


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
    )


_LAYOUTS = {
    18: (_BasicBlock, (2, 2, 2, 2)),
    34: (_BasicBlock, (3, 4, 6, 3)),
    50: (_Bottleneck, (3, 4, 6, 3)),
    101: (_Bottleneck, (3, 4, 23, 3)),
}


class CifarResNet(nn.Module):
    """ResNet-18/34/50/101 with a 3x3 stride-1 stem and no max-pool, for 32x32 inputs.

    The ImageNet stem (7x7 stride 2, then a max-pool) would shrink a 32x32 image to
    8x8 before the first block; this one keeps 32x32, as in He et al.'s CIFAR runs.

    Args:
        num_classes: Output classes (a job fills it from the dataset).
        depth: 18, 34, 50 or 101 layers.
        in_channels: Channels of the input images (filled from the dataset).
        width: Channels of the first stage; each later stage doubles them.

    Examples:
        >>> import torch
        >>> model = CifarResNet(num_classes=10, depth=18, width=8)
        >>> model(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        num_classes: int,
        depth: Literal[18, 34, 50, 101] = 18,
        in_channels: int = 3,
        width: int = 64,
    ):
        super().__init__()
        check_positive_ints(num_classes=num_classes, in_channels=in_channels, width=width)
        if depth not in _LAYOUTS:
            raise ValueError(f"depth={depth!r} must be one of {sorted(_LAYOUTS)}.")
        block, blocks_per_stage = _LAYOUTS[depth]
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, 1, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        stages: list[nn.Module] = []
        channels = width
        for stage, num_blocks in enumerate(blocks_per_stage):
            stage_width = width * 2**stage
            for index in range(num_blocks):
                stride = 2 if stage > 0 and index == 0 else 1
                stages.append(block(channels, stage_width, stride))
                channels = stage_width * block.expansion
        self.stages = nn.Sequential(*stages)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        features = self.stages(self.stem(inputs))
        return self.classifier(features.mean(dim=(2, 3)))
