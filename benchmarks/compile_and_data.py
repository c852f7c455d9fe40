"""The speed switches of issue 24, each against its baseline in the same run (one CPU thread).

- ``compile``: a training step of the tiny MLP (trainer_overhead.py's) and of the small
  CNN on digits-shaped batches, four ways: a plain eager loop, a plain loop over the
  ``model.compile()``-d model (inductor), loom's Trainer eager and loom's Trainer with
  ``compile=True``. Each run trains ``WARMUP`` steps untimed (compiling happens there),
  then the timed steps; the four run in turn, ``--repeats`` times, and each time is
  divided by the mean of its baseline's runs just before and after it; medians.
- ``optimizer``: one ``optimizer.step()`` of SGD (momentum), Adam and AdamW on each
  model's parameters, as torch's loop, ``foreach`` and ``fused``; ratio to the loop.
- ``loader``: an epoch of the digits training set (1437 samples, batches of 64) through
  ``DataLoader(TensorDataset)`` and through ``MemoryLoader``, samples per second; and
  with random crops (padding 1) and flips, torchvision's per-sample transforms in a
  DataLoader against the MemoryLoader's batched ones.
- ``job``: ``loom train configs/digits.yaml`` (30 epochs) with the settings before this
  issue (DataLoader, torch's loop step: ``optimizer.foreach=false``), today's defaults
  (the fused step), the fast settings (``loader: memory`` for both splits), and those
  with ``trainer.compile=true``: training seconds from ``summary.json`` (compiling
  included) and the final test accuracy.

    OMP_NUM_THREADS=1 python benchmarks/compile_and_data.py               # every section
    OMP_NUM_THREADS=1 python benchmarks/compile_and_data.py --section loader
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from loom import Trainer
from loom.data import digits
from loom.data.memory_loader import MemoryLoader
from loom.models import SmallCNN
from loom.trainer import Callback

ROOT = Path(__file__).resolve().parent.parent
WARMUP = 30
BATCH = 64


# Models and their batches


def tiny_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return SmallCNN(num_classes=10, in_channels=1, width=32)


MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], int]] = {
    # name: (model, one input's shape, timed steps)
    "tiny MLP": (tiny_mlp, (64,), 1000),
    "small CNN": (small_cnn, (1, 8, 8), 150),
}


def batches(shape: tuple[int, ...], count: int = 50) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [
        (
            torch.randn(BATCH, *shape, generator=generator),
            torch.randint(0, 10, (BATCH,), generator=generator),
        )
        for _ in range(count)
    ]


def cycled(data: list, steps: int) -> list:
    return [data[index % len(data)] for index in range(steps)]


# compile


def plain_loop(model: nn.Module, data: list, steps: int) -> float:
    """Seconds of the plain loop's ``steps`` steps after ``WARMUP`` untimed ones."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    model.train()
    start = 0.0
    for index, (inputs, targets) in enumerate(cycled(data, WARMUP + steps)):
        if index == WARMUP:
            start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(inputs), targets).backward()
        optimizer.step()
    return time.perf_counter() - start


class Stopwatch(Callback):
    """The time from the end of batch ``WARMUP`` to the end of training."""

    def batch_end(self, state):
        if state.timestamp.batch == WARMUP:
            self.start = time.perf_counter()

    def fit_end(self, state):
        self.seconds = time.perf_counter() - self.start


def loom_loop(model: nn.Module, data: list, steps: int, compile: bool) -> float:
    stopwatch = Stopwatch()
    Trainer(
        model,
        cycled(data, WARMUP + steps),
        max_duration="1ep",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.01),
        callbacks=[stopwatch],
        compile=compile,
        device="cpu",
        cpu_threads=1,
    ).fit()
    return stopwatch.seconds


def compiled(model: nn.Module) -> nn.Module:
    model.compile()
    return model


def compile_section(repeats: int) -> None:
    print("\n## compile: seconds a step, and ratio to the plain eager loop (median)")
    for name, (make, shape, steps) in MODELS.items():
        compare_compiled(name, make, batches(shape), steps, repeats)
    compare_compiled_loss(repeats)


