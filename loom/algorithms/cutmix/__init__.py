"""CutMix: a box of each image replaced by the same box of another, the labels mixed by area."""

from loom.algorithms.cutmix.cutmix import CutMix

__all__ = ["CutMix"]
