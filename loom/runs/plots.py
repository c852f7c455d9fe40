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

__all__ = [
    "curves_figure",
    "matrix_figure",
    "plot_comparison",
    "plot_curves",
    "plot_matrix",
    "plot_reliability",
    "read_records",
    "reliability_figure",
]


def read_records(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file, or ``[]`` if there is none."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def plot_curves(
    metrics_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    title: str | None = None,
) -> None:
    """Training and evaluation loss, and evaluation accuracy, by epoch, under ``title``
    (the run's name)."""
    _save(curves_figure(read_records(metrics_path), title), output)


def curves_figure(records: Sequence[Mapping[str, Any]], title: str | None = None) -> Any:
    """The figure :func:`plot_curves` draws, from a run's metrics records."""
    figure = _figure(1, 2)
    loss_axes, accuracy_axes = figure.axes
    _draw_run(loss_axes, accuracy_axes, records, label=None)
    if title:
        figure.suptitle(title)
    return figure


def plot_comparison(
    runs: Mapping[str, Sequence[Mapping[str, Any]]], output: str | os.PathLike[str]
) -> None:
    """The curves of several runs (name -> metrics records), side by side."""
    figure = _figure(1, 2)
    loss_axes, accuracy_axes = figure.axes
    for index, (name, records) in enumerate(runs.items()):
        _draw_run(loss_axes, accuracy_axes, records, label=name, color=f"C{index % 10}")
    _legend(loss_axes)
    _legend(accuracy_axes)
    _save(figure, output)


def plot_reliability(
    reliability: Mapping[str, Sequence[float]],
    output: str | os.PathLike[str],
    ece: float | None = None,
    title: str | None = None,
) -> None:
    """Accuracy against confidence per bin (``State.reliability``), over the count of
    predictions in each bin; the diagonal is calibrated. ``ece`` (the evaluation's
    ``eval/ece``) and ``title`` (the run's name) head it."""
    _save(reliability_figure(reliability, ece, title), output)


def reliability_figure(
    reliability: Mapping[str, Sequence[float]],
    ece: float | None = None,
    title: str | None = None,
) -> Any:
    """The figure :func:`plot_reliability` draws: the diagram above, the counts below.

    The counts share the confidence axis on a log scale: most predictions of a good
    model sit in the top bin, and a bin of three is what makes its bar mean little.
    """
    figure = _figure(2, 1, size=(5.5, 5.5), height_ratios=(3, 1), sharex=True)
    axes, count_axes = figure.axes
    counts = reliability["count"]
    bins = len(counts)
    centers = [(index + 0.5) / bins for index in range(bins)]
    filled = [index for index, count in enumerate(counts) if count]
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
    axes.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
    total = int(sum(counts))
    heading = f"reliability of the last evaluation: {total} predictions"
    if ece is not None:
        heading += f", ECE {ece:.4f}"
    axes.set_title(heading if not title else f"{title}\n{heading}")
    _legend(axes, loc="upper left")
    count_axes.bar(
        [centers[i] for i in filled],
        [counts[i] for i in filled],
        width=1 / bins,
        color="tab:gray",
        edgecolor="black",
    )
    for index in filled:
        count_axes.annotate(
            f"{int(counts[index])}",
            (centers[index], counts[index]),
            ha="center",
            va="bottom",
            fontsize=7,
        )
    count_axes.set_yscale("log")
    count_axes.set(xlabel="confidence", ylabel="predictions")
    if filled:  # headroom above the tallest bar for its count
        count_axes.set_ylim(0.5, max(counts) * 4)
    return figure


def plot_matrix(
    values: torch.Tensor,
    title: str,
    axes_labels: Sequence[str],
    classes: Sequence[str] | None,
    output: str | os.PathLike[str],
) -> None:
    """A 2-D tensor as a heatmap, e.g. a plugin's :class:`~loom.trainer.Artifact`
    (see :func:`matrix_figure`)."""
    _save(matrix_figure(values, title, axes_labels, classes), output)


