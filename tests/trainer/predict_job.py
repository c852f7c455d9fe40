"""Predictions under torchrun, saved by each rank; run by test_predict.py.

torchrun --standalone --nproc_per_node 2 tests/trainer/predict_job.py OUT
"""

import sys

import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from loom import Trainer
from loom.trainer.runtime import destroy_process_group


def dataset():
    """21 samples: shards of 11 and 10 on 2 ranks, and one repeat in a DistributedSampler's."""
    inputs = torch.randn(21, 5, generator=torch.Generator().manual_seed(0))
    return TensorDataset(inputs, torch.zeros(21, dtype=torch.long))


def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


def main():
    out = sys.argv[1]
    data, net = dataset(), model()
    trainer = Trainer(
        net,
        DataLoader(data, batch_size=4),
        DataLoader(data, batch_size=4),
        max_duration="1ep",
        optimizers=torch.optim.SGD(net.parameters(), lr=0.1),
        device="cpu",
    )
    rank = trainer.state.rank
    padded = DistributedSampler(data, num_replicas=2, rank=rank, shuffle=True, seed=3)
    predicted = {
        "in_order": trainer.predict(DataLoader(data, batch_size=4)),
        "shuffled": trainer.predict(DataLoader(data, batch_size=4, shuffle=True)),
        "distributed_sampler": trainer.predict(DataLoader(data, batch_size=4, sampler=padded)),
        "trainers_eval_loader": trainer.predict(trainer.state.eval_dataloader),
        "classes": trainer.predict(DataLoader(data, batch_size=4, sampler=padded), "classes"),
    }
    torch.save(
        {"world_size": trainer.state.world_size, "predicted": predicted}, f"{out}/rank{rank}.pt"
    )


if __name__ == "__main__":
    main()
    destroy_process_group()  # once the Trainer is out of scope
