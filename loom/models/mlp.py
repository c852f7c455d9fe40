"""A multi-layer perceptron over flattened inputs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from loom.models.checks import check_dropout, check_positive_ints

__all__ = ["MLP"]


class MLP(nn.Module):
    """Flattens each input, then linear-ReLU(-dropout) layers and a linear classifier.

    Args:
        num_classes: Output classes (a job fills it from the dataset).
        in_features: Values per input after flattening (filled from the dataset).
        hidden_sizes: Width of each hidden layer, in order.
        dropout: Dropout probability after each hidden layer.

    Examples:
        >>> import torch
        >>> MLP(num_classes=10, in_features=64, hidden_sizes=[32])(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        num_classes: int,
        in_features: int,
        hidden_sizes: Sequence[int] = (256, 256),
        dropout: float = 0.0,
    ):
        super().__init__()
        check_positive_ints(num_classes=num_classes, in_features=in_features)
        for index, size in enumerate(hidden_sizes):
            check_positive_ints(**{f"hidden_sizes[{index}]": size})
        check_dropout(dropout)
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for size in hidden_sizes:
            layers += [nn.Linear(width, size), nn.ReLU(inplace=True)]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.layers(inputs)
