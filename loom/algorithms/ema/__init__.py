"""An exponential moving average of the weights; the method card is README.md beside this file."""

from loom.algorithms.ema.ema import EMA

__all__ = ["EMA"]
