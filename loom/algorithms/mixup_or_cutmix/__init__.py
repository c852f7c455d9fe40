"""MixUpOrCutMix: MixUp or CutMix, chosen per batch."""

from loom.algorithms.mixup_or_cutmix.mixup_or_cutmix import MixUpOrCutMix

__all__ = ["MixUpOrCutMix"]
