"""The plots of a run."""

import pytest
import torch
from matplotlib.colors import to_rgba

from loom.runs.plots import (
    curves_figure,
    matrix_figure,
    plot_comparison,
    plot_matrix,
    plot_reliability,
    reliability_figure,
)


@pytest.mark.parametrize("num_classes", [3, 40])
def test_matrix_and_reliability_plots(tmp_path, num_classes):
    matrix = torch.full((num_classes, num_classes), 0.1 / (num_classes - 1))
    matrix.fill_diagonal_(0.9)
    classes = [f"c{i}" for i in range(num_classes)]
    plot_matrix(matrix, "soft labels", ("target class", "class"), classes, tmp_path / "soft.png")
    assert (tmp_path / "soft.png").stat().st_size > 0
    bins = {"count": [0.0, 2.0, 1.0], "confidence": [0.0, 0.5, 0.9], "accuracy": [0.0, 0.5, 1.0]}
    plot_reliability(bins, tmp_path / "reliability.png")
    assert (tmp_path / "reliability.png").stat().st_size > 0


def rgba(image, value):
    return image.cmap(image.norm(value))


def test_the_soft_label_matrix_tells_small_off_diagonal_values_apart():
    """An easy task's soft labels: 0.99 on the diagonal, 1e-4 to 1e-3 beside it."""
    matrix = torch.full((4, 4), 1e-4)
    matrix[0, 1], matrix[2, 3] = 1e-3, 0.0  # a confusion, and a class never seen there
    matrix.fill_diagonal_(0.99)
    (image,) = matrix_figure(matrix, "soft labels", ("target class", "class")).axes[0].images
    low, high, diagonal = rgba(image, 1e-4), rgba(image, 1e-3), rgba(image, 0.99)
    assert max(abs(a - b) for a, b in zip(low, high, strict=True)) > 0.15
    assert max(abs(a - b) for a, b in zip(high, diagonal, strict=True)) > 0.15
    assert image.cmap.get_bad() == pytest.approx(to_rgba("lightgrey"))  # the zero
    assert image.get_array().mask[2, 3]
    signed = matrix_figure(torch.tensor([[-1.0, 2.0], [0.5, 0.0]]), "t", ("a", "b"))
    (image,) = signed.axes[0].images
    assert type(image.norm).__name__ == "Normalize"  # no log scale below zero


def test_the_reliability_diagram_shows_each_bins_count_and_the_ece():
    bins = {"count": [0.0, 3.0, 350.0], "confidence": [0, 0.5, 0.9], "accuracy": [0, 1 / 3, 1.0]}
    figure = reliability_figure(bins, ece=0.0123, title="digits-1")
    diagram, counts = figure.axes
    assert [bar.get_height() for bar in counts.patches] == [3.0, 350.0]
    assert [text.get_text() for text in counts.texts] == ["3", "350"]
    assert counts.get_yscale() == "log"
    assert diagram.get_title() == (
        "digits-1\nreliability of the last evaluation: 353 predictions, ECE 0.0123"
    )


def test_the_curves_carry_the_runs_name_and_say_what_each_loss_is_against():
    records = [
        {"epoch": 1, "train/loss": 2.0},
        {"epoch": 1, "eval/loss": 1.5},  # a regression: no accuracy
        {"epoch": 2, "train/loss": 1.0},
        {"epoch": 2, "eval/loss": 0.5},
    ]
    figure = curves_figure(records, title="regression-20261201")
    loss_axes, accuracy_axes = figure.axes
    assert figure.get_suptitle() == "regression-20261201"
    assert "train: against the targets trained on" in loss_axes.get_title()
    assert [list(line.get_ydata()) for line in loss_axes.lines] == [[2.0, 1.0], [1.5, 0.5]]
    assert len(accuracy_axes.lines) == 0


def test_runs_without_evaluation_compare_without_an_empty_legend(tmp_path):
    # Nothing labelled on the accuracy axes: matplotlib would warn (an error here).
    records = [{"epoch": epoch, "train/loss": 1.0 / epoch} for epoch in (1, 2)]
    plot_comparison({"a": records, "b": records}, tmp_path / "compare.png")
    assert (tmp_path / "compare.png").stat().st_size > 0
