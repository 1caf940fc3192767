"""The study's confidence intervals against hand-computed values (megl.study.stats)."""

import math

import pytest

from megl.study.stats import mean_ci, paired_ci


def test_t_interval_by_hand():
    # 1..5: mean 3, s = sqrt(2.5) = 1.5811; t_{0.975, 4} = 2.7764 -> half-width 2.7764 * 1.5811 / sqrt(5) = 1.9632
    ci = mean_ci([1, 2, 3, 4, 5])
    assert ci.mean == 3 and ci.n == 5
    assert ci.half_width == pytest.approx(2.776445 * math.sqrt(2.5) / math.sqrt(5), rel=1e-5)
    assert ci.low == pytest.approx(1.036757, rel=1e-5) and ci.high == pytest.approx(4.963243, rel=1e-5)
    assert ci.text() == "3.0000 ± 1.9632"


def test_one_value_has_no_interval():
    ci = mean_ci([0.25])
    assert (ci.low, ci.high, ci.n) == (0.25, 0.25, 1) and ci.text() == "0.2500" and not ci.excludes_zero()


def test_paired_difference_uses_shared_seeds_only():
    a = {1: 0.50, 2: 0.60, 3: 0.55, 4: 0.40}
    b = {1: 0.40, 2: 0.45, 3: 0.50, 5: 0.90}  # seed 4 and 5 are not shared
    d = paired_ci(a, b)
    assert d.n == 3 and d.mean == pytest.approx((0.10 + 0.15 + 0.05) / 3)
    # differences 0.10, 0.15, 0.05: s = 0.05, t_{0.975, 2} = 4.3027 -> half-width 4.3027 * 0.05 / sqrt(3)
    assert d.half_width == pytest.approx(4.302653 * 0.05 / math.sqrt(3), rel=1e-5)
    assert not d.excludes_zero()  # 0.1 ± 0.124 straddles 0
    assert paired_ci({1: 1.0}, {2: 1.0}) is None


def test_interval_that_straddles_zero_is_not_a_difference():
    d = paired_ci({1: 0.1, 2: -0.1, 3: 0.05}, {1: 0.0, 2: 0.0, 3: 0.0})
    assert d.low < 0 < d.high and not d.excludes_zero()
