"""How much of the label noise a model learned: accuracy on the flipped training samples."""

from __future__ import annotations

import torch

from loom.data import NoisyLabels
from loom.trainer import Callback, State
from loom.trainer.checkpoint import unwrap_model

__all__ = ["NoiseMemorization"]


class NoiseMemorization(Callback):
    """At every ``epoch_end``, classifies the training samples whose labels were flipped
    and records two metrics: ``train/noisy_clean_accuracy`` (the prediction is the true
    label: the model resisted the noise) and ``train/noisy_memorized`` (it is the wrong,
    training label: the model memorised it).

    The samples are read through the training set, so with a random augmentation in its
    transform they are classified augmented, as the model trains on them. Register it
    after the callbacks that log metrics: at ``*_end`` events callbacks run in reverse
    order, so it then runs before them.

    Args:
        noisy: The noisy training set.
        batch_size: Samples per forward pass.
    """

    def __init__(self, noisy: NoisyLabels, batch_size: int = 512):
        self.noisy = noisy
        self.batch_size = batch_size
        self.indices = noisy.flipped.nonzero().flatten().tolist()

    @torch.no_grad()
    def epoch_end(self, state: State) -> None:
        if not self.indices:
            return
        model = unwrap_model(state.model)
        was_training = model.training
        model.eval()
        clean = memorized = 0
        for start in range(0, len(self.indices), self.batch_size):
            chunk = self.indices[start : start + self.batch_size]
            inputs = torch.stack([self.noisy.dataset[i][0] for i in chunk]).to(state.device)
            predicted = model(inputs).argmax(dim=1).cpu()
            clean += int((predicted == self.noisy.clean_targets[chunk]).sum())
            memorized += int((predicted == self.noisy.targets[chunk]).sum())
        model.train(was_training)
        state.metrics["train/noisy_clean_accuracy"] = clean / len(self.indices)
        state.metrics["train/noisy_memorized"] = memorized / len(self.indices)