def matrix_figure(
    values: torch.Tensor,
    title: str,
    axes_labels: Sequence[str],
    classes: Sequence[str] | None = None,
) -> Any:
    """The figure :func:`plot_matrix` draws.

    Rows go down and columns across, labelled ``axes_labels`` (row first); a dimension
    as long as ``classes`` gets the class names as ticks (up to 30 of them), and a
    matrix of at most 12 x 12 prints each value in its cell. A matrix of values >= 0
    that span more than two decades, as a soft-label matrix does (0.99 on the
    diagonal, 0.001 beside it), gets a log colour scale, so the small values tell
    apart; zeros are then grey.
    """
    from matplotlib.colors import LogNorm, Normalize

    matrix = values.detach().float().cpu()
    rows, columns = matrix.shape
    size = min(12.0, 3.0 + 0.45 * max(rows, columns))
    figure = _figure(1, 1, size=(size + 1.5, size))
    (axes,) = figure.axes
    largest = matrix.max().item()
    positive = matrix[matrix > 0]
    smallest = positive.min().item() if positive.numel() else 0.0
    logarithmic = matrix.min().item() >= 0 and smallest > 0 and largest / smallest > 100
    if logarithmic:
        norm: Any = LogNorm(vmin=max(smallest, largest * 1e-6), vmax=largest)
        colours = _colour_map("viridis", zeros="lightgrey")
        shown = matrix.masked_fill(matrix <= 0, float("nan"))  # log 0: the map's grey
    else:
        norm, colours, shown = Normalize(vmin=min(0.0, matrix.min().item())), "viridis", matrix
    image = axes.imshow(shown.numpy(), cmap=colours, norm=norm)
    colorbar = figure.colorbar(image, ax=axes)
    if logarithmic:
        colorbar.set_label("log scale")
    for count, set_ticks, rotation in ((columns, axes.set_xticks, 90), (rows, axes.set_yticks, 0)):
        if count > 30:  # matplotlib's own sparse ticks; they are whole numbers at this size
            continue
        names = classes if classes is not None and count == len(classes) else range(count)
        set_ticks(range(count), [str(name) for name in names], rotation=rotation)
    if rows <= 12 and columns <= 12:
        for row in range(rows):
            for column in range(columns):
                value = matrix[row, column].item()
                bright = value > 0 and norm(value) > 0.5
                axes.text(
                    column,
                    row,
                    f"{value:.2f}" if abs(value) >= 0.01 or value == 0 else f"{value:.0e}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="black" if bright else "white",
                )
    axes.set(ylabel=axes_labels[0], xlabel=axes_labels[1])
    axes.set_title(title)
    return figure


def _draw_run(
    loss_axes: Any,
    accuracy_axes: Any,
    records: Sequence[Mapping[str, Any]],
    label: str | None,
    color: str | None = None,
) -> None:
    """One run's curves: training loss solid, evaluation loss dashed, in one color."""
    train = [(r["epoch"], r["train/loss"]) for r in records if "train/loss" in r]
    eval_losses = [(r["epoch"], r["eval/loss"]) for r in records if "eval/loss" in r]
    accuracies = [(r["epoch"], r["eval/accuracy"]) for r in records if "eval/accuracy" in r]
    prefix = f"{label}: " if label else ""
    if train:
        loss_axes.plot(*zip(*train, strict=True), color=color, label=f"{prefix}train")
    if eval_losses:
        loss_axes.plot(*zip(*eval_losses, strict=True), "--", color=color, label=f"{prefix}eval")
    if accuracies:
        accuracy_axes.plot(*zip(*accuracies, strict=True), marker=".", color=color, label=label)
    loss_axes.set(xlabel="epoch", ylabel="loss")
    # A smoothed or mixed target's loss cannot reach zero: say which targets each is against.
    loss_axes.set_title(
        "loss\ntrain: against the targets trained on (as the run's methods set them)\n"
        "eval: against the labels",
        fontsize="small",
    )
    accuracy_axes.set(xlabel="epoch", ylabel="accuracy", title="eval accuracy")
    if label is None and train:
        _legend(loss_axes)


def _figure(rows: int, columns: int, size: tuple[float, float] | None = None, **grid: Any) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("plots need matplotlib: python3 -m pip install matplotlib") from error
    figure = Figure(figsize=size or (5.5 * columns, 4.0 * rows), layout="constrained")
    height_ratios = grid.pop("height_ratios", None)
    figure.subplots(
        rows, columns, squeeze=False, gridspec_kw={"height_ratios": height_ratios}, **grid
    )
    return figure


def _colour_map(name: str, zeros: str) -> Any:
    """Matplotlib's map ``name``, drawing masked values (a log scale's zeros) in ``zeros``."""
    from matplotlib import colormaps

    return colormaps[name].with_extremes(bad=zeros)


def _save(figure: Any, output: str | os.PathLike[str]) -> None:
    figure.savefig(output, dpi=110)


def _legend(axes: Any, **options: Any) -> None:
    """The axes' legend, if anything on them has a label: a run without evaluation draws
    no accuracy, and matplotlib warns of an empty legend."""
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize="small", **options)
