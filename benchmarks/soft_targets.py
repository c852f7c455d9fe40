"""The soft-target methods' step cost: CutMix, the MixUp-or-CutMix switch and knowledge
distillation, each against the same Trainer loop without the method, in one run.

The model is the small CNN of benchmarks/label_smoothing.py (3x32x32 inputs, batch 128,
10 classes, one thread). Runs of every variant alternate in one chain with runs without
a method (a plain run between every two variants, their order turning each round), and
each variant's ratio is the median, over the chain, of its step time over the mean of
the two plain runs beside it; an A/A control (one plain run over the next) shows the
machine's noise. Variants:

  cutmix             CutMix(alpha=1.0)
  mixup              MixUp(alpha=0.2), for scale
  mixup_or_cutmix    MixUpOrCutMix(0.8, 1.0, switch_prob=0.5)
  distill            Distillation from a teacher of the same architecture: its overhead
                     includes the teacher's forward (no_grad, eval mode)
  distill_replayed   Distillation from a "teacher" that returns logits computed once:
                     the teacher's forward excluded, what is left is the method's own
                     cost (its hooks and the KL term's forward and backward)

Wall time on a shared 2-core machine moves by 10-20% from run to run; ``--instructions``
counts each variant's instructions a step under callgrind instead (deterministic under
load: the difference of a 5-step and a 2-step run over 3 steps, as
benchmarks/instructions_per_step.py does, at batch 32, which callgrind runs in minutes a run),
with the teacher's forward alone counted the same way, so that distillation's cost
beyond its teacher is what is left.

    python benchmarks/soft_targets.py     # targets: cutmix <= 1.05x; the switch <= 1.05x;
                                          # distillation beyond its teacher's forward
                                          # (distill_replayed) <= 1.03x
    python benchmarks/soft_targets.py --repeats 10 --steps 30
    python benchmarks/soft_targets.py --instructions   # about an hour
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from collections.abc import Callable

import torch
from method_chain import BATCH, make_batches, run_chain, small_cnn, step_time
from torch import nn

from loom.algorithms import CutMix, Distillation, MixUp, MixUpOrCutMix
from loom.trainer import Algorithm

INSTRUCTIONS_BATCH = 32  # under callgrind: a step of batch 128 takes a minute


class ReplayedTeacher(nn.Module):
    """A teacher whose forward costs nothing: it returns logits computed once."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.register_buffer("logits", logits)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.logits


def teacher() -> nn.Module:
    torch.manual_seed(1)
    return small_cnn()


def replayed_teacher(batch: int = BATCH) -> nn.Module:
    with torch.no_grad():
        logits = teacher().eval()(torch.randn(batch, 3, 32, 32))
    return ReplayedTeacher(logits)


VARIANTS: dict[str, Callable[[int], list[Algorithm]]] = {  # of the batch size
    "cutmix": lambda batch: [CutMix(alpha=1.0)],
    "mixup": lambda batch: [MixUp(alpha=0.2)],
    "mixup_or_cutmix": lambda batch: [MixUpOrCutMix(0.8, 1.0, switch_prob=0.5)],
    "distill": lambda batch: [Distillation(teacher(), temperature=4.0, alpha=0.9)],
    "distill_replayed": lambda batch: [
        Distillation(replayed_teacher(batch), temperature=4.0, alpha=0.9)
    ],
}


def teacher_forward_time(batches: list) -> float:
    """Seconds per batch of the teacher's forward alone, as Distillation runs it."""
    model = teacher().eval()
    with torch.no_grad():
        model(batches[0][0])  # warm-up
        start = time.perf_counter()
        for inputs, _ in batches:
            model(inputs)
    return (time.perf_counter() - start) / len(batches)


def child(name: str, steps: int) -> None:
    """``steps`` steps of one variant (``plain``, or ``teacher``: its forward alone), for
    callgrind: on two batches made once and taken in turn, so that making them is no
    part of a step."""
    torch.set_num_threads(1)
    made = make_batches(2, INSTRUCTIONS_BATCH)
    batches = [made[step % 2] for step in range(steps)]
    if name == "teacher":
        teacher_forward_time(batches)
    else:
        algorithms = [] if name == "plain" else VARIANTS[name](INSTRUCTIONS_BATCH)
        step_time(batches, algorithms)


def instructions() -> None:
    from instructions_per_step import ROOT, per_step

    def counted(name: str) -> float:
        return per_step(ROOT, name, 2, 5, script=__file__)

    plain = counted("plain")
    print(f"plain: {plain:,.0f} instructions a step (small CNN, batch {INSTRUCTIONS_BATCH})")
    for name in VARIANTS:
        print(f"{name:18} {counted(name) / plain:.4f}x plain")
    # The teacher's run counts one warm-up forward more in each of its two runs: it cancels.
    print(f"{'teacher forward':18} {counted('teacher') / plain:.4f}x plain")


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--instructions", action="store_true", help="callgrind's counts")
    args = parser.parse_args()
    if args.instructions:
        instructions()
        return
    torch.set_num_threads(1)
    batches = make_batches(args.steps)
    chain = run_chain(
        {name: functools.partial(lambda make: step_time(batches, make(BATCH)), make)
         for name, make in VARIANTS.items()},
        lambda: step_time(batches, []),
        args.repeats,
    )  # fmt: skip
    print(chain.table(f"small CNN, batch {BATCH}, 1 thread, {args.steps} steps x {args.repeats}"))
    teacher_seconds = teacher_forward_time(batches)
    plain_seconds = statistics.median(chain.plain)
    print(
        f"teacher forward alone: {teacher_seconds * 1e3:.2f} ms = "
        f"{teacher_seconds / plain_seconds:.3f} of a plain step"
    )


if __name__ == "__main__":
    main()
