"""Which CPU thread count serves the shipped CPU jobs, on a quiet machine and beside a
busy neighbour.

Each shipped digits job trains for a few epochs through the real ``loom train``, once
per ``trainer.cpu_threads`` setting: 1, every CPU this process may use, ``auto`` (what
loom picks) and ``null`` (torch's default), with ``OMP_NUM_THREADS`` unset so that
``auto`` decides. The figure is the training time the run's ``summary.json`` records
(the process's start and the data's loading left out), the median over repeats, and
its ratio to one thread's, measured in the same run. The "busy" rows run beside one
process that keeps a core busy, as a shared machine's neighbour does.

    OMP_NUM_THREADS= python benchmarks/cpu_threads.py
    python benchmarks/cpu_threads.py --epochs 5 --repeats 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from loom.trainer.runtime import available_cpus

ROOT = Path(__file__).resolve().parent.parent
JOBS = ("digits.yaml", "digits_baseline.yaml", "digits_label_smoothing.yaml")


def train_seconds(job: str, setting: str, epochs: int) -> tuple[float, int]:
    """One ``loom train`` of ``job``: its seconds of training and the threads it used."""
    environment = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
    with tempfile.TemporaryDirectory(prefix="loom-threads-") as folder:
        run_dir = Path(folder) / "run"
        command = [
            sys.executable, "-m", "loom", "train", str(ROOT / "configs" / job),
            f"trainer.max_duration={epochs}ep", f"trainer.cpu_threads={setting}",
            "callbacks=[]", "--run-dir", str(run_dir),
        ]  # fmt: skip
        subprocess.run(command, env=environment, check=True, capture_output=True)
        summary = json.loads((run_dir / "summary.json").read_text())
    return summary["seconds"], summary["cpu_threads"]


@contextlib.contextmanager
def busy_neighbour(busy: bool) -> Iterator[None]:
    """A process that keeps one core busy while inside, when ``busy``."""
    if not busy:
        yield
        return
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cpus = available_cpus()
    settings = ["1", str(cpus), "auto", "null"] if cpus > 1 else ["1", "auto", "null"]
    print(f"{cpus} CPUs for this process; {args.epochs} epochs, median of {args.repeats}")
    print(f"{'job':<28} {'neighbour':<9} {'cpu_threads':<12} {'threads':>7} {'s':>7}  / 1 thread")
    for busy in (False, True):
        with busy_neighbour(busy):
            for job in JOBS:
                one_thread = None
                for setting in settings:
                    runs = [train_seconds(job, setting, args.epochs) for _ in range(args.repeats)]
                    seconds = statistics.median(s for s, _ in runs)
                    one_thread = one_thread or seconds
                    print(
                        f"{job:<28} {'busy' if busy else 'quiet':<9} {setting:<12} "
                        f"{runs[0][1]:>7} {seconds:>7.3f}  {seconds / one_thread:.2f}"
                    )


if __name__ == "__main__":
    main()
