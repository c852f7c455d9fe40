"""loom's Trainer against a plain hand-written PyTorch loop on the same tiny MLP.

The workload is small on purpose (64 -> 128 -> 10, batch 64, SGD, one CPU thread,
batches already in memory): every microsecond the Trainer adds per step shows.
Repetitions alternate between the two loops and the median of the per-pair
time ratios is reported, so drift in machine load affects both sides alike.

    python benchmarks/trainer_overhead.py            # target: loom / plain <= 1.03
"""

from __future__ import annotations

import argparse
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


def run_plain(batches) -> float:
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


def run_loom(batches) -> float:
    model, optimizer = make_model()
    trainer = Trainer(model, batches, max_duration=f"{STEPS}ba", optimizers=optimizer, device="cpu")
    start = time.perf_counter()
    trainer.fit()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(1)
    batches = make_batches()
    run_plain(batches), run_loom(batches)  # warm-up: allocator, kernels, lazy imports
    plain_times, loom_times, ratios = [], [], []
    for repeat in range(args.repeats):
        # Alternate which loop goes first, so neither always runs on a warmer machine.
        if repeat % 2 == 0:
            plain, loom = run_plain(batches), run_loom(batches)
        else:
            loom, plain = run_loom(batches), run_plain(batches)
        plain_times.append(plain)
        loom_times.append(loom)
        ratios.append(loom / plain)
    per_step = lambda times: statistics.median(times) / STEPS * 1e6  # noqa: E731
    print(f"plain loop: {per_step(plain_times):.1f} us/step (median of {args.repeats})")
    print(f"loom      : {per_step(loom_times):.1f} us/step (median of {args.repeats})")
    print(
        f"loom / plain: {statistics.median(ratios):.3f} (median of per-pair ratios; target <= 1.03)"
    )


if __name__ == "__main__":
    main()
