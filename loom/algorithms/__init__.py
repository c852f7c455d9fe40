"""Training methods as plugins, one folder each: the class and its method card.

The folder's name is the name a YAML job gives the algorithm.
"""

from loom.algorithms.channels_last import ChannelsLast
from loom.algorithms.cutmix import CutMix
from loom.algorithms.distillation import Distillation
from loom.algorithms.ema import EMA
from loom.algorithms.label_smoothing import LabelSmoothing
from loom.algorithms.mixup import MixUp
from loom.algorithms.mixup_or_cutmix import MixUpOrCutMix
from loom.algorithms.online_label_smoothing import OnlineLabelSmoothing
from loom.algorithms.sam import SAM
from loom.algorithms.stochastic_depth import StochasticDepth
from loom.algorithms.swa import SWA

__all__ = [
    "EMA",
    "SAM",
    "SWA",
    "ChannelsLast",
    "CutMix",
    "Distillation",
    "LabelSmoothing",
    "MixUp",
    "MixUpOrCutMix",
    "OnlineLabelSmoothing",
    "StochasticDepth",
]
