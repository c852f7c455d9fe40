"""Online label smoothing: what it adds to a Trainer step, against a boolean-mask
version, and what its epoch end costs.

1. Trainer step time with OnlineLabelSmoothing against plain cross-entropy, on the
   tiny MLP of benchmarks/trainer_overhead.py (64 -> 128 -> 10, batch 64) and on the
   small CNN of benchmarks/label_smoothing.py (3x32x32, batch 128). Runs alternate in
   one chain; the ratio of median step times is printed with an A/A control.
2. The same Trainer step with a straightforward version that selects the correct
   samples by boolean indexing (written below), which waits for the device on every
   step, against loom's, which weights each sample by its 0/1 correctness. The two
   differ only in their hooks, so their hooks (before_loss + after_loss on a batch
   of the tiny MLP's outputs) are also timed alone, interleaved: the whole-step ratio
   is within this machine's noise, the hooks' is not.
3. The epoch-end cost (next_epoch) for C = 1000.
4. The loss itself (--part loss): OnlineLabelSmoothingLoss in train() mode, statistics
   on, forward + backward, against F.cross_entropy on class indices, for logits of
   (256, 1000) and (4096, 1000), with one thread and with all; time ratios and the
   allocator's peak (see benchmarks/loss_kernels.py). Called as a drop-in criterion
   (its class targets derived from the matrix on every call), with the class targets
   built once, and as the OnlineLabelSmoothing algorithm uses it (soft targets, the
   Trainer's default loss on them, then accumulate: two softmaxes a step).
   Logits of (4096, 32000) need three 32000 x 32000 float32 tables (the matrix, the
   accumulator and the class targets: 12 GiB); --large-vocabulary adds them.

    python benchmarks/online_label_smoothing.py   # targets: overhead <= 5% on the small
                                                  # CNN; faster per step than the mask
                                                  # version; the loss <= 2.5x cross-entropy
    python benchmarks/online_label_smoothing.py --part loss [--large-vocabulary]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
import timeit
from collections.abc import Callable

import loss_kernels
import torch
import torch.nn.functional as F
from torch import nn

from loom import Trainer
from loom.algorithms import OnlineLabelSmoothing
from loom.functional import OnlineLabelSmoothingLoss, cross_entropy
from loom.trainer import Duration, State


class MaskedOnlineLabelSmoothing(OnlineLabelSmoothing):
    """The straightforward version: select the correct samples with a boolean mask."""

    def after_loss(self, state) -> None:
        targets, self._original_targets, self._indices = self._original_targets, None, None
        state.set_targets(targets)
        with torch.no_grad():
            probabilities = state.outputs.detach().float().softmax(dim=1)
            correct = probabilities.argmax(dim=1) == targets
            chosen, labels = probabilities[correct], targets[correct]  # host sync on CUDA
            statistics = self._criterion
            statistics.accumulator.index_add_(1, labels, chosen.t())
            statistics.counts.index_add_(0, labels, torch.ones_like(labels, dtype=torch.float32))


def tiny_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 8 * 8, 10),
    )  # fmt: skip


def make_batches(input_shape: tuple[int, ...], batch_size: int, count: int):
    generator = torch.Generator().manual_seed(0)
    return [
        (
            torch.randn(batch_size, *input_shape, generator=generator),
            torch.randint(0, 10, (batch_size,), generator=generator),
        )
        for _ in range(count)
    ]


def time_steps(make_model: Callable[[], nn.Module], batches, make_algorithms) -> float:
    torch.manual_seed(0)
    model = make_model()
    trainer = Trainer(
        model, batches, max_duration=f"{len(batches)}ba", device="cpu", cpu_threads=1,
        optimizers=torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9),
        algorithms=make_algorithms(),
    )  # fmt: skip
    start = time.perf_counter()
    trainer.fit()
    return (time.perf_counter() - start) / len(batches)


def compare(make_model, batches, baseline, candidate, repeats: int) -> tuple[float, float, float]:
    """Median step times of baseline and candidate (alternating chain) and the A/A control."""
    time_steps(make_model, batches, baseline), time_steps(make_model, batches, candidate)
    baseline_times = [time_steps(make_model, batches, baseline)]
    candidate_times = []
    for _ in range(repeats):
        candidate_times.append(time_steps(make_model, batches, candidate))
        baseline_times.append(time_steps(make_model, batches, baseline))
    control = statistics.median(b / a for a, b in itertools.pairwise(baseline_times))
    return statistics.median(baseline_times), statistics.median(candidate_times), control


def report(
    title: str, baseline_name: str, results: tuple[float, float, float], target: str
) -> None:
    baseline, candidate, control = results
    print(f"\n{title}")
    print(f"  {baseline_name:28}: {baseline * 1e6:9.1f} us/step (median)")
    print(f"  {'OnlineLabelSmoothing':28}: {candidate * 1e6:9.1f} us/step (median)")
    print(f"  A/A control                 : {control:.3f} (noise, ideally 1.000)")
    print(f"  ratio of medians            : {candidate / baseline:.3f} ({target})")


def hook_cost(make_algorithm, repeats: int) -> float:
    """Median time of before_loss + after_loss on one (64, 10) batch of outputs."""
    generator = torch.Generator().manual_seed(0)
    outputs = torch.randn(64, 10, generator=generator)
    state = State(
        model=nn.Identity(), optimizers=[], schedulers=[], max_duration=Duration.parse("1ep"),
        train_dataloader=[], eval_dataloader=None, device=torch.device("cpu"), precision="fp32",
        outputs=outputs, batch=(None, torch.randint(0, 10, (64,), generator=generator)),
    )  # fmt: skip
    algorithm = make_algorithm()

    def step() -> None:
        algorithm.before_loss(state)
        algorithm.after_loss(state)

    step()
    return statistics.median(timeit.repeat(step, number=500, repeat=repeats)) / 500


def epoch_end_cost(num_classes: int, repeats: int) -> float:
    criterion = OnlineLabelSmoothingLoss(alpha=0.5, n_classes=num_classes)
    generator = torch.Generator().manual_seed(0)
    times = []
    for _ in range(repeats):
        criterion.accumulate(
            torch.randn(256, num_classes, generator=generator),
            torch.randint(0, num_classes, (256,), generator=generator),
        )
        start = time.perf_counter()
        criterion.next_epoch()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def drop_in_criterion(shape: tuple[int, int]) -> Callable:
    """The criterion called as a drop-in: its class targets derived on every call."""
    return OnlineLabelSmoothingLoss(alpha=0.5, n_classes=shape[1]).train()


def criterion_with_epoch_targets(shape: tuple[int, int]) -> Callable:
    """The criterion given its class targets, built once (the algorithm builds its own
    once an epoch)."""
    criterion = OnlineLabelSmoothingLoss(alpha=0.5, n_classes=shape[1]).train()
    class_targets = criterion.class_targets()
    return lambda logits, labels: criterion(logits, labels, class_targets=class_targets)


def algorithm_path(shape: tuple[int, int]) -> Callable:
    """What the OnlineLabelSmoothing algorithm runs a step: the soft targets (its
    before_loss), the Trainer's default loss on them, and accumulate (its after_loss)."""
    criterion = OnlineLabelSmoothingLoss(alpha=0.5, n_classes=shape[1]).train()
    class_targets = criterion.class_targets()

    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        indices = criterion.check_targets(logits, labels)
        soft = criterion.soft_targets(logits, indices, class_targets=class_targets)
        value = cross_entropy(logits, soft)
        criterion.accumulate(logits, indices)
        return value

    return loss


