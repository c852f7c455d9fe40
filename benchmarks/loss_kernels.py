"""What a loss costs, forward and backward, against a baseline loss in the same run.

Shared by benchmarks/label_smoothing.py and benchmarks/online_label_smoothing.py, which
print their tables with it (``--part loss`` in each). Not a benchmark of its own.

- Time: the two losses alternate in rounds, the order swapped every round, each timed
  over a block of forward + backward calls; the ratio of each round's pair is taken,
  and the median of those ratios reported. An A/A control (the baseline against
  itself, the same way) shows the machine's noise.
- Page faults: the minor page faults a call takes, counted by the kernel
  (``getrusage``). glibc returns freed memory at the top of its heap to the system and
  takes it back, page by page, at the next call; on a virtual machine each such fault
  is dear, and for losses over millions of elements they can outweigh the arithmetic.
  ``--allocator caching`` reruns the script with glibc told to keep what it has
  (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_``), as
  CUDA's caching allocator (and jemalloc or tcmalloc) always do: the kernels' own cost.
- Memory: the allocator's peak during one forward + backward, above what the inputs
  and the logits' gradient already hold. Read from torch's profiler, which records
  every CPU allocation and free made by a torch operator (``profile_memory=True``);
  a temporary an operator makes and frees inside itself is not seen.
"""

from __future__ import annotations

import os
import resource
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

CACHING_ALLOCATOR = {
    "MALLOC_MMAP_THRESHOLD_": str(2**32),  # large buffers from the heap, not mmap
    "MALLOC_TRIM_THRESHOLD_": str(2**36),  # never hand the heap's top back
    "MALLOC_TOP_PAD_": str(2**30),  # and grow it in large steps
}


def use_allocator(mode: str) -> None:
    """For ``mode == "caching"``, reruns this process with glibc keeping its memory.

    glibc reads these settings once, at start-up: the script starts again with them.
    """
    if mode == "caching" and any(os.environ.get(k) != v for k, v in CACHING_ALLOCATOR.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **CACHING_ALLOCATOR})
    print(f"allocator: glibc, {'caching' if mode == 'caching' else 'default settings'}")


def _page_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def forward_backward(loss: Loss, logits: torch.Tensor, labels: torch.Tensor) -> Callable[[], None]:
    """One step of ``loss`` on ``logits`` (a leaf that requires grad) and its backward."""

    def step() -> None:
        loss(logits, labels).backward()

    return step


def paired_ratio(
    baseline: Callable[[], None], candidate: Callable[[], None], rounds: int
) -> tuple[float, float, float, float, float]:
    """Median candidate/baseline ratio over alternating rounds, the A/A control, the
    median seconds of one call of each, and the candidate's page faults per call.

    In a round each loss runs once untimed, then enough times to take about 10 ms:
    each is timed in its own steady state (the allocator's, the caches'), as in a
    training loop that calls it every step, not in the state the other one left.
    """
    for step in (baseline, candidate):
        step()  # first calls initialise kernels and the logits' gradient
    start = time.perf_counter()
    baseline()
    calls = max(3, round(10e-3 / (time.perf_counter() - start)))
    times: dict[str, list[float]] = {"baseline": [], "candidate": [], "control": []}
    faults = 0
    order = [("baseline", baseline), ("candidate", candidate), ("control", baseline)]
    for round_index in range(rounds):
        for name, step in order if round_index % 2 == 0 else order[::-1]:
            step()
            faults_before, start = _page_faults(), time.perf_counter()
            for _ in range(calls):
                step()
            times[name].append((time.perf_counter() - start) / calls)
            if name == "candidate":
                faults += _page_faults() - faults_before
    ratios = [c / b for b, c in zip(times["baseline"], times["candidate"], strict=True)]
    controls = [c / b for b, c in zip(times["baseline"], times["control"], strict=True)]
    return (
        statistics.median(ratios),
        statistics.median(controls),
        statistics.median(times["baseline"]),
        statistics.median(times["candidate"]),
        faults / (rounds * calls),
    )


def baseline_page_faults(baseline: Callable[[], None], calls: int = 20) -> float:
    """The baseline's page faults per call, in its own steady state."""
    baseline()
    before = _page_faults()
    for _ in range(calls):
        baseline()
    return (_page_faults() - before) / calls


def allocator_peak_bytes(step: Callable[[], None]) -> int:
    """The most bytes torch's CPU allocator held during ``step`` above what it held before.

    Call it with a loss made for it, not yet called: what a loss keeps from one call to
    the next (a workspace) is then counted. The logits' gradient should exist already,
    as it does in training after the first step.
    """
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        step()
    held = peak = 0
    for event in sorted(profiler.events(), key=lambda event: event.time_range.start):
        held += event.self_cpu_memory_usage  # allocations minus frees inside the event
        peak = max(peak, held)
    return peak


def report(
    title: str,
    shapes: list[tuple[int, int]],
    baseline: tuple[str, Callable[[tuple[int, int]], Loss]],
    candidates: list[tuple[str, Callable[[tuple[int, int]], Loss], str]],
    rounds: int,
) -> None:
    """Prints one table per thread count: each candidate's time ratio and peak memory.

    ``baseline`` and each candidate are ``(name, make_loss)``, where ``make_loss(shape)``
    returns the loss for that shape; a candidate carries its target as a third item.
    """
    threads_available = torch.get_num_threads()
    baseline_name, make_baseline = baseline
    for threads in sorted({1, threads_available}):
        torch.set_num_threads(threads)
        print(f"\n{title}, {threads} thread(s); baseline: {baseline_name}")
        print(
            f"  {'logits':14} {'loss':34} {'ratio':>6} {'A/A':>6} {'baseline':>10} "
            f"{'faults':>7} {'(base)':>7} {'peak':>9} {'(base)':>9}  target"
        )
        for shape in shapes:
            logits, labels = _inputs(shape)
            baseline_step = forward_backward(make_baseline(shape), logits, labels)
            baseline_step()  # the logits' gradient, from here on
            fresh_baseline = forward_backward(make_baseline(shape), logits, labels)
            baseline_peak = allocator_peak_bytes(fresh_baseline)
            for name, make_loss, target in candidates:
                step = forward_backward(make_loss(shape), logits, labels)
                ratio, control, baseline_seconds, _, faults = paired_ratio(
                    baseline_step, step, rounds
                )
                baseline_faults = baseline_page_faults(baseline_step)  # after the warm-up
                peak = allocator_peak_bytes(forward_backward(make_loss(shape), logits, labels))
                print(
                    f"  {shape!s:14} {name:34} {ratio:6.2f} {control:6.2f} "
                    f"{baseline_seconds * 1e3:8.2f}ms {faults:7.0f} {baseline_faults:7.0f} "
                    f"{_mib(peak):>9} {_mib(baseline_peak):>9}  {target}"
                )
    torch.set_num_threads(threads_available)
    print(f"  (one N x C float32 buffer: {', '.join(_buffer(shape) for shape in shapes)})")


def _inputs(shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(shape, generator=generator).requires_grad_()
    labels = torch.randint(0, shape[1], (shape[0],), generator=generator)
    return logits, labels


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f}MiB"


def _buffer(shape: tuple[int, int]) -> str:
    return f"{shape}: {_mib(shape[0] * shape[1] * 4)}"
