"""``loom compare``: runs grouped by configuration, mean and spread over seeds, every
seed's value, paired differences between methods with 95% intervals, one plot."""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from loom.config.job_file import read_job_file
from loom.config.run_directory import RunDirectory
from loom.runs.paired import PairedDifference, paired_difference
from loom.runs.plots import plot_comparison, read_records
from loom.runs.status import RunState, RunStatus, read_status

__all__ = [
    "FoundRuns",
    "RunGroup",
    "RunResults",
    "compare_runs",
    "compare_seeds",
    "comparison_folder",
    "find_runs",
    "group_runs",
    "load_run",
    "paired_differences",
]

# (column, where the value is: summary["metrics"][key] or summary[key], digits, show spread)
_COLUMNS = (
    ("accuracy", ("metrics", "eval/accuracy"), 4, True),
    ("best acc", ("best_eval_accuracy",), 4, True),
    ("nll", ("metrics", "eval/nll"), 4, True),
    ("ece", ("metrics", "eval/ece"), 4, True),
    ("epochs", ("epochs",), 0, False),
    ("seconds", ("seconds",), 1, False),
)

# (column, where the value is, whether higher is better): shown seed by seed and
# compared in pairs by compare_seeds.
_SEED_METRICS = (
    ("accuracy", ("metrics", "eval/accuracy"), True),
    ("best acc", ("best_eval_accuracy",), True),
    ("nll", ("metrics", "eval/nll"), False),
    ("ece", ("metrics", "eval/ece"), False),
)


@dataclass
class RunResults:
    """What a finished run left: its summary, its metrics records and its job."""

    name: str
    summary: dict[str, Any]
    records: list[dict[str, Any]]
    config: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


@dataclass
class RunGroup:
    """Runs of one job that differ only in their seed."""

    name: str
    runs: list[RunResults]

    def values(self, location: tuple[str, ...]) -> list[float]:
        """The value at ``location`` in each run's summary that has one, in run order."""
        return [value for _, value in self._values(location)]

    def by_seed(self, location: tuple[str, ...]) -> dict[int, float]:
        """The value at ``location`` of each run, by the run's seed (``config["seed"]``).

        Runs without a seed or a value are left out; a seed run twice counts once (its
        first run).
        """
        found: dict[int, float] = {}
        for run, value in self._values(location):
            seed = run.config.get("seed")
            if isinstance(seed, int) and seed not in found:
                found[seed] = value
        return found

    def _values(self, location: tuple[str, ...]) -> list[tuple[RunResults, float]]:
        found = []
        for run in self.runs:
            value: Any = run.summary
            for key in location:
                value = value.get(key) if isinstance(value, dict) else None
            if isinstance(value, int | float):
                found.append((run, float(value)))
        return found


def load_run(run_dir: str | os.PathLike[str]) -> RunResults:
    """Reads ``summary.json``, ``metrics.jsonl`` and ``config.yaml`` of a run directory.

    Raises:
        FileNotFoundError: ``run_dir`` holds no ``summary.json`` (not a run, or
            one that has not finished).
    """
    files = RunDirectory(run_dir)
    if not files.summary.is_file():
        raise FileNotFoundError(
            f"{str(files.path)!r} is not a finished run: it has no {files.summary.name} "
            "(a run writes it when training ends)."
        )
    summary = json.loads(files.summary.read_text(encoding="utf-8"))
    config = read_job_file(files.config) if files.config.is_file() else {}
    records = read_records(files.metrics)
    return RunResults(files.path.name, summary, records, config or {}, files.path)


@dataclass
class FoundRuns:
    """The run directories :func:`find_runs` found: the finished runs, read, and the
    others with their state (running, interrupted, failed), which a comparison skips."""

    finished: list[RunResults]
    skipped: list[tuple[Path, RunStatus]]

    def skipped_lines(self) -> list[str]:
        """One line per skipped run: its path, its state and why, and how to resume it."""
        lines = []
        for path, status in self.skipped:
            resume = ""
            if status.checkpoint is not None and status.state is not RunState.RUNNING:
                resume = f"; resume with: loom train --resume {path}"
            lines.append(f"{path}: {status}{resume}")
        return lines


