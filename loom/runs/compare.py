"""``loom compare``: the results of several runs in one table and one plot."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loom.runs.plots import plot_comparison, read_records

__all__ = ["RunResults", "compare_runs", "load_run"]


@dataclass
class RunResults:
    """What a finished run left: its summary and its metrics records."""

    name: str
    summary: dict[str, Any]
    records: list[dict[str, Any]]


def load_run(run_dir: str | os.PathLike[str]) -> RunResults:
    """Reads ``summary.json`` and ``metrics.jsonl`` of a run directory.

    Raises:
        FileNotFoundError: ``run_dir`` holds no ``summary.json`` (not a run, or
            one that has not finished).
    """
    run_dir = Path(run_dir)
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        raise FileNotFoundError(
            f"{str(run_dir)!r} is not a finished run: it has no summary.json "
            "(a run writes it when training ends)."
        )
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    return RunResults(run_dir.name, summary, read_records(run_dir / "metrics.jsonl"))


def compare_runs(
    runs: Sequence[RunResults], plot_path: str | os.PathLike[str] | None = None
) -> str:
    """One row per run: final and best accuracy, NLL, ECE and training time.

    Writes the runs' curves side by side to ``plot_path`` when given.
    """
    header = ("run", "accuracy", "best acc", "nll", "ece", "epochs", "seconds")
    rows = []
    for run in runs:
        metrics = run.summary.get("metrics", {})
        rows.append(
            (
                run.name,
                _number(metrics.get("eval/accuracy")),
                _number(run.summary.get("best_eval_accuracy")),
                _number(metrics.get("eval/nll")),
                _number(metrics.get("eval/ece")),
                str(run.summary.get("epochs", "-")),
                _number(run.summary.get("seconds"), digits=1),
            )
        )
    if plot_path is not None:
        plot_comparison({run.name: run.records for run in runs}, plot_path)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in [header, *rows]
    ]
    return "\n".join(lines)


def _number(value: Any, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
