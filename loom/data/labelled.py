"""In-memory labelled examples: the dataset type of the embedded and synthetic sets."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

__all__ = ["LabelledTensors"]


class LabelledTensors(Dataset):
    """``(inputs[i], targets[i])`` pairs held as two tensors, with the class names.

    Args:
        inputs: One row per example.
        targets: Class indices, one per example.
        classes: The name of each class, indexed by target.

    Examples:
        >>> import torch
        >>> data = LabelledTensors(torch.zeros(3, 2), torch.tensor([0, 1, 1]), ["a", "b"])
        >>> len(data), data[1][1].item(), data.classes
        (3, 1, ['a', 'b'])
    """

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, classes: Sequence[str]):
        if len(inputs) != len(targets):
            raise ValueError(f"{len(inputs)} inputs but {len(targets)} targets.")
        self.inputs = inputs
        self.targets = targets
        self.classes = list(classes)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inputs[index], self.targets[index]
