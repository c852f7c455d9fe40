"""Run by test_fsdp.py, alone or under torchrun, in one of its phases; each saves what
the test compares to ``OUT/<phase>.pt``.

python tests/trainer/fsdp_job.py OUT PHASE

- ``ddp``, ``fsdp``: 3 epochs under each strategy (2 ranks); ``fsdp`` checkpoints every
  epoch and records the full weights and optimizer state at each epoch's end.
- ``resume``: ``fsdp`` again, resumed from its first epoch's checkpoint, the model
  compiled (``aot_eager``: the same kernels as eager, so the same bits).
- ``reshard``: that checkpoint loaded by this run's number of ranks (1 or 3): what it
  holds right after the load, then 2 more epochs.

``ddp`` and ``fsdp`` then train a small CifarResNet too (``<phase>-blocks.pt``), with
stochastic depth (surgery at ``init``, random draws in training) and distillation from
a fixed teacher (unsharded, on every rank), sharded by its
``_BasicBlock``s under ``fsdp``: batch norm's buffers, an SGD step and an uneven
evaluation (11 and 10 samples).

Every run sees the same global batches of 64 (32 a rank on 2 ranks, as
``world_size_job.py``), but for 3 ranks, which cannot split 64.
"""

import copy
import sys

import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from loom import Trainer
from loom.algorithms import Distillation, MixUp, OnlineLabelSmoothing, StochasticDepth
from loom.callbacks import Checkpoint
from loom.models.cifar_resnet import CifarResNet
from loom.trainer import Callback, exported_weights, unwrap_model
from loom.trainer.runtime import destroy_process_group, torchrun_world_size

SEED = 0
GLOBAL_BATCH = 64


def datasets():
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(357, 6, generator=generator)
    targets = (inputs[:, :3].argmax(dim=1) + (inputs[:, 3] > 1).long()) % 3
    # 101 evaluation samples: 51 and 50 a rank, 3 and 2 batches of 25.
    return TensorDataset(inputs[:256], targets[:256]), TensorDataset(inputs[256:], targets[256:])


def mlp():
    return torch.nn.Sequential(
        torch.nn.Linear(6, 32), torch.nn.ReLU(), torch.nn.Linear(32, 32), torch.nn.ReLU(),
        torch.nn.Linear(32, 3),
    )  # fmt: skip


def full_optimizer_state(trainer):
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model = unwrap_model(trainer.state.model)
    state = get_optimizer_state_dict(model, trainer.state.optimizers[0], options=options)
    return copy.deepcopy(state)  # not the live tensors, which train on


def full_weights(trainer):
    return copy.deepcopy(exported_weights(trainer.state))


class Snapshots(Callback):
    """The full weights and optimizer state at each epoch's end (on every rank: a
    sharded model's are gathered)."""

    def __init__(self):
        self.trainer = None
        self.epochs = {}

    def epoch_end(self, state):
        self.epochs[state.timestamp.epoch] = {
            "weights": full_weights(self.trainer),
            "optimizer": full_optimizer_state(self.trainer),
        }


def teacher():
    """A fixed teacher, unsharded on every rank (the student is the one sharded)."""
    torch.manual_seed(5)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))


def train_blocks(out, phase):
    generator = torch.Generator().manual_seed(1)
    images, labels = torch.randn(85, 3, 8, 8, generator=generator), torch.arange(85) % 4
    train = DataLoader(TensorDataset(images[:64], labels[:64]), batch_size=16, shuffle=True)
    torch.manual_seed(0)
    model = CifarResNet(num_classes=4, depth=18, width=4)
    strategy = {"name": "fsdp", "blocks": ["_BasicBlock"]} if phase == "fsdp" else "ddp"
    trainer = Trainer(
        model,
        train,
        DataLoader(TensorDataset(images[64:], labels[64:]), batch_size=5),
        max_duration="2ep",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
        algorithms=[StochasticDepth(drop_rate=0.3), Distillation(teacher(), temperature=2.0)],
        device="cpu",
        seed=SEED,
        strategy=strategy,
    )
    record = {"metrics": trainer.fit(), "weights": exported_weights(trainer.state)}
    if trainer.state.is_main_process:
        torch.save(record, f"{out}/{phase}-blocks{trainer.state.world_size}.pt")


def main():
    out, phase = sys.argv[1], sys.argv[2]
    world_size = torchrun_world_size()
    train_set, eval_set = datasets()
    batch_size = GLOBAL_BATCH // world_size if world_size < 3 else 21
    if world_size > 1:  # loom shards it: a DistributedSampler seeded with SEED
        train = DataLoader(train_set, batch_size=batch_size, shuffle=True)
    else:  # the order two ranks' shares interleave into: the same sampler, whole
        sampler = DistributedSampler(train_set, num_replicas=1, rank=0, shuffle=True, seed=SEED)
        train = DataLoader(train_set, batch_size=batch_size, sampler=sampler)
    torch.manual_seed(0)
    model = mlp()
    snapshots = Snapshots()
    callbacks = [snapshots]
    if phase in ("fsdp", "resume"):
        callbacks.append(Checkpoint(f"{out}/checkpoints-{phase}", interval="1ep", keep_last=None))
    first_epoch = f"{out}/checkpoints-fsdp/epoch1-batch4"
    trainer = Trainer(
        model,
        train,
        DataLoader(eval_set, batch_size=25),
        max_duration="3ep",
        optimizers=torch.optim.AdamW(model.parameters(), lr=0.01, fused=True),
        algorithms=[OnlineLabelSmoothing(n_classes=3), MixUp(alpha=0.4)],
        callbacks=callbacks,
        device="cpu",
        seed=SEED,
        grad_clip_norm=1.0,
        strategy="ddp" if phase == "ddp" else "fsdp",
        load_path=first_epoch if phase in ("resume", "reshard") else None,
        compile={"backend": "aot_eager"} if phase == "resume" else False,
    )
    snapshots.trainer = trainer
    record = {}
    if phase == "reshard":
        record["loaded"] = {
            "weights": full_weights(trainer),
            "optimizer": full_optimizer_state(trainer),
        }
    record["metrics"] = trainer.fit()
    record["weights"] = exported_weights(trainer.state)
    record["epochs"] = snapshots.epochs
    record["matrix"] = trainer.state.algorithms[0].matrix
    record["predictions"] = trainer.predict(DataLoader(eval_set, batch_size=25))
    if trainer.state.is_main_process:
        torch.save(record, f"{out}/{phase}{world_size}.pt")
    if phase in ("ddp", "fsdp"):
        train_blocks(out, phase)


if __name__ == "__main__":
    main()
    destroy_process_group()
