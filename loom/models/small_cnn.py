"""A small convolutional classifier for small images (8x8 digits up to 32x32 CIFAR)."""

from __future__ import annotations

import torch
from torch import nn

from loom.models.checks import check_dropout, check_positive_ints

__all__ = ["SmallCNN"]


class SmallCNN(nn.Module):
    """Three 3x3 conv-batchnorm-ReLU stages, a 2x2 max-pool after the first two, global
    average pooling, then dropout and a linear classifier.

    Args:
        num_classes: Output classes (a job fills it from the dataset).
        in_channels: Channels of the input images (filled from the dataset).
        width: Channels of the first stage; the later stages have 2x and 4x.
        dropout: Dropout probability before the classifier.

    Examples:
        >>> import torch
        >>> SmallCNN(num_classes=10, in_channels=1)(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self, num_classes: int, in_channels: int = 3, width: int = 32, dropout: float = 0.0
    ):
        super().__init__()
        check_positive_ints(num_classes=num_classes, in_channels=in_channels, width=width)
        check_dropout(dropout)
        channels = [in_channels, width, 2 * width, 4 * width]
        layers: list[nn.Module] = []
        for stage in range(3):
            layers += [
                nn.Conv2d(channels[stage], channels[stage + 1], 3, padding=1, bias=False),
                nn.BatchNorm2d(channels[stage + 1]),
                nn.ReLU(inplace=True),
            ]
            if stage < 2:
                # ceil_mode keeps a 1-pixel map at 1 pixel rather than emptying it
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(4 * width, num_classes)
        )

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        features = self.features(inputs)
        return self.classifier(features.mean(dim=(2, 3)))
