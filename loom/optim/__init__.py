"""Learning-rate schedules a job file can name, in epochs or batches, with linear warm-up."""

from loom.optim.schedules import LearningRateFactor, constant, cosine, multistep, step

__all__ = ["LearningRateFactor", "constant", "cosine", "multistep", "step"]