def compare_losses(rounds: int, large_vocabulary: bool) -> None:
    shapes = [(256, 1000), (4096, 1000)] + ([(4096, 32000)] if large_vocabulary else [])
    loss_kernels.report(
        "OnlineLabelSmoothingLoss, train() mode, forward + backward",
        shapes,
        ("F.cross_entropy(logits, labels)", lambda shape: F.cross_entropy),
        [
            ("OLS loss, drop-in", drop_in_criterion, "<= 2.5"),
            ("OLS loss, class targets per epoch", criterion_with_epoch_targets, "<= 2.5"),
            ("the algorithm's three steps", algorithm_path, "for scale"),
        ],
        rounds,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=["all", "trainer", "loss"], default="all")
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--loss-rounds", type=int, default=41)
    parser.add_argument(
        "--allocator", choices=["default", "caching"], default="default",
        help="caching: rerun with glibc keeping freed memory (see benchmarks/loss_kernels.py)",
    )  # fmt: skip
    parser.add_argument("--large-vocabulary", action="store_true")
    args = parser.parse_args()
    loss_kernels.use_allocator(args.allocator)
    if args.part != "trainer":
        print(f"torch {torch.__version__}")
        compare_losses(args.loss_rounds, args.large_vocabulary)
    if args.part == "loss":
        return
    torch.set_num_threads(1)  # the second core's neighbours make multi-threaded timings drift
    print(f"\ntorch {torch.__version__}, one thread")
    plain = list
    online = lambda: [OnlineLabelSmoothing(n_classes=10)]  # noqa: E731
    masked = lambda: [MaskedOnlineLabelSmoothing(n_classes=10)]  # noqa: E731

    mlp_batches = make_batches((64,), 64, 500)
    report(
        "tiny MLP (64 -> 128 -> 10), batch 64, 500 steps a run",
        "plain cross-entropy",
        compare(tiny_mlp, mlp_batches, plain, online, args.repeats),
        "for scale: no target on this workload",
    )
    cnn_batches = make_batches((3, 32, 32), 128, 10)
    report(
        "small CNN (3x32x32), batch 128, 10 steps a run",
        "plain cross-entropy",
        compare(small_cnn, cnn_batches, plain, online, args.repeats),
        "target <= 1.05",
    )
    report(
        "tiny MLP, against the boolean-mask version",
        "boolean-mask version",
        compare(tiny_mlp, mlp_batches, masked, online, args.repeats),
        "target < 1.00",
    )
    hooks = {name: [] for name in ("mask", "loom")}
    for _ in range(args.repeats):  # interleaved
        hooks["mask"].append(hook_cost(lambda: masked()[0], repeats=1))
        hooks["loom"].append(hook_cost(lambda: online()[0], repeats=1))
    mask_hooks, loom_hooks = (statistics.median(hooks[name]) for name in ("mask", "loom"))
    print("\nthe hooks alone (before_loss + after_loss), (64, 10) outputs:")
    print(f"  boolean-mask version        : {mask_hooks * 1e6:9.1f} us/step (median)")
    print(f"  OnlineLabelSmoothing        : {loom_hooks * 1e6:9.1f} us/step (median)")
    print(f"  ratio                       : {loom_hooks / mask_hooks:.3f} (target < 1.00)")
    cost = epoch_end_cost(1000, repeats=11)
    print(f"\nepoch end (next_epoch) for C = 1000: {cost * 1e3:.2f} ms (median of 11)")


if __name__ == "__main__":
    main()
