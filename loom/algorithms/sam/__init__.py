"""Sharpness-aware minimization (Foret et al., 2021); its method card is README.md here."""

from loom.algorithms.sam.sam import SAM

__all__ = ["SAM"]