def compare_compiled_loss(repeats: int) -> None:
    """loom's cross-entropy alone, eager and compiled, on a linear layer's outputs (64 x
    10), hard and label-smoothed targets: whether compiling the loss would pay."""
    from loom.functional import smooth_labels
    from loom.functional.cross_entropy import cross_entropy

    torch.manual_seed(0)
    layer, inputs = nn.Linear(10, 10), torch.randn(BATCH, 10)
    hard = torch.randint(0, 10, (BATCH,))
    targets = {"hard": hard, "smoothed": smooth_labels(layer(inputs).detach(), hard, 0.1)}
    compiled_loss = torch.compile(cross_entropy)

    def step_seconds(loss_fn, target, steps=2000):
        start = time.perf_counter()
        for _ in range(steps):
            loss_fn(layer(inputs), target).backward()
        return (time.perf_counter() - start) / steps

    print("\nthe loss alone (linear 10 -> 10, batch 64, forward and backward)")
    for label, target in targets.items():
        step_seconds(compiled_loss, target, 5)  # compiles
        eager = statistics.median(step_seconds(cross_entropy, target) for _ in range(repeats))
        compiled_ = statistics.median(step_seconds(compiled_loss, target) for _ in range(repeats))
        print(
            f"  {label:9s} eager {eager * 1e6:6.1f} us  compiled {compiled_ * 1e6:6.1f} us  "
            f"{compiled_ / eager:.2f}x"
        )


def compare_compiled(
    name: str, make: Callable[[], nn.Module], data: list, steps: int, repeats: int
) -> None:
    """One chain, plain eager, loom eager, plain compiled, loom compiled, ..., ending
    with the two plain loops again: each time is divided by the mean of its baseline's
    just before and just after it, which cancels the machine's drift (as
    trainer_overhead.py does)."""
    variants = {
        "plain eager": lambda: plain_loop(make(), data, steps),
        "loom eager": lambda: loom_loop(make(), data, steps, compile=False),
        "plain compiled": lambda: plain_loop(compiled(make()), data, steps),
        "loom compile=True": lambda: loom_loop(make(), data, steps, compile=True),
    }
    for run in variants.values():
        run()  # the first compile of the model (inductor) happens here, untimed
    times: dict[str, list[float]] = {variant: [] for variant in variants}
    for _ in range(repeats):
        for variant, run in variants.items():
            times[variant].append(run() / steps)
    for baseline in ("plain eager", "plain compiled"):
        times[baseline].append(variants[baseline]() / steps)

    def against(variant: str, baseline: str) -> float:
        pairs = itertools.pairwise(times[baseline])
        neighbours = [(before + after) / 2 for before, after in pairs]
        return statistics.median(t / b for t, b in zip(times[variant], neighbours, strict=False))

    print(f"\n{name} (batch {BATCH}, {steps} timed steps, {repeats} rounds)")
    for variant, seconds in times.items():
        print(f"  {variant:18s} {statistics.median(seconds) * 1e6:8.1f} us/step")
    for variant, baseline in [
        ("loom eager", "plain eager"),
        ("plain compiled", "plain eager"),
        ("loom compile=True", "plain eager"),
        ("loom compile=True", "plain compiled"),
    ]:
        print(f"  {variant} / {baseline}: {against(variant, baseline):.3f}")


# optimizer


def step_seconds(model: nn.Module, optimizer_class: type, arguments: dict, steps: int) -> float:
    optimizer = optimizer_class(model.parameters(), lr=0.01, **arguments)
    for parameter in model.parameters():
        parameter.grad = torch.randn_like(parameter)
    for _ in range(10):
        optimizer.step()
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.step()
    return (time.perf_counter() - start) / steps


def optimizer_section(repeats: int) -> None:
    print("\n## optimizer: one step, microseconds (median), and ratio to torch's loop")
    implementations = {
        "loop": {"foreach": False},
        "foreach": {"foreach": True},
        "fused": {"fused": True},
    }
    optimizers = {
        "SGD (momentum 0.9)": (torch.optim.SGD, {"momentum": 0.9}),
        "Adam": (torch.optim.Adam, {}),
        "AdamW": (torch.optim.AdamW, {}),
    }
    for name, (make, _, _) in MODELS.items():
        for label, (optimizer_class, extra) in optimizers.items():
            times = {kind: [] for kind in implementations}
            for _ in range(repeats):
                for kind, arguments in implementations.items():
                    seconds = step_seconds(make(), optimizer_class, {**extra, **arguments}, 200)
                    times[kind].append(seconds)
            medians = {kind: statistics.median(t) for kind, t in times.items()}
            cells = "  ".join(
                f"{kind} {seconds * 1e6:6.1f} us ({medians['loop'] / seconds:.2f}x faster)"
                for kind, seconds in medians.items()
            )
            print(f"  {name:9s} {label:18s} {cells}")


