"""The plots of a run."""

import pytest
import torch

from loom.runs.plots import plot_matrix, plot_reliability


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
