"""Label smoothing (Szegedy et al., 2016); the method card is README.md beside this file."""

from loom.algorithms.label_smoothing.label_smoothing import LabelSmoothing

__all__ = ["LabelSmoothing"]
