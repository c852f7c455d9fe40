"""Learning-rate schedules a job file can name, in epochs or batches, with linear warm-up,
and torch's one-cycle policy."""

from loom.optim.schedules import LearningRateFactor, constant, cosine, multistep, onecycle, step

__all__ = ["LearningRateFactor", "constant", "cosine", "multistep", "onecycle", "step"]
