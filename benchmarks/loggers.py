"""What each tracker costs a step: the tiny MLP of trainer_overhead.py for 8000 steps,
evaluated (and so logged) every 50 batches on one batch, with and without each logger,
in one run.

The steps are timed from the end of ``fit_start`` (the logger open) to the last
``batch_end``; what opening and closing a logger costs once a run (MLflow starts its
writer process and its store) is reported apart, as the rest of ``fit``'s time over the
same rest without a logger.

Runs alternate in one chain, none, logger, none, logger, ..., so each logger run sits
between two runs without it; its time over the mean of theirs is its ratio, and the
median over the chain is reported for each logger. The loggers write into a temporary
folder. Target: <= 1.01 a step (issue 19).

    python benchmarks/loggers.py
    python benchmarks/loggers.py --repeats 21
    python benchmarks/loggers.py --only mlflow
    python benchmarks/loggers.py --instructions   # callgrind's counts a step instead

``--instructions`` counts the training process's instructions a step under callgrind,
with and without each logger (500 and 1500 steps, the difference over 1000): the same
on a loaded machine, where the wall ratios above move by a few percent from run to run.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from trainer_overhead import make_batches, make_model

from loom import Trainer
from loom.callbacks import CSVLogger, MetricsLogger, MLflowLogger, TensorBoardLogger
from loom.trainer import Callback

EVAL_EVERY = "50ba"
STEPS = 8000


class StepClock(Callback):
    """Times the steps: from its ``fit_start`` (after the logger's, listed before it)
    to the last ``batch_end``."""

    def fit_start(self, state):
        self.start = time.perf_counter()

    def batch_end(self, state):
        if state.timestamp.batch == STEPS:
            self.seconds = time.perf_counter() - self.start


def time_run(batches, make_logger: Callable[[Path], Callback] | None) -> tuple[float, float]:
    """The steps' seconds and the rest of ``fit``'s."""
    model, optimizer = make_model()
    clock = StepClock()
    with tempfile.TemporaryDirectory(prefix="loom-loggers-") as folder:
        callbacks = [] if make_logger is None else [make_logger(Path(folder))]
        trainer = Trainer(
            model, batches, batches[:1], max_duration=f"{STEPS}ba", optimizers=optimizer,
            device="cpu", cpu_threads=1, eval_interval=EVAL_EVERY, callbacks=[*callbacks, clock],
        )  # fmt: skip
        start = time.perf_counter()
        trainer.fit()
        whole = time.perf_counter() - start
    return clock.seconds, whole - clock.seconds


LOGGERS: dict[str, Callable[[Path], Callback]] = {
    "csv": lambda folder: CSVLogger(folder / "metrics.csv"),
    "tensorboard": lambda folder: TensorBoardLogger(folder, hparams={"lr": 0.01}),
    "mlflow": lambda folder: MLflowLogger(f"sqlite:///{folder}/mlflow.db", hparams={"lr": 0.01}),
    "jsonl": lambda folder: MetricsLogger(folder / "m.jsonl", console=False),
}


def child(name: str, steps: int) -> None:
    """One run of ``steps`` steps with the logger ``name`` (or ``none``), for callgrind."""
    global STEPS
    STEPS = steps
    torch.set_num_threads(1)
    time_run(make_batches(), LOGGERS.get(name))


def instructions(names: list[str]) -> None:
    from instructions_per_step import ROOT
    from instructions_per_step import per_step as counted

    def per_step(name: str) -> float:
        return counted(ROOT, name, 500, 1500, script=__file__)

    none = per_step("none")
    print(f"no logger: {none:,.0f} instructions a step (evaluated every {EVAL_EVERY})")
    for name in names:
        logged = per_step(name)
        print(f"{name:<12}: {logged:,.0f} instructions a step, / no logger {logged / none:.4f}")


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--only", help="one logger: csv, tensorboard, mlflow or jsonl")
    parser.add_argument("--instructions", action="store_true", help="callgrind's counts")
    args = parser.parse_args()
    loggers = LOGGERS if args.only is None else {args.only: LOGGERS[args.only]}
    if args.instructions:
        instructions(list(loggers))
        return
    torch.set_num_threads(1)
    batches = make_batches()
    print(f"{STEPS} steps, evaluated and logged every {EVAL_EVERY}, {args.repeats} repeats")
    for name, make_logger in loggers.items():
        time_run(batches, None), time_run(batches, make_logger)  # warm-up
        without = [time_run(batches, None)]
        with_logger = []
        for _ in range(args.repeats):
            with_logger.append(time_run(batches, make_logger))
            without.append(time_run(batches, None))
        ratios = [
            logged[0] / ((before[0] + after[0]) / 2)
            for logged, (before, after) in zip(
                with_logger, itertools.pairwise(without), strict=True
            )
        ]
        rest = statistics.median(run[1] for run in with_logger) - statistics.median(
            run[1] for run in without
        )
        quartiles = statistics.quantiles(ratios, n=4)
        print(
            f"{name:<12}: {statistics.median(run[0] for run in with_logger) / STEPS * 1e6:6.1f}"
            f" us/step, / no logger {statistics.median(ratios):.3f} "
            f"(quartiles {quartiles[0]:.3f}-{quartiles[2]:.3f}; target <= 1.01); "
            f"opening and closing it: {rest:.3f} s a run"
        )


if __name__ == "__main__":
    main()
