"""What each tracker costs a step: the tiny MLP of trainer_overhead.py for 8000 steps,
evaluated (and so logged) every 50 batches on one batch, with and without each logger,
in one run. Each run opens and closes its logger once, which the 8000 steps amortise.

Runs alternate in one chain, none, logger, none, logger, ..., so each logger run sits
between two runs without it; its time over the mean of theirs is its ratio, and the
median over the chain is reported for each logger. The loggers write into a temporary
folder. Target: <= 1.01 (issue 19).

    python benchmarks/loggers.py
    python benchmarks/loggers.py --repeats 21
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from trainer_overhead import make_batches, make_model

from loom import Trainer
from loom.callbacks import CSVLogger, MetricsLogger, TensorBoardLogger
from loom.trainer import Callback

EVAL_EVERY = "50ba"
STEPS = 8000


def time_run(batches, make_logger: Callable[[Path], Callback] | None) -> float:
    model, optimizer = make_model()
    with tempfile.TemporaryDirectory(prefix="loom-loggers-") as folder:
        callbacks = [] if make_logger is None else [make_logger(Path(folder))]
        trainer = Trainer(
            model, batches, batches[:1], max_duration=f"{STEPS}ba", optimizers=optimizer,
            device="cpu", cpu_threads=1, eval_interval=EVAL_EVERY, callbacks=callbacks,
        )  # fmt: skip
        start = time.perf_counter()
        trainer.fit()
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=11)
    args = parser.parse_args()
    torch.set_num_threads(1)
    loggers = {
        "csv": lambda folder: CSVLogger(folder / "metrics.csv"),
        "tensorboard": lambda folder: TensorBoardLogger(folder, hparams={"lr": 0.01}),
        "jsonl (MetricsLogger)": lambda folder: MetricsLogger(folder / "m.jsonl", console=False),
    }
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
            logged / ((before + after) / 2)
            for logged, (before, after) in zip(
                with_logger, itertools.pairwise(without), strict=True
            )
        ]
        quartiles = statistics.quantiles(ratios, n=4)
        print(
            f"{name:<22}: {statistics.median(with_logger) / STEPS * 1e6:6.1f} us/step, "
            f"/ no logger {statistics.median(ratios):.3f} "
            f"(quartiles {quartiles[0]:.3f}-{quartiles[2]:.3f}; target <= 1.01)"
        )


if __name__ == "__main__":
    main()