# loader


class PerSampleAugmented(Dataset):
    """The digits through torchvision's per-sample pad-crop and flip, as a DataLoader
    pipeline does it."""

    def __init__(self, data):
        from torchvision.transforms import v2

        self.data = data
        self.transform = v2.Compose([v2.RandomCrop(8, padding=1), v2.RandomHorizontalFlip()])

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        image, label = self.data[index]
        return self.transform(image), label


def samples_per_second(loader, epochs: int) -> float:
    start, samples = time.perf_counter(), 0
    for _ in range(epochs):
        for inputs, _ in loader:
            samples += len(inputs)
    return samples / (time.perf_counter() - start)


def loader_section(repeats: int) -> None:
    print("\n## loader: an epoch of digits (1437 samples, batches of 64), samples/s (median)")
    train = digits("train")
    pairs = {
        "no augmentation": (
            DataLoader(TensorDataset(train.inputs, train.targets), BATCH, shuffle=True),
            MemoryLoader(train, BATCH, shuffle=True),
        ),
        "crop (padding 1) and flip": (
            DataLoader(PerSampleAugmented(train), BATCH, shuffle=True),
            MemoryLoader(train, BATCH, shuffle=True, random_crop_padding=1, horizontal_flip=True),
        ),
    }
    for label, (dataloader, memory) in pairs.items():
        samples_per_second(dataloader, 1), samples_per_second(memory, 1)
        rates: dict[str, list[float]] = {"DataLoader": [], "MemoryLoader": []}
        for _ in range(repeats):
            rates["DataLoader"].append(samples_per_second(dataloader, 5))
            rates["MemoryLoader"].append(samples_per_second(memory, 5))
        ratios = [m / d for m, d in zip(rates["MemoryLoader"], rates["DataLoader"], strict=True)]
        print(
            f"  {label:26s} DataLoader {statistics.median(rates['DataLoader']):10,.0f}  "
            f"MemoryLoader {statistics.median(rates['MemoryLoader']):11,.0f}  "
            f"{statistics.median(ratios):.1f}x"
        )


# job

SETTINGS = {
    "before (DataLoader, loop step)": ["optimizer.foreach=false"],
    "today's defaults (fused step)": [],
    "fast (memory loader, fused step)": ["data.train.loader=memory", "data.eval.loader=memory"],
    # Its compiling (once a process, inductor's cache warm after the first run) against
    # a 30-epoch run of seconds.
    "fast + trainer.compile=true": [
        "data.train.loader=memory",
        "data.eval.loader=memory",
        "trainer.compile=true",
    ],
}


def train_digits(overrides: list[str]) -> tuple[float, float]:
    """One ``loom train configs/digits.yaml``: its training seconds and test accuracy."""
    with tempfile.TemporaryDirectory(prefix="loom-fast-") as folder:
        run_dir = Path(folder) / "run"
        command = [
            sys.executable, "-m", "loom", "train", str(ROOT / "configs" / "digits.yaml"),
            "callbacks=[]", "trainer.cpu_threads=1", *overrides, "--run-dir", str(run_dir),
        ]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True)
        summary = json.loads((run_dir / "summary.json").read_text())
    return summary["seconds"], summary["metrics"]["eval/accuracy"]


def job_section(repeats: int) -> None:
    print("\n## job: loom train configs/digits.yaml (30 epochs), training seconds (median)")
    results: dict[str, list[tuple[float, float]]] = {setting: [] for setting in SETTINGS}
    for _ in range(repeats):
        for setting, overrides in SETTINGS.items():
            results[setting].append(train_digits(overrides))
    before = statistics.median(seconds for seconds, _ in results[next(iter(SETTINGS))])
    for setting, runs in results.items():
        seconds = statistics.median(s for s, _ in runs)
        accuracies = sorted({accuracy for _, accuracy in runs})
        print(
            f"  {setting:34s} {seconds:6.2f} s  {before / seconds:.2f}x faster  "
            f"test accuracy {', '.join(f'{a:.4f}' for a in accuracies)}"
        )


SECTIONS = {
    "compile": compile_section,
    "optimizer": optimizer_section,
    "loader": loader_section,
    "job": job_section,
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--section", choices=[*SECTIONS, "all"], default="all")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, one CPU thread")
    for name, section in SECTIONS.items():
        if args.section in (name, "all"):
            section(args.repeats if name != "job" else max(1, args.repeats // 2))


if __name__ == "__main__":
    main()
