"""Online label smoothing (Zhang et al., 2021); the method card is README.md beside this file."""

from loom.algorithms.online_label_smoothing.online_label_smoothing import OnlineLabelSmoothing

__all__ = ["OnlineLabelSmoothing"]
