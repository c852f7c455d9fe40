"""Stochastic depth (Huang et al., 2016); the method card is README.md beside this file."""

from loom.algorithms.stochastic_depth.stochastic_depth import StochasticDepth

__all__ = ["StochasticDepth"]
