"""The maths of loom's methods as plain functions, usable in any training loop.

This package imports torch and nothing else of loom.
"""

from loom.functional.checks import check_fraction
from loom.functional.cross_entropy import cross_entropy, soft_cross_entropy
from loom.functional.label_smoothing import smooth_labels

__all__ = ["check_fraction", "cross_entropy", "smooth_labels", "soft_cross_entropy"]
