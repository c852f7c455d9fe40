"""What the ranks' agreement on stopping for a signal costs a step under torchrun.

After every batch each rank starts an all-reduce of a flag and reads the one it started
a batch before (see ``loom.trainer.signals.SignalStop``). This trains the trainer
overhead benchmark's tiny MLP on two gloo processes with the agreement and with it
switched off (``agree`` a no-op: the ranks could then stop at different batches), in
alternating rounds, and prints the median step time of each and their ratio; and what
one ``agree()`` costs alone.

    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 benchmarks/rank_agreement.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, TensorDataset

from loom import Trainer
from loom.trainer.signals import SignalStop

sys.path.insert(0, str(Path(__file__).parent))
from trainer_overhead import make_model

ROUNDS = 7
STEPS = 300


def step_seconds(agree: bool) -> float:
    """Seconds a training step of the tiny MLP takes on two ranks, with or without the
    agreement."""
    model, optimizer = make_model()
    inputs = torch.randn(STEPS * 2 * 32, 64)
    data = TensorDataset(inputs, torch.randint(0, 10, (len(inputs),)))
    original = SignalStop.agree
    if not agree:
        SignalStop.agree = lambda self: None
    try:
        trainer = Trainer(
            model, DataLoader(data, batch_size=32), max_duration="1ep", device="cpu",
            optimizers=optimizer,
        )  # fmt: skip
        dist.barrier()
        started = time.perf_counter()
        trainer.fit()
        dist.barrier()
        return (time.perf_counter() - started) / STEPS
    finally:
        SignalStop.agree = original


def agree_seconds(calls: int = 2000) -> float:
    """Seconds one agree() takes, alone (back to back: each waits for the last)."""
    model, optimizer = make_model()
    data = TensorDataset(torch.randn(64, 64), torch.randint(0, 10, (64,)))
    trainer = Trainer(
        model, DataLoader(data, batch_size=32), max_duration="1ep", device="cpu",
        optimizers=optimizer,
    )  # fmt: skip
    stop = SignalStop(trainer.state)
    dist.barrier()
    started = time.perf_counter()
    for _ in range(calls):
        stop.agree()
    stop.finishing()
    return (time.perf_counter() - started) / calls


def main() -> None:
    torch.set_num_threads(1)
    with_agreement, without = [], []
    step_seconds(True)  # warm up
    for _ in range(ROUNDS):
        without.append(step_seconds(False))
        with_agreement.append(step_seconds(True))
    alone = agree_seconds()
    if dist.get_rank() == 0:
        a, b = statistics.median(with_agreement), statistics.median(without)
        print(f"step without the agreement: {b * 1e6:8.1f} us (median of {ROUNDS} rounds)")
        print(f"step with the agreement:    {a * 1e6:8.1f} us")
        print(f"ratio with / without:       {a / b:8.3f}")
        print(f"one agree() alone:          {alone * 1e6:8.1f} us")


if __name__ == "__main__":
    main()
