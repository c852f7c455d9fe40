"""The plots of a run: learning curves, reliability diagram, plugins' matrices, comparisons.

Figures are drawn with matplotlib's object API (no pyplot), so plotting never
changes the backend or global state of the process that trains.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["plot_comparison", "plot_curves", "plot_matrix", "plot_reliability", "read_records"]


def read_records(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file, or ``[]`` if there is none."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def plot_curves(metrics_path: str | os.PathLike[str], output: str | os.PathLike[str]) -> None:
    """Training and evaluation loss, and evaluation accuracy, by epoch."""
    figure = _figure(1, 2)
    loss_axes, accuracy_axes = figure.axes
    _draw_run(loss_axes, accuracy_axes, read_records(metrics_path), label=None)
    _save(figure, output)


def plot_comparison(
    runs: Mapping[str, Sequence[Mapping[str, Any]]], output: str | os.PathLike[str]
) -> None:
    """The curves of several runs (name -> metrics records), side by side."""
    figure = _figure(1, 2)
    loss_axes, accuracy_axes = figure.axes
    for index, (name, records) in enumerate(runs.items()):
        _draw_run(loss_axes, accuracy_axes, records, label=name, color=f"C{index % 10}")
    loss_axes.legend(fontsize="small")
    accuracy_axes.legend(fontsize="small")
    _save(figure, output)


def plot_reliability(
    reliability: Mapping[str, Sequence[float]], output: str | os.PathLike[str]
) -> None:
    """Accuracy against confidence per bin (``State.reliability``); the diagonal is calibrated."""
    figure = _figure(1, 1)
    (axes,) = figure.axes
    bins = len(reliability["count"])
    centers = [(index + 0.5) / bins for index in range(bins)]
    filled = [index for index, count in enumerate(reliability["count"]) if count]
    axes.bar(
        [centers[i] for i in filled],
        [reliability["accuracy"][i] for i in filled],
        width=1 / bins,
        edgecolor="black",
        label="accuracy",
    )
    axes.plot(
        [centers[i] for i in filled],
        [reliability["confidence"][i] for i in filled],
        "o",
        color="tab:red",
        label="mean confidence",
    )
    axes.plot([0, 1], [0, 1], "--", color="gray", label="calibrated")
    axes.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
    axes.set_title("reliability (last evaluation)")
    axes.legend(fontsize="small", loc="upper left")
    _save(figure, output)


def plot_matrix(
    values: torch.Tensor,
    title: str,
    axes_labels: Sequence[str],
    classes: Sequence[str] | None,
    output: str | os.PathLike[str],
) -> None:
    """A 2-D tensor as a heatmap, e.g. a plugin's :class:`~loom.trainer.Artifact`.

    Rows go down and columns across, labelled ``axes_labels`` (row first); a dimension
    as long as ``classes`` gets the class names as ticks (up to 30 of them), and a
    matrix of at most 12 x 12 prints each value in its cell.
    """
    matrix = values.detach().float().cpu()
    rows, columns = matrix.shape
    size = min(12.0, 3.0 + 0.45 * max(rows, columns))
    figure = _figure(1, 1, size=(size + 1.5, size))
    (axes,) = figure.axes
    image = axes.imshow(matrix.numpy(), cmap="viridis", vmin=min(0.0, matrix.min().item()))
    figure.colorbar(image, ax=axes)
    for count, set_ticks, rotation in ((columns, axes.set_xticks, 90), (rows, axes.set_yticks, 0)):
        if count > 30:  # matplotlib's own sparse ticks; they are whole numbers at this size
            continue
        names = classes if classes is not None and count == len(classes) else range(count)
        set_ticks(range(count), [str(name) for name in names], rotation=rotation)
    if rows <= 12 and columns <= 12:
        for row in range(rows):
            for column in range(columns):
                value = matrix[row, column].item()
                color = "black" if value > 0.5 * matrix.max().item() else "white"
                axes.text(
                    column, row, f"{value:.2f}", ha="center", va="center", fontsize=7, color=color
                )
    axes.set(ylabel=axes_labels[0], xlabel=axes_labels[1])
    axes.set_title(title)
    _save(figure, output)


def _draw_run(
    loss_axes: Any,
    accuracy_axes: Any,
    records: Sequence[Mapping[str, Any]],
    label: str | None,
    color: str | None = None,
) -> None:
    """One run's curves: training loss solid, evaluation loss dashed, in one color."""
    train = [(r["epoch"], r["train/loss"]) for r in records if "train/loss" in r]
    evals = [r for r in records if "eval/accuracy" in r]
    prefix = f"{label}: " if label else ""
    if train:
        loss_axes.plot(*zip(*train, strict=True), color=color, label=f"{prefix}train")
    if evals:
        epochs = [r["epoch"] for r in evals]
        eval_losses = [r["eval/loss"] for r in evals]
        loss_axes.plot(epochs, eval_losses, "--", color=color, label=f"{prefix}eval")
        accuracies = [r["eval/accuracy"] for r in evals]
        accuracy_axes.plot(epochs, accuracies, marker=".", color=color, label=label)
    loss_axes.set(xlabel="epoch", ylabel="loss", title="loss")
    accuracy_axes.set(xlabel="epoch", ylabel="accuracy", title="eval accuracy")
    if label is None and train:
        loss_axes.legend(fontsize="small")


def _figure(rows: int, columns: int, size: tuple[float, float] | None = None) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("plots need matplotlib: python3 -m pip install matplotlib") from error
    figure = Figure(figsize=size or (5.5 * columns, 4.0 * rows), layout="constrained")
    figure.subplots(rows, columns, squeeze=False)
    return figure


def _save(figure: Any, output: str | os.PathLike[str]) -> None:
    figure.savefig(output, dpi=110)
