"""What the benchmarks of methods share: the small CNN and its batches, the step time of a
Trainer run, and the chain that measures each variant against plain runs beside it.

The chain: one plain run first, then every variant followed by a plain run, the
variants' order turning each round so that none always follows the same neighbour. A
variant's ratio is the median, over the rounds, of its step time over the mean of the
two plain runs beside it; an A/A control (one plain run over the next) shows the
machine's noise. Wall time on a shared 2-core machine moves by 10-20% from run to run:
the ratio, not the milliseconds, is what compares.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from loom import Trainer
from loom.trainer import Algorithm

BATCH, CLASSES = 128, 10


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 8 * 8, CLASSES),
    )  # fmt: skip


def make_batches(steps: int, batch: int = BATCH) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [
        (
            torch.randn(batch, 3, 32, 32, generator=generator),
            torch.randint(0, CLASSES, (batch,), generator=generator),
        )
        for _ in range(steps)
    ]


def step_time(
    batches: list, algorithms: list[Algorithm], model: Callable[[], nn.Module] = small_cnn
) -> float:
    """Mean seconds per step of one Trainer run over ``batches`` (one thread, CPU)."""
    torch.manual_seed(0)
    network = model()
    trainer = Trainer(
        network, batches, max_duration=f"{len(batches)}ba", device="cpu", cpu_threads=1,
        optimizers=torch.optim.SGD(network.parameters(), lr=0.01, momentum=0.9),
        algorithms=algorithms, seed=0,
    )  # fmt: skip
    start = time.perf_counter()
    trainer.fit()
    return (time.perf_counter() - start) / len(batches)


@dataclass
class Chain:
    """A chain's results: each variant's step times and ratios, and the plain runs'."""

    times: dict[str, list[float]]
    ratios: dict[str, list[float]]
    plain: list[float]

    @property
    def control(self) -> float:
        return statistics.median(b / a for a, b in itertools.pairwise(self.plain))

    def table(self, title: str) -> str:
        lines = [title, f"{'variant':18} {'ms/step':>8} {'vs plain':>9}"]
        lines.append(f"{'plain':18} {statistics.median(self.plain) * 1e3:8.2f} {1.0:8.3f}x")
        for name, ratios in self.ratios.items():
            seconds = statistics.median(self.times[name])
            lines.append(f"{name:18} {seconds * 1e3:8.2f} {statistics.median(ratios):8.3f}x")
        lines.append(f"A/A control (plain run over the next): {self.control:.3f}x")
        return "\n".join(lines)


def run_chain(
    variants: dict[str, Callable[[], float]], plain: Callable[[], float], repeats: int
) -> Chain:
    """Runs the chain: each variant and ``plain`` are functions that time one run."""
    names: Sequence[str] = list(variants)
    for run in [plain, *variants.values()]:  # warm-up: first calls are no run's cost
        run()
    chain = Chain({name: [] for name in names}, {name: [] for name in names}, [plain()])
    for round_number in range(repeats):
        turn = round_number % len(names)
        for name in [*names[turn:], *names[:turn]]:
            seconds = variants[name]()
            chain.plain.append(plain())
            chain.times[name].append(seconds)
            chain.ratios[name].append(seconds / ((chain.plain[-2] + chain.plain[-1]) / 2))
    return chain
