"""Knowledge distillation (Hinton et al., 2015); the method card is README.md beside this file."""

from loom.algorithms.distillation.distillation import Distillation, weights_sha256

__all__ = ["Distillation", "weights_sha256"]
