"""Learning-rate schedules a job file can name, in epochs or batches, with linear warm-up,
torch's one-cycle policy, and torch's reduction on a plateau of an evaluation metric."""

from loom.optim.schedules import (
    LearningRateFactor,
    PlateauSchedule,
    constant,
    cosine,
    multistep,
    onecycle,
    plateau,
    step,
)

__all__ = [
    "LearningRateFactor",
    "PlateauSchedule",
    "constant",
    "cosine",
    "multistep",
    "onecycle",
    "plateau",
    "step",
]
