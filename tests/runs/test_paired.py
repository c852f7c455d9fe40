"""Paired comparisons over seeds: the t-interval against a hand computation, the verdict."""

import math

import pytest

from loom.runs.paired import PairedDifference, _t975, paired_difference, t_interval


def test_the_interval_is_the_mean_plus_or_minus_t_times_the_standard_error():
    # mean 2, stdev 1, n 3: half-width t(0.975, 2) / sqrt(3) = 4.302653 / 1.732051 = 2.484138
    mean, low, high = t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert low == pytest.approx(2.0 - 2.484138, abs=1e-6)
    assert high == pytest.approx(2.0 + 2.484138, abs=1e-6)
    # five seeds: differences 0.01, 0.02, 0.03, 0.02, 0.02 have mean 0.02 and stdev
    # sqrt(0.0002 / 4) = 0.0070711; t(0.975, 4) = 2.776445, so the half-width is 0.0087799
    mean, low, high = t_interval([0.01, 0.02, 0.03, 0.02, 0.02])
    assert (mean, low, high) == pytest.approx((0.02, 0.0112201, 0.0287799), abs=1e-7)
    with pytest.raises(ValueError, match="at least two values"):
        t_interval([0.5])


def test_the_t_quantiles_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    for degrees_of_freedom in [*range(1, 31), 31, 45, 200, 10_000]:
        exact = stats.t.ppf(0.975, degrees_of_freedom)
        assert math.isclose(_t975(degrees_of_freedom), exact, abs_tol=3e-6), degrees_of_freedom


def test_a_method_beats_another_only_where_the_interval_excludes_zero():
    def verdict(low, high, higher_is_better=True):
        pair = PairedDifference("m", "a", "b", (0, 1), (0.0, 0.0), 0.0, low, high, higher_is_better)
        return pair.verdict

    assert verdict(0.01, 0.03) == "a beats b"
    assert verdict(-0.03, -0.01) == "b beats a"
    assert verdict(-0.01, 0.03) == "no ordering"
    assert verdict(0.0, 0.03) == "no ordering", "an interval that reaches zero holds it"
    assert verdict(0.01, 0.03, higher_is_better=False) == "b beats a", "a's NLL is higher"
    assert verdict(-0.03, -0.01, higher_is_better=False) == "a beats b"


def test_only_the_shared_seeds_are_paired():
    pair = paired_difference(
        "accuracy", ("ols", {0: 0.80, 1: 0.90, 2: 0.85}), ("hard", {1: 0.86, 2: 0.80, 3: 0.99})
    )
    assert pair.seeds == (1, 2)
    assert pair.differences == pytest.approx((0.04, 0.05))
    # stdev of (0.04, 0.05) is 0.0070711; t(0.975, 1) = 12.706205: half-width 0.0635310
    assert (pair.mean, pair.low, pair.high) == pytest.approx((0.045, -0.018531, 0.108531), abs=1e-6)
    assert pair.verdict == "no ordering"
    assert paired_difference("accuracy", ("a", {0: 0.8, 1: 0.9}), ("b", {1: 0.7})) is None
