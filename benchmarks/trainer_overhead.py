"""loom's Trainer against a plain hand-written PyTorch loop on the same tiny MLP.

The workload is small on purpose (64 -> 128 -> 10, batch 64, SGD, 2000 steps, one
CPU thread, batches already in memory), so every microsecond the Trainer adds to a
step shows. The runs alternate in one chain, plain, loom, plain, loom, ..., plain,
so every run follows a run of the other kind; each loom time is divided by the
mean of the two plain times around it, which cancels slow drift in the machine's
speed, and the median over the chain is reported. The same ratio between
consecutive plain runs (an A/A control, ideally 1.000) shows the machine's noise.

    python benchmarks/trainer_overhead.py            # target: loom / plain <= 1.03
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from loom import Trainer

STEPS = 2000
BATCHES_PER_EPOCH = 250
BATCH_SIZE = 64


def make_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [
        (
            torch.randn(BATCH_SIZE, 64, generator=generator),
            torch.randint(0, 10, (BATCH_SIZE,), generator=generator),
        )
        for _ in range(BATCHES_PER_EPOCH)
    ]


def make_model() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    return model, torch.optim.SGD(model.parameters(), lr=0.01)


def time_plain_loop(batches) -> float:
    model, optimizer = make_model()
    model.train()
    start = time.perf_counter()
    for _ in range(STEPS // BATCHES_PER_EPOCH):
        for inputs, targets in batches:
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(inputs), targets)
            loss.backward()
            optimizer.step()
    return time.perf_counter() - start


def time_loom(batches) -> float:
    model, optimizer = make_model()
    trainer = Trainer(
        model, batches, max_duration=f"{STEPS}ba", optimizers=optimizer, device="cpu",
        cpu_threads=1,  # the plain loop's one thread
    )  # fmt: skip
    start = time.perf_counter()
    trainer.fit()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=41)
    args = parser.parse_args()
    torch.set_num_threads(1)
    batches = make_batches()
    time_plain_loop(batches), time_loom(batches)  # warm-up: allocator, kernels, lazy imports
    plain_times = [time_plain_loop(batches)]
    loom_times = []
    for _ in range(args.repeats):
        loom_times.append(time_loom(batches))
        plain_times.append(time_plain_loop(batches))
    neighbours = list(itertools.pairwise(plain_times))
    ratios = [
        loom / ((before + after) / 2)
        for loom, (before, after) in zip(loom_times, neighbours, strict=True)
    ]
    controls = [after / before for before, after in neighbours]
    quartiles = statistics.quantiles(ratios, n=4)
    print(f"steps per run: {STEPS}, repetitions: {args.repeats}, torch {torch.__version__}")
    print(f"plain loop   : {statistics.median(plain_times) / STEPS * 1e6:7.1f} us/step (median)")
    print(f"loom Trainer : {statistics.median(loom_times) / STEPS * 1e6:7.1f} us/step (median)")
    print(f"A/A control  : {statistics.median(controls):.3f} (plain / plain; noise, ideally 1.000)")
    print(
        f"loom / plain : {statistics.median(ratios):.3f} "
        f"(quartiles {quartiles[0]:.3f}-{quartiles[2]:.3f}; target <= 1.03)"
    )


if __name__ == "__main__":
    main()
