"""loom's Trainer on one gloo process against two (torchrun), samples per second; and at
two, the model sharded (``strategy="fsdp"``, FSDP2) against replicated (DDP).

Two MLPs on digits-shaped inputs (64 features, 10 classes): the digits-sized one
(64-128-10) and a wider one (64-1024-1024-10); each process trains batches of 64 with
SGD, one CPU thread, so two processes train twice the samples a step and all-reduce the
gradients between them. Each configuration runs ``--repeats`` times, alternating, in
fresh processes; the figure is the median of the samples per second that rank 0 times
over the steps after a warm-up. On a 2-core machine two processes take both cores: the
ratio says what the all-reduce and the second process cost there, not how loom scales.
FSDP's step gathers each layer's weights before its forward and again before its
backward, and reduce-scatters the gradients: more collectives than DDP's one bucketed
all-reduce, which a model this small pays for in latency, not in bandwidth.

    OMP_NUM_THREADS=1 python benchmarks/distributed.py
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
from pathlib import Path

BATCH = 64
STEPS = 300
WARMUP = 30
WIDTHS = {"digits-sized MLP (64-128-10)": [128], "wider MLP (64-1024-1024-10)": [1024, 1024]}


def worker(out: str, hidden: list[int], strategy: str) -> None:
    """One process of a run: trains ``WARMUP + STEPS`` steps, and rank 0 writes its
    samples per second over the last ``STEPS``."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from loom import Callback, Trainer
    from loom.trainer.runtime import destroy_process_group, torchrun_world_size

    class Stopwatch(Callback):
        def batch_end(self, state):
            if state.timestamp.batch == WARMUP:
                self.start, self.samples = time.perf_counter(), state.timestamp.samples

        def fit_end(self, state):
            self.seconds = time.perf_counter() - self.start
            self.samples = state.timestamp.samples - self.samples

    world = torchrun_world_size()
    generator = torch.Generator().manual_seed(0)
    samples = BATCH * world * (WARMUP + STEPS)
    data = TensorDataset(
        torch.randn(samples, 64, generator=generator),
        torch.randint(0, 10, (samples,), generator=generator),
    )
    torch.manual_seed(0)
    sizes = [64, *hidden]
    layers = [m for a, b in itertools.pairwise(sizes) for m in (nn.Linear(a, b), nn.ReLU())]
    model = nn.Sequential(*layers, nn.Linear(sizes[-1], 10))
    stopwatch = Stopwatch()
    trainer = Trainer(
        model,
        DataLoader(data, batch_size=BATCH, shuffle=True),
        max_duration="1ep",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.01),
        callbacks=[stopwatch],
        device="cpu",
        cpu_threads=1,
        seed=0,
        strategy=strategy,
    )
    trainer.fit()
    if trainer.state.is_main_process:
        rate = stopwatch.samples * world / stopwatch.seconds  # every rank's samples
        Path(out).write_text(json.dumps({"samples_per_second": rate}))
    del trainer
    destroy_process_group()


def samples_per_second(processes: int, hidden: list[int], strategy: str = "ddp") -> float:
    with tempfile.TemporaryDirectory(prefix="loom-distributed-") as folder:
        out = Path(folder) / "rate.json"
        here = [
            str(Path(__file__).resolve()), "--worker", str(out), json.dumps(hidden), strategy,
        ]  # fmt: skip
        if processes == 1:
            command = [sys.executable, *here]
        else:
            command = [
                sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node", str(processes), *here,
            ]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True, timeout=600)
        return json.loads(out.read_text())["samples_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)  # OUT HIDDEN STRATEGY
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], json.loads(args.worker[1]), args.worker[2])
        return
    print(f"batch {BATCH} a process, {STEPS} timed steps, {args.repeats} runs each, gloo, CPU")
    runs = {"1 process": (1, "ddp"), "2 DDP": (2, "ddp"), "2 FSDP": (2, "fsdp")}
    for name, hidden in WIDTHS.items():
        rates: dict[str, list[float]] = {run: [] for run in runs}
        for _ in range(args.repeats):
            for run, (processes, strategy) in runs.items():
                rates[run].append(samples_per_second(processes, hidden, strategy))
        one, ddp, fsdp = (statistics.median(rates[run]) for run in runs)
        print(f"  {name:30s} 1 process {one:9,.0f} samples/s  2 processes {ddp:9,.0f}  "
              f"{ddp / one:.2f}x")  # fmt: skip
        print(f"  {'':30s} 2 processes, FSDP {fsdp:9,.0f} samples/s: step cost FSDP/DDP "
              f"{ddp / fsdp:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
