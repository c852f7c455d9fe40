"""How much of the label noise a model learned: accuracy on the flipped training samples."""

from __future__ import annotations

from typing import Any

import torch

from loom.trainer import Callback, State, unwrap_model

__all__ = ["NoiseMemorization"]


class NoiseMemorization(Callback):
    """At every ``epoch_end``, classifies the training samples whose labels were made
    wrong and records two metrics: ``train/noisy_clean_accuracy`` (the prediction is
    the true label: the model resisted the noise) and ``train/noisy_memorized`` (it is
    the wrong, training label: the model memorised it).

    The noisy samples are found in the training data: the first dataset, following
    each wrapper's ``dataset`` from the training loader's, that keeps both its
    ``targets`` and its ``clean_targets`` (a job's ``label_noise`` wrapper). They are
    read through that dataset's own dataset, so with a random augmentation in its
    transform they are classified augmented, as the model trains on them.

    It writes ``state.metrics``: list it before the callbacks that log metrics.

    Args:
        batch_size: Samples per forward pass.

    Raises:
        ValueError: At ``fit_start``, when the training data has no noisy labels.

    Examples:
        >>> import torch
        >>> from torch.utils.data import DataLoader
        >>> from loom import Trainer
        >>> from loom.data import NoisyLabels, synthetic
        >>> noisy = NoisyLabels(synthetic(num_samples=64, num_classes=4, shape=[8]), rate=0.25)
        >>> model = torch.nn.Linear(8, 4)
        >>> trainer = Trainer(
        ...     model, DataLoader(noisy, batch_size=16), max_duration="1ep", device="cpu",
        ...     optimizers=torch.optim.SGD(model.parameters(), lr=0.1),
        ...     callbacks=[NoiseMemorization()],
        ... )
        >>> sorted(key for key in trainer.fit() if "noisy" in key)
        ['train/noisy_clean_accuracy', 'train/noisy_memorized']
    """

    writes = ("metrics",)

    def __init__(self, batch_size: int = 512):
        if type(batch_size) is not int or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be an int >= 1.")
        self.batch_size = batch_size
        self._noisy: Any = None
        self._indices: list[int] = []

    def fit_start(self, state: State) -> None:
        self._noisy = _noisy_dataset(getattr(state.train_dataloader, "dataset", None))
        if self._noisy is None:
            raise ValueError(
                "NoiseMemorization needs training data with noisy labels (a dataset with "
                "targets and clean_targets, e.g. a job's label_noise wrapper); found none."
            )
        self._indices = self._noisy.flipped.nonzero().flatten().tolist()

    @torch.no_grad()
    def epoch_end(self, state: State) -> None:
        if not self._indices:
            return
        noisy, model = self._noisy, unwrap_model(state.model)
        was_training = model.training
        model.eval()
        clean = memorized = 0
        for start in range(0, len(self._indices), self.batch_size):
            chunk = self._indices[start : start + self.batch_size]
            inputs = torch.stack([noisy.dataset[i][0] for i in chunk]).to(state.device)
            predicted = model(inputs).argmax(dim=1).cpu()
            clean += int((predicted == noisy.clean_targets[chunk]).sum())
            memorized += int((predicted == noisy.targets[chunk]).sum())
        model.train(was_training)
        state.metrics["train/noisy_clean_accuracy"] = clean / len(self._indices)
        state.metrics["train/noisy_memorized"] = memorized / len(self._indices)


def _noisy_dataset(dataset: Any) -> Any:
    while dataset is not None:
        if all(hasattr(dataset, name) for name in ("targets", "clean_targets", "flipped")):
            return dataset
        dataset = getattr(dataset, "dataset", None)
    return None
