"""MixUp: train on convex combinations of pairs of examples and of their labels."""

from loom.algorithms.mixup.mixup import MixUp

__all__ = ["MixUp"]
