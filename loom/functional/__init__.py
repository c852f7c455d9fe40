"""The maths of loom's methods as plain functions, usable in any training loop.

This package imports torch and nothing else of loom.
"""

from loom.functional.checks import check_class_indices, check_fraction, check_positive
from loom.functional.collectives import all_reduce_max, all_reduce_sum, is_distributed
from loom.functional.cross_entropy import cross_entropy, soft_cross_entropy
from loom.functional.cutmix import Box, box_weight, cutmix, cutmix_box, sample_cutmix_box
from loom.functional.distillation import distillation_loss
from loom.functional.label_smoothing import smooth_labels
from loom.functional.mixup import mix, mix_targets
from loom.functional.online_label_smoothing import ClassIndices, OnlineLabelSmoothingLoss
from loom.functional.sam import sam_perturbation

__all__ = [
    "Box",
    "ClassIndices",
    "OnlineLabelSmoothingLoss",
    "all_reduce_max",
    "all_reduce_sum",
    "box_weight",
    "check_class_indices",
    "check_fraction",
    "check_positive",
    "cross_entropy",
    "cutmix",
    "cutmix_box",
    "distillation_loss",
    "is_distributed",
    "mix",
    "mix_targets",
    "sam_perturbation",
    "sample_cutmix_box",
    "smooth_labels",
    "soft_cross_entropy",
]
