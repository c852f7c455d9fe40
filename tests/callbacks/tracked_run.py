"""The tiny run the trackers' tests log: 2 batches an epoch, evaluated at each end."""

import csv

import torch

from loom import Trainer


def fit(callbacks, epochs=3, load_path=None):
    """Trains a seeded linear model for ``epochs`` with ``callbacks``; the Trainer."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    batches = [(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]))] * 2
    trainer = Trainer(
        model, batches, batches[:1], max_duration=f"{epochs}ep", device="cpu",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.1), callbacks=callbacks,
        load_path=load_path,
    )  # fmt: skip
    trainer.fit()
    return trainer


def read_rows(path):
    """A CSV file's rows, as dicts."""
    return list(csv.DictReader(path.read_text().splitlines()))
