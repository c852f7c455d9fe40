"""A benchmark of this tree against the same benchmark of another commit, in one run.

Each of the two trees runs its own copy of a benchmark script (``trainer_overhead.py``
by default) in a fresh process that imports that tree's loom, alternately, round after
round: old, new, new, old, old, new, ... so that neither always runs first or on a
machine warmed by the other. Each process prints ratios against its own plain loop,
measured in the same process; this script collects every ``... / plain`` ratio line by
line and reports, per line, the median over rounds for each tree and their ratio. A
restructure that costs nothing gives a ratio of 1.000 within the A/A noise.

    python benchmarks/against_checkout.py --baseline 9a17b81
    python benchmarks/against_checkout.py --baseline 9a17b81 --script trainer_overhead_breakdown.py
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# "loom / plain : 1.042 (quartiles ...)" or "no events    : 305.1 us/step, / plain 1.034 (...)"
_RATIO = re.compile(r"^(?P<name>[^:]+?)\s*:.*?(?:/ plain\s*)?(?P<ratio>\d+\.\d{3}) \(quartiles")


def export(revision: str, destination: Path) -> Path:
    """The files of ``revision`` (no .git), as ``git archive`` writes them."""
    archive = subprocess.run(
        ["git", "archive", revision], cwd=ROOT, check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(destination, filter="data")
    return destination


def run_once(tree: Path, script: str, repeats: int) -> dict[str, float]:
    """One process of ``script`` in ``tree``, importing that tree's loom; its ratio lines."""
    environment = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(tree / "benchmarks" / script), "--repeats", str(repeats)],
        cwd=tree / "benchmarks",
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"{script} in {tree} failed:\n{result.stderr[-3000:]}")
    ratios = {}
    for line in result.stdout.splitlines():
        match = _RATIO.match(line)
        if match:
            ratios[match["name"].strip()] = float(match["ratio"])
    if not ratios:
        raise SystemExit(f"{script} in {tree} printed no ratio:\n{result.stdout}")
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline", required=True, help="the commit to compare with")
    parser.add_argument("--script", default="trainer_overhead.py")
    parser.add_argument("--rounds", type=int, default=6, help="processes per tree")
    parser.add_argument("--repeats", type=int, default=11, help="the script's own --repeats")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="loom-baseline-") as folder:
        trees = {"baseline": export(args.baseline, Path(folder)), "this tree": ROOT}
        results: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
        for round_number in range(args.rounds):
            order = list(trees) if round_number % 2 == 0 else list(trees)[::-1]
            for name in order:
                results[name].append(run_once(trees[name], args.script, args.repeats))
                print(f"round {round_number + 1} {name}: {results[name][-1]}", flush=True)
    print(f"\n{args.script}, {args.rounds} processes per tree, --repeats {args.repeats}")
    print(f"baseline {args.baseline} against this tree; median over processes")
    for line in results["baseline"][0]:
        old = statistics.median(run[line] for run in results["baseline"])
        new = statistics.median(run[line] for run in results["this tree"])
        print(
            f"{line:>14}: baseline {old:.3f}, this tree {new:.3f}, this / baseline {new / old:.3f}"
        )


if __name__ == "__main__":
    main()
