"""Argument checks shared by the models."""

from __future__ import annotations

__all__ = ["check_dropout", "check_positive_ints"]


def check_positive_ints(**arguments: int) -> None:
    """Raises ValueError naming the first argument that is not an int >= 1."""
    for name, value in arguments.items():
        if type(value) is not int or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive int.")


def check_dropout(dropout: float) -> None:
    if not isinstance(dropout, int | float) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout={dropout!r} must be a probability in [0, 1).")
