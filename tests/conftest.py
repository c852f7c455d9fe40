"""Shared fixtures: tiny data, tiny models, and the GPU marker's skip."""

from __future__ import annotations

import copy
import os
import signal
import sys

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from loom import Trainer
from loom.callbacks import Checkpoint, latest_checkpoint
from loom.trainer import Callback


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def separable_data(
    num_samples: int = 256, num_features: int = 8, num_classes: int = 4, seed: int = 0
):
    """Gaussian clusters a linear model can separate: inputs (N, F), targets (N,)."""
    generator = torch.Generator().manual_seed(seed)
    centers = torch.randn(num_classes, num_features, generator=generator) * 3
    targets = torch.randint(0, num_classes, (num_samples,), generator=generator)
    inputs = centers[targets] + torch.randn(num_samples, num_features, generator=generator)
    return inputs, targets


@pytest.fixture
def data():
    return separable_data()


@pytest.fixture
def loaders(data):
    inputs, targets = data
    dataset = TensorDataset(inputs, targets)
    return DataLoader(dataset, batch_size=32), DataLoader(dataset, batch_size=128)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


@pytest.fixture
def optimizer(model):
    return torch.optim.SGD(model.parameters(), lr=0.1)


class LossRecorder(Callback):
    """Keeps every (micro)batch's loss, as the loss function returned it."""

    def __init__(self):
        self.losses = []

    def after_loss(self, state):
        self.losses.append(state.loss.item())


def plain_sgd_run(model, loader, epochs, loss_fn):
    """A hand-written loop on a copy of ``model`` (SGD, lr 0.1, momentum 0.9).

    Returns:
        The trained copy and the loss of every step.
    """
    model = copy.deepcopy(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(epochs):
        for inputs, targets in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(inputs), targets)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    return model, losses


def one_batch(model, batch, **trainer_kwargs):
    """Trains a copy of ``model`` on one batch with learning rate 0.

    Returns:
        The copy's gradients and the run's metrics.
    """
    model = copy.deepcopy(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    trainer = Trainer(
        model, [batch], optimizers=optimizer, max_duration="1ba", device="cpu", **trainer_kwargs
    )
    metrics = trainer.fit()
    return [parameter.grad for parameter in model.parameters()], metrics


def tiny_trainer(
    folder=None, model=None, load_path=None, weights_only=False, loss_fn=None, max_duration="2ep"
):
    """Three fixed batches of 8, a 4-8-2 MLP, SGD with momentum; a checkpoint every batch
    (the last two kept) when ``folder`` is given."""
    torch.manual_seed(0)
    model = model or nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    batches = [(torch.randn(8, 4), torch.randint(0, 2, (8,))) for _ in range(3)]
    return Trainer(
        model,
        batches,
        max_duration=max_duration,
        device="cpu",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
        callbacks=[Checkpoint(folder, interval="1ba", keep_last=2)] if folder else [],
        load_path=load_path,
        load_weights_only=weights_only,
        loss_fn=loss_fn,
    )


@pytest.fixture
def saved(tmp_path):
    """A finished tiny_trainer run and its latest checkpoint."""
    trainer = tiny_trainer(tmp_path / "checkpoints")
    trainer.fit()
    return trainer, latest_checkpoint(tmp_path / "checkpoints")


@pytest.fixture
def one_process_group(tmp_path):
    """A gloo process group of this process alone (DistributedDataParallel, collectives)."""
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1
    )
    yield
    dist.destroy_process_group()


TWO_PROCESS_TORCHRUN = [
    sys.executable,
    "-m",
    "torch.distributed.run",
    "--standalone",
    "--nproc_per_node",
    "2",
]
"""The start of a command that runs a script (or ``-m module``) as two torchrun processes."""


class SignalAt(Callback):
    """Sends this process a signal in the middle of the batch after ``batch`` batches."""

    def __init__(self, batch, signal_number=signal.SIGTERM):
        self.batch, self.signal_number = batch, signal_number

    def after_forward(self, state):
        # Once: SAM's second pass of the batch fires after_forward again.
        if state.timestamp.batch == self.batch and not state.recomputing:
            os.kill(os.getpid(), self.signal_number)
