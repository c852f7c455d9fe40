"""Noisy labels for any classification dataset: a share of the training labels made wrong."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch.utils.data import Dataset

__all__ = ["NoisyLabels"]


class NoisyLabels(Dataset):
    """``dataset`` with a fraction ``rate`` of its labels replaced by wrong ones.

    ``"symmetric"`` gives each chosen sample a class drawn uniformly from the other
    classes; ``"pairs"`` moves each chosen sample of class ``c`` to class
    ``(c + 1) % num_classes``. Exactly ``round(rate * len(dataset))`` labels change,
    chosen uniformly; the choice depends on ``seed`` alone. The clean labels stay in
    :attr:`clean_targets`, and :attr:`flipped` marks the changed samples.

    Args:
        dataset: A dataset of ``(input, class index)`` with a ``targets`` attribute
            (all of loom's and torchvision's classification sets have one).
        rate: The fraction of labels to make wrong, in [0, 1).
        kind: ``"symmetric"`` or ``"pairs"``.
        seed: Seeds which samples change and to what.
        num_classes: The number of classes; by default ``len(dataset.classes)``.

    Examples:
        >>> import torch
        >>> from loom.data import synthetic
        >>> noisy = NoisyLabels(synthetic(num_samples=100, num_classes=4), rate=0.2)
        >>> int(noisy.flipped.sum()), bool((noisy.targets != noisy.clean_targets).sum() == 20)
        (20, True)
    """

    training_only = True
    """A job refuses it on evaluation data, which measures against the true labels."""

    def __init__(
        self,
        dataset: Any,
        rate: float,
        kind: Literal["symmetric", "pairs"] = "symmetric",
        seed: int = 0,
        num_classes: int | None = None,
    ):
        if not isinstance(rate, int | float) or not 0.0 <= rate < 1.0:
            raise ValueError(f"label_noise rate={rate!r} must be a fraction in [0, 1).")
        if kind not in ("symmetric", "pairs"):
            raise ValueError(f"label_noise kind={kind!r} must be 'symmetric' or 'pairs'.")
        targets = getattr(dataset, "targets", None)
        if targets is None:
            raise TypeError(
                f"label noise needs the dataset's labels as a `targets` attribute; "
                f"{type(dataset).__name__} has none."
            )
        if not isinstance(dataset[0], tuple | list):
            raise TypeError(
                f"label noise needs (input, class index) samples, but the dataset's are "
                f"{type(dataset[0]).__name__}s; put label_noise before wrappers that change "
                "the samples (as_dict)."
            )
        if num_classes is None:
            num_classes = len(dataset.classes)
        self.dataset = dataset
        self.classes = getattr(dataset, "classes", None)
        self.rate, self.kind, self.seed = rate, kind, seed
        self.clean_targets = torch.as_tensor(targets, dtype=torch.long).clone()
        generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(self.clean_targets), generator=generator)
        chosen = order[: round(rate * len(self.clean_targets))]
        self.targets = self.clean_targets.clone()
        if kind == "symmetric":
            # A uniform draw among the other num_classes - 1 classes: shift by 1 to C - 1.
            shifts = torch.randint(1, num_classes, (len(chosen),), generator=generator)
        else:
            shifts = torch.ones(len(chosen), dtype=torch.long)
        self.targets[chosen] = (self.clean_targets[chosen] + shifts) % num_classes
        self.flipped = self.targets != self.clean_targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, torch.Tensor]:
        return self.dataset[index][0], self.targets[index]

    def describe(self) -> dict[str, Any]:
        """The noise as plain data, for a run's summary."""
        return {
            "rate": self.rate,
            "kind": self.kind,
            "seed": self.seed,
            "flipped": int(self.flipped.sum()),
            "flipped_fraction": float(self.flipped.float().mean()),
        }
