"""Paired comparisons over seeds: two methods' per-seed differences and a 95% t-interval.

Two runs with the same seed start from the same weights and see the data in the same
order, so the difference of their results measures the method with much of the seed's
own variation cancelled; the interval says whether that difference is told apart from 0.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["PairedDifference", "paired_difference", "t_interval"]

# Student's t quantile t(0.975, df) for df = 1..30 (scipy.stats.t.ppf, 6 decimals): the
# half-width of a two-sided 95% interval is this times the standard error of the mean.
_T975 = (
    12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004,
    2.262157, 2.228139, 2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905,
    2.109816, 2.100922, 2.093024, 2.085963, 2.079614, 2.073873, 2.068658, 2.063899,
    2.059539, 2.055529, 2.051831, 2.048407, 2.045230, 2.042272,
)  # fmt: skip


@dataclass(frozen=True)
class PairedDifference:
    """``first - second`` of one metric on each seed both have, with the mean difference
    and the ends of its 95% t-interval (:func:`t_interval`)."""

    metric: str
    first: str
    second: str
    seeds: tuple[int, ...]
    differences: tuple[float, ...]
    mean: float
    low: float
    high: float
    higher_is_better: bool = True

    @property
    def verdict(self) -> str:
        """``"<first> beats <second>"`` (or the other way) where the interval excludes
        zero; ``"no ordering"`` where it holds zero."""
        if self.low <= 0.0 <= self.high:
            return "no ordering"
        first_wins = (self.low > 0.0) == self.higher_is_better
        winner, loser = (self.first, self.second) if first_wins else (self.second, self.first)
        return f"{winner} beats {loser}"


def t_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """The mean of ``values`` and the two ends of its two-sided 95% Student t-interval,
    ``mean ± t(0.975, n - 1) * stdev / sqrt(n)``.

    Raises:
        ValueError: Fewer than two values (no spread to measure).

    Examples:
        >>> [round(end, 4) for end in t_interval([1.0, 2.0, 3.0])]  # 2 ± 4.302653 / sqrt(3)
        [2.0, -0.4841, 4.4841]
    """
    if len(values) < 2:
        raise ValueError(f"a t-interval needs at least two values, got {list(values)!r}.")
    mean = statistics.fmean(values)
    half = _t975(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def paired_difference(
    metric: str,
    first: tuple[str, Mapping[int, float]],
    second: tuple[str, Mapping[int, float]],
    higher_is_better: bool = True,
) -> PairedDifference | None:
    """``first - second`` on the seeds both have: ``(name, {seed: value})`` each.

    Returns:
        The differences, their mean and 95% interval; None when fewer than two seeds
        are shared (no interval can be drawn).

    Examples:
        >>> pair = paired_difference(
        ...     "accuracy", ("ols", {0: 0.72, 1: 0.71, 2: 0.70}), ("hard", {0: 0.69, 1: 0.69})
        ... )
        >>> pair.seeds, [round(d, 2) for d in pair.differences], pair.verdict
        ((0, 1), [0.03, 0.02], 'no ordering')
    """
    (first_name, first_values), (second_name, second_values) = first, second
    seeds = tuple(sorted(set(first_values) & set(second_values)))
    if len(seeds) < 2:
        return None
    differences = tuple(first_values[seed] - second_values[seed] for seed in seeds)
    mean, low, high = t_interval(differences)
    return PairedDifference(
        metric, first_name, second_name, seeds, differences, mean, low, high, higher_is_better
    )


def _t975(degrees_of_freedom: int) -> float:
    """t(0.975, df): the table up to 30; beyond, the Cornish-Fisher expansion around the
    normal quantile, within 2e-6 of the exact value there."""
    if degrees_of_freedom <= len(_T975):
        return _T975[degrees_of_freedom - 1]
    z, v = statistics.NormalDist().inv_cdf(0.975), degrees_of_freedom
    return (
        z
        + (z**3 + z) / (4 * v)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3)
    )
