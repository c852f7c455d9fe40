"""The maths of loom's methods as plain functions, usable in any training loop.

This package imports torch and nothing else of loom.
"""

from loom.functional.checks import check_class_indices, check_fraction
from loom.functional.cross_entropy import cross_entropy, soft_cross_entropy
from loom.functional.label_smoothing import smooth_labels
from loom.functional.online_label_smoothing import OnlineLabelSmoothingLoss

__all__ = [
    "OnlineLabelSmoothingLoss",
    "check_class_indices",
    "check_fraction",
    "cross_entropy",
    "smooth_labels",
    "soft_cross_entropy",
]
