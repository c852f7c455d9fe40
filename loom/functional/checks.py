"""Argument checks shared by the functions here and the plugins built on them."""

from __future__ import annotations

import math
from numbers import Real

import torch

__all__ = [
    "check_choice",
    "check_class_indices",
    "check_fraction",
    "check_positive",
    "every_index_is_a_class",
]


def check_fraction(value: object, name: str) -> float:
    """Returns ``value`` as a float if it lies in [0, 1]; raises naming ``name`` otherwise.

    Raises:
        TypeError: ``value`` is not a real number.
        ValueError: ``value`` is outside [0, 1] or NaN.

    Examples:
        >>> check_fraction(0.1, "smoothing")
        0.1
    """
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name}={value!r} must be a number in [0, 1].")
    if math.isnan(value) or not 0 <= value <= 1:
        raise ValueError(f"{name}={value!r} must lie in [0, 1].")
    return float(value)


def check_positive(value: object, name: str) -> float:
    """Returns ``value`` as a float if it is a positive, finite number; raises naming
    ``name`` otherwise.

    Raises:
        TypeError: ``value`` is not a real number.
        ValueError: ``value`` is not positive and finite.

    Examples:
        >>> check_positive(4, "temperature")
        4.0
        >>> check_positive(0, "temperature")
        Traceback (most recent call last):
        ValueError: temperature=0 must be a positive, finite number.
    """
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name}={value!r} must be a positive, finite number.")
    if not 0 < value < math.inf:  # NaN fails both comparisons
        raise ValueError(f"{name}={value!r} must be a positive, finite number.")
    return float(value)


def check_choice(value: object, name: str, choices: tuple[str, ...]) -> str:
    """Returns ``value`` if it is one of ``choices``; raises naming ``name`` otherwise.

    Examples:
        >>> check_choice("sum", "reduction", ("mean", "sum", "none"))
        'sum'
        >>> check_choice("avg", "reduction", ("mean", "sum", "none"))
        Traceback (most recent call last):
        ValueError: reduction='avg' must be one of 'mean', 'sum', 'none'.
    """
    if value not in choices:
        listed = ", ".join(repr(choice) for choice in choices)
        raise ValueError(f"{name}={value!r} must be one of {listed}.")
    return value


def check_class_indices(
    target: torch.Tensor, kept: torch.Tensor, num_classes: int, ignore_index: int
) -> None:
    """Checks that every kept index lies in [0, num_classes): the one range check of
    class indices that every loss in loom uses.

    Eager on the CPU. On other devices the check is an asynchronous device
    assertion, so that no call waits for the device; a failure surfaces at the
    device's next synchronisation.

    Args:
        target: Class indices.
        kept: Where ``target`` is not ``ignore_index``.
        num_classes: The number of classes (the logits' class dimension).
        ignore_index: The index that marks ignored positions, for the message.

    Raises:
        ValueError: On the CPU, an index out of range, naming it and its position.

    Examples:
        >>> labels = torch.tensor([0, 9, -100])
        >>> check_class_indices(labels, labels != -100, num_classes=3, ignore_index=-100)
        Traceback (most recent call last):
        ValueError: target holds class index 9 at position (1,); expected 0 <= index < 3 (the logits' class dimension) or ignore_index=-100.
    """  # noqa: E501
    out_of_range = kept & ((target < 0) | (target >= num_classes))
    if target.device.type == "cpu":
        if out_of_range.any():
            position = tuple(out_of_range.nonzero()[0].tolist())
            raise ValueError(
                f"target holds class index {target[position].item()} at position {position}; "
                f"expected 0 <= index < {num_classes} (the logits' class dimension) "
                f"or ignore_index={ignore_index}."
            )
    else:
        torch._assert_async(~out_of_range.any())


def every_index_is_a_class(target: torch.Tensor, num_classes: int, ignore_index: int) -> bool:
    """On the CPU, whether every index lies in [0, C) and none equals ``ignore_index``.

    One min/max pass; the common case it recognises needs neither a range check nor
    the handling of ignored positions. Always False off the CPU, where reading the
    answer would make the call wait for the device.
    """
    if target.device.type != "cpu" or target.numel() == 0:
        return False
    lowest, highest = (bound.item() for bound in torch.aminmax(target))
    return lowest >= 0 and highest < num_classes and not lowest <= ignore_index <= highest