def find_runs(paths: Sequence[str | os.PathLike[str]]) -> FoundRuns:
    """The runs at ``paths``: run directories, or directories of runs (``--seeds``),
    the finished ones read and the others set aside with their state
    (:func:`~loom.runs.status.read_status`).

    Raises:
        FileNotFoundError: A path is neither a run directory nor holds any.
    """
    found = FoundRuns([], [])
    for path in map(Path, paths):
        status = read_status(path)
        if status is not None:
            runs = [(path, status)]
        elif path.is_dir():
            inside = ((child, read_status(child)) for child in sorted(path.iterdir()))
            runs = [(child, status) for child, status in inside if status is not None]
        else:
            runs = []
        if not runs:
            raise FileNotFoundError(
                f"{str(path)!r} is not a run directory and holds none (a run directory "
                "has the config.yaml and status.json that loom train writes)."
            )
        for run_dir, status in runs:
            if status.state is RunState.FINISHED:
                found.finished.append(load_run(run_dir))
            else:
                found.skipped.append((run_dir, status))
    return found


def group_runs(runs: Sequence[RunResults]) -> list[RunGroup]:
    """Runs whose jobs are equal but for the seed, together, in order of appearance.

    A group is named after the folder that holds its runs when they sit in one
    (``loom train --seeds`` makes one), else after its first run.
    """
    groups: dict[str, list[RunResults]] = {}
    for run in runs:
        job = {key: value for key, value in run.config.items() if key != "seed"}
        key = yaml.safe_dump(job, sort_keys=True) if job else f"unknown job {run.path}"
        groups.setdefault(key, []).append(run)
    named = []
    for members in groups.values():
        parents = {run.path.parent if run.path else None for run in members}
        name = members[0].name
        if len(members) > 1 and len(parents) == 1 and None not in parents:
            name = next(iter(parents)).name
        named.append(RunGroup(name, members))
    return named


def compare_runs(
    runs: Sequence[RunResults],
    plot_path: str | os.PathLike[str] | None = None,
    markdown: bool = False,
) -> str:
    """One row per group of runs: final and best accuracy, NLL and ECE as mean ± standard
    deviation over the group's seeds, and the mean epochs and seconds.

    Writes the groups' mean curves side by side to ``plot_path`` when given.

    Args:
        runs: The runs, grouped by :func:`group_runs`.
        plot_path: Where to draw the curves, or None.
        markdown: A Markdown table instead of aligned columns.
    """
    groups = group_runs(runs)
    header = ("run", "seeds", *(column for column, *_ in _COLUMNS))
    rows = [
        (
            group.name,
            str(len(group.runs)),
            *(
                _summarize(group.values(where), digits, spread)
                for _, where, digits, spread in _COLUMNS
            ),
        )
        for group in groups
    ]
    if plot_path is not None:
        plot_comparison({group.name: _mean_records(group) for group in groups}, plot_path)
    return _table(header, rows, markdown)


def paired_differences(groups: Sequence[RunGroup]) -> list[PairedDifference]:
    """Every two groups whose jobs differ only in their ``algorithms`` (and the seed),
    compared seed by seed on final and best accuracy, NLL and ECE
    (:func:`~loom.runs.paired.paired_difference`).

    Pairs come in order of appearance, the earlier group first (first - second). Only
    the seeds both groups ran count, so each difference is between two runs with the
    same initial weights and, unless a method draws random numbers of its own, the same
    data order; a pair with fewer than two shared seeds is left out.
    """
    families: dict[str, list[RunGroup]] = {}
    for group in groups:
        job = {k: v for k, v in group.runs[0].config.items() if k not in ("seed", "algorithms")}
        if job:
            families.setdefault(yaml.safe_dump(job, sort_keys=True), []).append(group)
    found = []
    for family in families.values():
        for index, first in enumerate(family):
            for second in family[index + 1 :]:
                for metric, where, higher_is_better in _SEED_METRICS:
                    pair = paired_difference(
                        metric,
                        (first.name, first.by_seed(where)),
                        (second.name, second.by_seed(where)),
                        higher_is_better,
                    )
                    if pair is not None:
                        found.append(pair)
    return found


