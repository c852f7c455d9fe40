"""Run under torchrun by test_memory_loader.py: the same two-rank run with a DataLoader and
with a MemoryLoader, and predictions with each; each rank saves what it got.

torchrun --standalone --nproc_per_node 2 tests/data/memory_loader_job.py OUT
"""

import sys

import torch
from torch import nn
from torch.utils.data import DataLoader

from loom import Trainer
from loom.data import digits
from loom.data.memory_loader import MemoryLoader
from loom.trainer import Callback
from loom.trainer.runtime import destroy_process_group


class FirstBatch(Callback):
    def batch_start(self, state):
        if state.timestamp.batch == 0:
            self.inputs = state.batch[0].clone()


def run(train_loader, eval_loader, predict_loader):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    first = FirstBatch()
    trainer = Trainer(
        model,
        train_loader,
        eval_loader,
        max_duration="1ep",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.1),
        callbacks=[first],
        device="cpu",
        seed=0,
    )
    metrics = trainer.fit()
    weights = {k: v.clone() for k, v in trainer.state.model.module.state_dict().items()}
    return weights, metrics, trainer.predict(predict_loader), first.inputs, trainer.state.rank


def main():
    out = sys.argv[1]
    train, test = digits("train"), digits("test")
    saved = {"dataloader": {}, "memory": {}, "metrics": {}, "predictions": {}}
    loaders = {
        "dataloader": (
            DataLoader(train, 64, shuffle=True),
            DataLoader(test, 100),
            DataLoader(test, 70),
        ),
        "memory": (
            MemoryLoader(train, 64, shuffle=True),
            MemoryLoader(test, 100),
            MemoryLoader(test, 70),
        ),
    }
    for kind, (train_loader, eval_loader, predict_loader) in loaders.items():
        weights, metrics, predictions, first, rank = run(train_loader, eval_loader, predict_loader)
        saved[kind], saved["metrics"][kind], saved["predictions"][kind] = (
            weights,
            metrics,
            predictions,
        )
        saved["first_batch"] = first
    torch.save(saved, f"{out}/rank{rank}.pt")
    destroy_process_group()


if __name__ == "__main__":
    main()
