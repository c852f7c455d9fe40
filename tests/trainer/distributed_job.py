"""A small job run under torchrun by test_runtime.py; each rank saves what it saw.

torchrun --standalone --nproc_per_node 2 tests/trainer/distributed_job.py OUT [FAIL_AT]
"""

import os
import sys

import torch
from torch.utils.data import DataLoader, TensorDataset

from loom import Trainer
from loom.algorithms import EMA, SWA, OnlineLabelSmoothing
from loom.callbacks import Checkpoint
from loom.trainer import Callback
from loom.trainer.runtime import destroy_process_group


def datasets():
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(90, 6, generator=generator)
    targets = (inputs[:, :3].argmax(dim=1) + (inputs[:, 3] > 1).long()) % 3
    return TensorDataset(inputs[:70], targets[:70]), TensorDataset(inputs[70:], targets[70:])


def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(), torch.nn.Linear(16, 3)
    )


def algorithms():
    """Statistics reduced over the ranks (OLS), and averages of the weights (EMA
    evaluated beside them, SWA with its BatchNorm statistics averaged over the ranks; one
    of them is the result)."""
    return [OnlineLabelSmoothing(n_classes=3), EMA(decay=0.5, export=False), SWA(start_epoch=1)]


class ModelAtInit(Callback):
    """What the plugins see as the model at init (the module itself) and once training."""

    def init(self, state):
        self.seen = [type(state.model).__name__]

    def fit_start(self, state):
        self.seen.append(type(state.model).__name__)


class FailAt(Callback):
    def __init__(self, batch):
        self.batch = batch

    def batch_end(self, state):
        if state.rank == 1 and state.timestamp.batch == self.batch:
            raise RuntimeError(f"rank 1 fails on purpose at batch {self.batch}")


def main():
    out, fail_at = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else None
    train_set, eval_set = datasets()
    net = model()
    seen = ModelAtInit()
    trainer = Trainer(
        net,
        DataLoader(train_set, batch_size=8, shuffle=True),
        DataLoader(eval_set, batch_size=8),  # 20 samples: 10 a rank, no padding
        max_duration="3ep",
        optimizers=torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9),
        algorithms=algorithms(),
        callbacks=[
            Checkpoint(f"{out}/checkpoints", interval="3ba", keep_last=None),
            seen,
            *([FailAt(fail_at)] if fail_at else []),
        ],
        device="cpu",
        seed=0,
    )
    metrics = trainer.fit()
    rank = trainer.state.rank
    torch.save(
        {
            "world_size": trainer.state.world_size,
            "model_seen": seen.seen,
            "metrics": metrics,
            "matrix": trainer.state.algorithms[0].matrix,
            "batches": trainer.state.timestamp.batch,
            "model": trainer.state.model.module.state_dict(),
            "ema": trainer.state.algorithms[1].model.state_dict(),
            "swa": trainer.state.algorithms[2].model.state_dict(),
        },
        f"{out}/rank{rank}.pt",
    )
    print(f"rank {rank} of {os.environ['WORLD_SIZE']} done")


if __name__ == "__main__":
    main()
    destroy_process_group()  # once the Trainer is out of scope
