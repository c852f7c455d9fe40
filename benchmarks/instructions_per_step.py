"""Instructions per training step under callgrind: loom's Trainer against the plain loop.

Deterministic where wall time is not: the same code counts the same instructions on a
loaded machine. Each variant runs twice under ``valgrind --tool=callgrind``, for
``--short`` and ``--long`` steps, and the difference of the two totals divided by the
difference of the steps is its cost per step (start-up, imports and the first steps
cancel). ``PYTHONHASHSEED`` is fixed: string hashes decide which attribute lookups
collide in the interpreter's caches, and move counts by about 0.5% between processes.

    python benchmarks/instructions_per_step.py                  # this tree
    python benchmarks/instructions_per_step.py --baseline 9a17b81   # and another commit's

With ``--baseline``, the other commit's files are exported beside, and its Trainer is
counted by the same script (this one), importing that tree's loom.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_COLLECTED = re.compile(r"Collected : (\d+)")


def child(variant: str, steps: int) -> None:
    """Trains ``steps`` steps of the benchmark's tiny MLP, the plain way or with loom."""
    sys.path.insert(0, str(Path(__file__).parent))
    import torch
    import torch.nn.functional as F
    from trainer_overhead import make_batches, make_model

    torch.set_num_threads(1)
    batches = make_batches()
    model, optimizer = make_model()
    if variant == "plain":
        for step in range(steps):
            inputs, targets = batches[step % len(batches)]
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(inputs), targets).backward()
            optimizer.step()
    else:
        from loom import Trainer

        trainer = Trainer(
            model, batches, max_duration=f"{steps}ba", optimizers=optimizer, device="cpu"
        )
        trainer.fit()


def count(tree: Path, variant: str, steps: int, script: str = __file__) -> int:
    """Instructions of ``script --child variant steps`` under callgrind, importing
    ``tree``'s loom (the training process alone: a logger's writer process is not
    counted)."""
    environment = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "PYTHONHASHSEED": "0",
        "OMP_NUM_THREADS": "1",
    }
    with tempfile.TemporaryDirectory() as folder:
        command = [
            "valgrind", "--tool=callgrind", f"--callgrind-out-file={folder}/out",
            sys.executable, script, "--child", variant, str(steps),
        ]  # fmt: skip
        result = subprocess.run(command, env=environment, capture_output=True, text=True)
    found = _COLLECTED.search(result.stderr)
    if result.returncode != 0 or found is None:
        raise SystemExit(f"callgrind failed for {variant} in {tree}:\n{result.stderr[-2000:]}")
    return int(found[1])


def per_step(tree: Path, variant: str, short: int, long: int, script: str = __file__) -> float:
    """Instructions a step: the difference of a ``long`` and a ``short`` run's counts."""
    long_count = count(tree, variant, long, script=script)
    return (long_count - count(tree, variant, short, script=script)) / (long - short)


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline", help="also count this commit's Trainer")
    parser.add_argument("--short", type=int, default=500)
    parser.add_argument("--long", type=int, default=1500)
    args = parser.parse_args()
    plain = per_step(ROOT, "plain", args.short, args.long)
    trees = {"this tree": ROOT}
    with tempfile.TemporaryDirectory(prefix="loom-baseline-") as folder:
        if args.baseline:
            from against_checkout import export

            trees = {"baseline": export(args.baseline, Path(folder)), **trees}
        print(f"plain loop: {plain:,.0f} instructions a step")
        for name, tree in trees.items():
            loom = per_step(tree, "loom", args.short, args.long)
            print(
                f"loom ({name}): {loom:,.0f} instructions a step, extra {loom - plain:,.0f} "
                f"({(loom - plain) / plain:.2%}), loom / plain {loom / plain:.4f}"
            )


if __name__ == "__main__":
    main()
