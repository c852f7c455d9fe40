"""Label smoothing: ``smooth_labels`` against the one-hot formula and the fused loss,
and the Trainer step with ``LabelSmoothing`` against the same step without it.

Part 1, for logits of shape (256, 10), (256, 1000) and (4096, 32000):
  - smooth_labels(logits, labels, s)
  - the one-hot formula, F.one_hot(labels, C).float() * (1 - s) + s / C
  - the fused loss F.cross_entropy(logits, labels, label_smoothing=s), which never
    builds targets (for scale: what a whole loss costs)
  Time is the median of interleaved repetitions; peak memory is measured for each
  variant in a fresh subprocess, as its peak resident memory above what the inputs
  already took, and compared with one dense float32 target.

Part 2 (--part loss): the whole loss, forward + backward: smooth_labels followed by
soft_cross_entropy (what LabelSmoothing hands the Trainer's default loss) against the
fused F.cross_entropy(logits, labels, label_smoothing=s), for logits of (256, 1000),
(4096, 1000) and (4096, 32000), with one thread and with all; time ratios and the
allocator's peak (see benchmarks/loss_kernels.py). The one-hot formula followed by
F.cross_entropy on its dense targets is printed for scale.

Part 3: a small CNN (3x32x32 inputs, batch 128, one thread) trained by the Trainer
with and without LabelSmoothing(0.1), runs alternating in one chain. It prints the
median step time of each, their ratio, the median ratio of neighbouring runs, and an
A/A control (one run without against the next) that shows the machine's noise.

    python benchmarks/label_smoothing.py     # targets: >= 2x faster than one-hot at
                                             # (256, 1000) and (4096, 32000); peak memory
                                             # <= one dense target; the loss <= 1.15x the
                                             # fused one; Trainer overhead <= 3%
    python benchmarks/label_smoothing.py --part targets    # part 1 only
    python benchmarks/label_smoothing.py --part loss       # part 2 only
    python benchmarks/label_smoothing.py --part trainer    # part 3 only
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import time

import loss_kernels
import torch
import torch.nn.functional as F
from torch import nn

from loom import Trainer
from loom.algorithms import LabelSmoothing
from loom.functional import smooth_labels, soft_cross_entropy

SHAPES = [(256, 10), (256, 1000), (4096, 32000)]
SMOOTHING = 0.1


def one_hot_formula(logits: torch.Tensor, labels: torch.Tensor, smoothing: float) -> torch.Tensor:
    num_classes = logits.shape[1]
    return F.one_hot(labels, num_classes).float() * (1 - smoothing) + smoothing / num_classes


def fused_loss(logits: torch.Tensor, labels: torch.Tensor, smoothing: float) -> torch.Tensor:
    return F.cross_entropy(logits, labels, label_smoothing=smoothing)


VARIANTS = {
    "smooth_labels": smooth_labels,
    "one_hot_formula": one_hot_formula,
    "fused_cross_entropy": fused_loss,
}


def make_inputs(shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(shape, generator=generator)
    labels = torch.randint(0, shape[1], (shape[0],), generator=generator)
    return logits, labels


def time_variants(shape: tuple[int, int], repeats: int) -> dict[str, float]:
    logits, labels = make_inputs(shape)
    calls = 1 if shape[0] * shape[1] > 10**7 else 200  # enough work per timing
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for function in VARIANTS.values():
        function(logits, labels, SMOOTHING)  # warm-up
    for _ in range(repeats):
        for name, function in VARIANTS.items():  # interleaved: each repetition runs all
            start = time.perf_counter()
            for _ in range(calls):
                function(logits, labels, SMOOTHING)
            times[name].append((time.perf_counter() - start) / calls)
    return {name: statistics.median(values) for name, values in times.items()}


def peak_memory_bytes(variant: str, shape: tuple[int, int]) -> int:
    """Runs one call of ``variant`` in a fresh process; its peak RSS above the inputs'.

    Linux keeps a process's peak resident memory (VmHWM); writing 5 to
    /proc/self/clear_refs resets it to the current size, so the peak after the
    call minus the size before it is what the call itself needed at its worst.
    """
    code = (
        "import json, sys, torch\n"
        "sys.path.insert(0, 'benchmarks')\n"
        "import label_smoothing as bench\n"
        f"logits, labels = bench.make_inputs({shape!r})\n"
        "def status(key):\n"
        "    line = next(l for l in open('/proc/self/status') if l.startswith(key))\n"
        "    return int(line.split()[1]) * 1024\n"
        # A call on tiny inputs first: first-call initialisation is not the variant's cost.
        f"bench.VARIANTS[{variant!r}](*bench.make_inputs((2, 3)), bench.SMOOTHING)\n"
        "open('/proc/self/clear_refs', 'w').write('5')\n"
        "before = status('VmRSS:')\n"
        f"result = bench.VARIANTS[{variant!r}](logits, labels, bench.SMOOTHING)\n"
        "print(json.dumps(status('VmHWM:') - before))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout)


class SmallCNN(nn.Sequential):
    def __init__(self, num_classes: int = 10):
        super().__init__(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 8 * 8, num_classes),
        )  # fmt: skip


def time_cnn_steps(batches, algorithms) -> float:
    torch.manual_seed(0)
    model = SmallCNN()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    trainer = Trainer(
        model, batches, max_duration=f"{len(batches)}ba", optimizers=optimizer,
        algorithms=algorithms, device="cpu", cpu_threads=1,
    )  # fmt: skip
    start = time.perf_counter()
    trainer.fit()
    return (time.perf_counter() - start) / len(batches)


def trainer_overhead(repeats: int, steps: int) -> tuple[float, float, float, float]:
    torch.set_num_threads(1)  # the second core's neighbours make multi-threaded timings drift
    generator = torch.Generator().manual_seed(0)
    batches = [
        (
            torch.randn(128, 3, 32, 32, generator=generator),
            torch.randint(0, 10, (128,), generator=generator),
        )
        for _ in range(steps)
    ]
    time_cnn_steps(batches, []), time_cnn_steps(batches, [LabelSmoothing(SMOOTHING)])  # warm-up
    plain = [time_cnn_steps(batches, [])]
    smoothed = []
    for _ in range(repeats):  # one alternating chain: each run follows the other kind
        smoothed.append(time_cnn_steps(batches, [LabelSmoothing(SMOOTHING)]))
        plain.append(time_cnn_steps(batches, []))
    neighbours = list(itertools.pairwise(plain))
    ratios = [s / ((a + b) / 2) for s, (a, b) in zip(smoothed, neighbours, strict=True)]
    control = statistics.median(b / a for a, b in neighbours)  # A/A: the machine's noise
    return statistics.median(plain), statistics.median(smoothed), statistics.median(ratios), control


def compare_targets(repeats: int) -> None:
    print(
        "\nshape          variant               time (ms)  vs one-hot  peak memory / dense target"
    )
    for shape in SHAPES:
        times = time_variants(shape, repeats)
        dense_target_bytes = shape[0] * shape[1] * 4
        for name, seconds in times.items():
            peak = peak_memory_bytes(name, shape)
            speedup = times["one_hot_formula"] / seconds
            print(
                f"{shape!s:14} {name:20} {seconds * 1e3:10.3f}  {speedup:9.2f}x  "
                f"{peak / 2**20:8.1f} MiB = {peak / dense_target_bytes:5.2f}"
            )


LOSS_SHAPES = [(256, 1000), (4096, 1000), (4096, 32000)]


def loom_smoothed_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return soft_cross_entropy(logits, smooth_labels(logits, labels, SMOOTHING))


def one_hot_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, one_hot_formula(logits, labels, SMOOTHING))


def compare_losses(rounds: int) -> None:
    loss_kernels.report(
        "label-smoothed cross-entropy, forward + backward",
        LOSS_SHAPES,
        (
            "F.cross_entropy(label_smoothing=s)",
            lambda shape: lambda x, y: fused_loss(x, y, SMOOTHING),
        ),
        [
            ("smooth_labels + soft_cross_entropy", lambda shape: loom_smoothed_loss, "<= 1.15"),
            ("one-hot formula + F.cross_entropy", lambda shape: one_hot_loss, "for scale"),
        ],
        rounds,
    )


def compare_trainer_steps(repeats: int, steps: int) -> None:
    plain, smoothed, ratio, control = trainer_overhead(repeats, steps)
    print(f"\nsmall CNN, batch 128, one thread, {steps} steps x {repeats} repetitions:")
    print(f"  without LabelSmoothing: {plain * 1e3:.2f} ms/step (median)")
    print(f"  with LabelSmoothing   : {smoothed * 1e3:.2f} ms/step (median)")
    print(f"  A/A control           : {control:.3f} (without / without; noise, ideally 1.000)")
    print(f"  with / without        : {ratio:.3f} (median of alternating pairs)")
    print(f"  median / median       : {smoothed / plain:.3f} (target <= 1.03)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=["all", "targets", "loss", "trainer"], default="all")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--loss-rounds", type=int, default=21)
    parser.add_argument(
        "--allocator", choices=["default", "caching"], default="default",
        help="caching: rerun with glibc keeping freed memory (see benchmarks/loss_kernels.py)",
    )  # fmt: skip
    parser.add_argument("--cnn-repeats", type=int, default=31)
    parser.add_argument("--cnn-steps", type=int, default=10)
    args = parser.parse_args()
    loss_kernels.use_allocator(args.allocator)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, smoothing={SMOOTHING}")
    if args.part in ("all", "targets"):
        compare_targets(args.repeats)
    if args.part in ("all", "loss"):
        compare_losses(args.loss_rounds)
    if args.part in ("all", "trainer"):
        compare_trainer_steps(args.cnn_repeats, args.cnn_steps)


if __name__ == "__main__":
    main()
