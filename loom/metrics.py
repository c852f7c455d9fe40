"""The evaluation metrics a job can add by name (its ``eval_metrics`` section), each a
torchmetrics classification ``Metric`` (install ``loom[metrics]``), which syncs across
ranks under torchrun. In Python, pass any torchmetrics ``Metric`` (a regression's too)
to ``Trainer(eval_metrics=...)``.

Examples:
    >>> import torch
    >>> metric = f1(num_classes=3)
    >>> metric.update(torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]]), torch.tensor([0, 2]))
    >>> round(float(metric.compute()), 4)  # classes 0, 1, 2: F1 1, 0, 0
    0.3333
"""

from __future__ import annotations

import importlib
from typing import Any

from loom.functional.cross_entropy import IGNORE_INDEX

__all__ = [
    "auroc",
    "average_precision",
    "cohen_kappa",
    "f1",
    "matthews",
    "precision",
    "recall",
]


def f1(num_classes: int, average: str = "macro", top_k: int = 1) -> Any:
    """The F1 score over the classes (``MulticlassF1Score``): ``average`` ``"macro"``
    (each class alike), ``"weighted"`` (by its support) or ``"micro"`` (over the samples).
    Targets equal to the ignore index (-100) are left out, as in loom's own metrics."""
    return _classification("MulticlassF1Score", num_classes, average=average, top_k=top_k)


def precision(num_classes: int, average: str = "macro", top_k: int = 1) -> Any:
    """Precision over the classes (``MulticlassPrecision``), averaged as ``f1`` is."""
    return _classification("MulticlassPrecision", num_classes, average=average, top_k=top_k)


def recall(num_classes: int, average: str = "macro", top_k: int = 1) -> Any:
    """Recall over the classes (``MulticlassRecall``), averaged as ``f1`` is; its
    macro average is the balanced accuracy."""
    return _classification("MulticlassRecall", num_classes, average=average, top_k=top_k)


def auroc(num_classes: int, average: str = "macro") -> Any:
    """The area under each class's one-vs-rest ROC curve (``MulticlassAUROC``),
    averaged (``"macro"`` or ``"weighted"``); from the softmax of the outputs."""
    return _classification("MulticlassAUROC", num_classes, average=average)


def average_precision(num_classes: int, average: str = "macro") -> Any:
    """The area under each class's precision-recall curve
    (``MulticlassAveragePrecision``), averaged as ``auroc`` is."""
    return _classification("MulticlassAveragePrecision", num_classes, average=average)


def matthews(num_classes: int) -> Any:
    """The Matthews correlation coefficient (``MulticlassMatthewsCorrCoef``): -1 to 1,
    0 for chance, fair to unbalanced classes."""
    return _classification("MulticlassMatthewsCorrCoef", num_classes)


def cohen_kappa(num_classes: int) -> Any:
    """Cohen's kappa (``MulticlassCohenKappa``): agreement with the targets beyond chance."""
    return _classification("MulticlassCohenKappa", num_classes)


def _classification(class_name: str, num_classes: int, **arguments: Any) -> Any:
    if type(num_classes) is not int or num_classes < 2:
        raise ValueError(f"num_classes={num_classes!r} must be an int >= 2.")
    averages = _AVERAGES.get(class_name, ())
    if "average" in arguments and arguments["average"] not in averages:
        # torchmetrics takes "none" too, a value a class: not one number to record.
        raise ValueError(
            f"average={arguments['average']!r} must be one of {', '.join(map(repr, averages))}."
        )
    return _metric(
        "classification", class_name, num_classes, ignore_index=IGNORE_INDEX, **arguments
    )


_AVERAGES = {
    "MulticlassF1Score": ("macro", "weighted", "micro"),
    "MulticlassPrecision": ("macro", "weighted", "micro"),
    "MulticlassRecall": ("macro", "weighted", "micro"),
    "MulticlassAUROC": ("macro", "weighted"),
    "MulticlassAveragePrecision": ("macro", "weighted"),
}
"""Each metric's averages that make one number."""


def _metric(module: str, class_name: str, *arguments: Any, **options: Any) -> Any:
    try:
        found = importlib.import_module(f"torchmetrics.{module}")
    except ImportError:
        raise ImportError(
            "loom's eval_metrics need torchmetrics: python3 -m pip install 'loom[metrics]' "
            "(or python3 -m pip install torchmetrics)."
        ) from None
    return getattr(found, class_name)(*arguments, **options)
