"""One epoch on 121 samples, which no number of ranks divides: run under torchrun by
test_runtime.py, and in one process by the test itself, to compare what each learned.

torchrun --standalone --nproc_per_node N tests/trainer/uneven_shards_job.py OUT

DistributedSampler repeats 1 sample on 2 ranks and 2 on 3 ranks to even the shards. The
global batch is 60 samples whatever the number of ranks (60 // N a rank), and the model
has no batch norm, so every rank count sees the same model at each step of the epoch,
and the statistics of the epoch (the matrix, the training loss) are the same. (The
last step's gradient holds the repeats, as with any DistributedSampler: the weights
after it, and what comes after, differ.)
"""

import sys

import torch
from torch.utils.data import DataLoader, TensorDataset

from loom import Trainer
from loom.algorithms import OnlineLabelSmoothing
from loom.trainer.runtime import destroy_process_group

SAMPLES, GLOBAL_BATCH = 121, 60


def dataset():
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(SAMPLES, 6, generator=generator)
    targets = (inputs[:, :3].argmax(dim=1) + (inputs[:, 3] > 1).long()) % 3
    return TensorDataset(inputs, targets)


def trainer(train_loader):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    return Trainer(
        net,
        train_loader,
        max_duration="1ep",
        optimizers=torch.optim.SGD(net.parameters(), lr=0.5),
        algorithms=[OnlineLabelSmoothing(n_classes=3)],
        device="cpu",
        seed=0,
    )


def results(run):
    """What the run learned: the same on every rank, and the same for any world size."""
    return {
        "matrix": run.state.algorithms[0].matrix,
        "metrics": dict(run.state.metrics),
        "world_size": run.state.world_size,
    }


def main():
    import os

    world_size = int(os.environ["WORLD_SIZE"])
    # loom shards it with a DistributedSampler seeded with the Trainer's seed.
    loader = DataLoader(dataset(), batch_size=GLOBAL_BATCH // world_size, shuffle=True)
    run = trainer(loader)
    run.fit()
    torch.save(results(run), f"{sys.argv[1]}/rank{run.state.rank}.pt")


if __name__ == "__main__":
    main()
    destroy_process_group()  # once the Trainer is out of scope
