"""Argument checks shared by the functions here and the plugins built on them."""

from __future__ import annotations

import math
from numbers import Real

__all__ = ["check_fraction"]


def check_fraction(value: object, name: str) -> float:
    """Returns ``value`` as a float if it lies in [0, 1]; raises naming ``name`` otherwise.

    Raises:
        TypeError: ``value`` is not a real number.
        ValueError: ``value`` is outside [0, 1] or NaN.

    Example:
        >>> check_fraction(0.1, "smoothing")
        0.1
    """
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name}={value!r} must be a number in [0, 1].")
    if math.isnan(value) or not 0 <= value <= 1:
        raise ValueError(f"{name}={value!r} must lie in [0, 1].")
    return float(value)
