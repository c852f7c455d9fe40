"""NoiseMemorization: accuracy on the flipped training samples, found through the wrappers."""

import pytest
import torch
from torch.utils.data import DataLoader

from loom import Trainer
from loom.callbacks import MetricsLogger, NoiseMemorization
from loom.data import AsDict, NoisyLabels, synthetic


class Memorizes(torch.nn.Module):
    """Predicts each sample's noisy training label: it has memorised every flip."""

    def __init__(self, noisy):
        super().__init__()
        self.lookup = {
            tuple(noisy.dataset[i][0].tolist()): int(noisy.targets[i]) for i in range(len(noisy))
        }
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, inputs):
        labels = torch.tensor([self.lookup[tuple(row.tolist())] for row in inputs])
        return torch.nn.functional.one_hot(labels, 4).float() * self.scale


def test_a_model_that_learned_every_flip_has_memorised_all_and_resisted_none():
    noisy = NoisyLabels(synthetic(num_samples=40, num_classes=4, shape=[3]), rate=0.25)
    model = Memorizes(noisy)
    trainer = Trainer(
        model, DataLoader(AsDict(noisy, keys=["x", "y"]), batch_size=8), max_duration="1ep",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.0), device="cpu",
        input_key="x", target_key="y",
        callbacks=[NoiseMemorization(batch_size=3), MetricsLogger(console=False)],
    )  # fmt: skip
    metrics = trainer.fit()
    assert metrics["train/noisy_memorized"] == 1.0
    assert metrics["train/noisy_clean_accuracy"] == 0.0


def test_training_data_without_noise_is_an_error_at_fit_start():
    model = torch.nn.Linear(3, 4)
    trainer = Trainer(
        model, DataLoader(synthetic(num_samples=8, num_classes=4, shape=[3]), batch_size=4),
        max_duration="1ep", optimizers=torch.optim.SGD(model.parameters(), lr=0.1), device="cpu",
        callbacks=[NoiseMemorization()],
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"needs training data with noisy labels") as raised:
        trainer.fit()
    assert raised.value.__notes__ == ["raised by callback NoiseMemorization at event 'fit_start'"]


def test_it_writes_metrics_so_it_goes_before_the_logger():
    model = torch.nn.Linear(3, 4)
    with pytest.raises(ValueError, match=r"list NoiseMemorization before MetricsLogger"):
        Trainer(
            model, [], max_duration="1ep", optimizers=torch.optim.SGD(model.parameters(), lr=0.1),
            callbacks=[MetricsLogger(console=False), NoiseMemorization()],
        )  # fmt: skip