def compare_seeds(runs: Sequence[RunResults], markdown: bool = False) -> str:
    """Every seed's final and best accuracy, NLL and ECE (a table each, a column per
    seed), then the :func:`paired_differences`: each shared seed's difference, their
    mean and 95% t-interval, and "A beats B" only where the interval excludes zero
    (lower beats for NLL and ECE), else "no ordering".

    Args:
        runs: The runs, grouped by :func:`group_runs`.
        markdown: Markdown tables under ``###`` titles instead of aligned columns.
    """
    groups = group_runs(runs)
    title = "### {}\n" if markdown else "{}:\n"
    blocks = []
    for metric, where, _ in _SEED_METRICS:
        values = {group.name: group.by_seed(where) for group in groups}
        seeds = sorted({seed for found in values.values() for seed in found})
        rows = [
            (name, *(_number(found[seed]) if seed in found else "-" for seed in seeds))
            for name, found in values.items()
            if found
        ]
        if rows:
            header = ("run", *(f"seed {seed}" for seed in seeds))
            blocks.append(title.format(f"{metric} by seed") + _table(header, rows, markdown))
    pairs = paired_differences(groups)
    if pairs:
        header = ("metric", "A", "B", "seeds", "A - B by seed", "mean", "95% interval", "verdict")
        rows = [
            (
                pair.metric,
                pair.first,
                pair.second,
                ",".join(map(str, pair.seeds)),
                " ".join(_number(difference, signed=True) for difference in pair.differences),
                _number(pair.mean, signed=True),
                f"[{_number(pair.low, signed=True)}, {_number(pair.high, signed=True)}]",
                pair.verdict,
            )
            for pair in pairs
        ]
        heading = "paired differences (for nll and ece, lower beats)"
        blocks.append(title.format(heading) + _table(header, rows, markdown))
    return "\n\n".join(blocks)


def comparison_folder(paths: Sequence[str | os.PathLike[str]]) -> Path:
    """Where a comparison of the runs at ``paths`` goes by default: beside them, in the
    deepest folder that holds them all.

    Examples:
        >>> comparison_folder(["runs/ls", "runs/ols"]).as_posix()
        'runs'
        >>> comparison_folder(["results/noise40"]).as_posix()  # a folder of seeds
        'results/noise40'
    """
    resolved = [Path(path) for path in paths]
    if len(resolved) == 1 and not RunDirectory(resolved[0]).summary.is_file():
        return resolved[0]
    parents = [path.parent for path in resolved]
    if len({path.is_absolute() for path in parents}) > 1:  # commonpath cannot mix the two
        parents = [path.absolute() for path in parents]
    return Path(os.path.commonpath(parents))


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool) -> str:
    if markdown:
        lines = [f"| {' | '.join(header)} |", f"|{'---|' * len(header)}"]
        lines += [f"| {' | '.join(row)} |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in [header, *rows]
    )


def _number(value: float, signed: bool = False) -> str:
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def _summarize(values: list[float], digits: int, spread: bool) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values)
    if len(values) == 1 or not spread:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _mean_records(group: RunGroup) -> list[dict[str, Any]]:
    """Each epoch's metrics averaged over the group's runs (a curve per group)."""
    by_epoch: dict[tuple[int, bool], list[dict[str, Any]]] = {}
    for run in group.runs:
        for record in run.records:
            by_epoch.setdefault((record["epoch"], "eval/accuracy" in record), []).append(record)
    merged = []
    for (epoch, _), records in sorted(by_epoch.items()):
        keys = set.intersection(*(set(record) for record in records))
        mean = {
            key: statistics.fmean(record[key] for record in records)
            for key in keys
            if key.startswith(("train/", "eval/"))
        }
        merged.append({"epoch": epoch, **mean})
    return merged
