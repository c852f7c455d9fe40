"""Run by test_world_sizes.py alone (one process, batches of 64) and under a 2-process
torchrun (batches of 32 a rank): the same global batches, in the same order.

python tests/trainer/world_size_job.py OUT BATCH_SIZE
"""

import sys

import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from loom import Trainer
from loom.algorithms import OnlineLabelSmoothing
from loom.trainer import Callback
from loom.trainer.runtime import destroy_process_group, torchrun_world_size

SEED = 0


def datasets():
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(356, 6, generator=generator)
    targets = (inputs[:, :3].argmax(dim=1) + (inputs[:, 3] > 1).long()) % 3
    # 256 training samples: whole global batches of 64, so no sampler pads a rank's share.
    return TensorDataset(inputs[:256], targets[:256]), TensorDataset(inputs[256:], targets[256:])


class EpochLosses(Callback):
    def __init__(self):
        self.losses = []

    def epoch_end(self, state):
        self.losses.append(state.metrics["train/loss"])


def main():
    out, batch_size = sys.argv[1], int(sys.argv[2])
    train_set, eval_set = datasets()
    if torchrun_world_size() > 1:  # loom shards it: a DistributedSampler seeded with SEED
        train = DataLoader(train_set, batch_size=batch_size, shuffle=True)
    else:  # the order two ranks' shares interleave into: the same sampler, whole
        sampler = DistributedSampler(train_set, num_replicas=1, rank=0, shuffle=True, seed=SEED)
        train = DataLoader(train_set, batch_size=batch_size, sampler=sampler)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))
    losses = EpochLosses()
    trainer = Trainer(
        model,
        train,
        DataLoader(eval_set, batch_size=25),
        max_duration="4ep",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9),
        algorithms=[OnlineLabelSmoothing(n_classes=3)],
        callbacks=[losses],
        device="cpu",
        seed=SEED,
    )
    metrics = trainer.fit()
    net = getattr(trainer.state.model, "module", trainer.state.model)
    if trainer.state.is_main_process:
        torch.save(
            {
                "model": net.state_dict(),
                "matrix": trainer.state.algorithms[0].matrix,
                "losses": losses.losses,
                "metrics": metrics,
                "steps": trainer.state.timestamp.batch,
            },
            f"{out}/world{trainer.state.world_size}.pt",
        )


if __name__ == "__main__":
    main()
    destroy_process_group()
