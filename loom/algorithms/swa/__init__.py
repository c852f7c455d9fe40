"""Stochastic weight averaging (Izmailov et al., 2018); its method card is README.md here."""

from loom.algorithms.swa.swa import SWA

__all__ = ["SWA"]
