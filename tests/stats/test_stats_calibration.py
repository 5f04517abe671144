"""Simulated calibration and power of the paired t verdicts (vectorised, seeded)."""

import math

import numpy as np
import pytest

from gradkit.stats import compare_paired, detectable_difference, paired_t
from gradkit.stats.power import detectable_noncentrality, t_power

ALPHA = 0.05
DESIGNS = 20000


def mc_se(p: float, m: int = DESIGNS) -> float:
    return math.sqrt(p * (1 - p) / m)


@pytest.mark.parametrize("n", [3, 5, 10, 15])
def test_false_positive_rate_under_normal_null(n, record_property):
    rng = np.random.default_rng(1000 + n)
    d = rng.normal(0.0, 1.0, size=(DESIGNS, n))
    rate = float(np.mean(paired_t(d, ALPHA).sign != 0))
    record_property("false_positive_rate", rate)
    print(f"normal null n={n}: rate of better/worse = {rate:.4f}")
    assert rate <= ALPHA + 3 * mc_se(ALPHA)
    assert rate >= ALPHA - 3 * mc_se(ALPHA)   # exact, not merely conservative


def test_false_positive_rate_under_skewed_null(record_property):
    rng = np.random.default_rng(2024)
    d = rng.exponential(1.0, size=(DESIGNS, 10)) - 1.0    # mean 0, skewness 2
    res = paired_t(d, ALPHA)
    rate = float(np.mean(res.sign != 0))
    record_property("false_positive_rate", rate)
    print(f"centred exponential null n=10: rate of better/worse = {rate:.4f}")
    # Not calibrated: the t-test's known inflation under skew (scipy's ttest_1samp gives the
    # same ~0.10 at n = 10; see the compare_paired docstring). Pinned so that the documented
    # limit stays true: clearly above alpha, but bounded.
    assert 0.08 < rate <= 0.115
    # The skew shows as an imbalance: false "worse" (mean < 0) outnumber false "better".
    assert np.mean(res.sign == -1) > np.mean(res.sign == 1)


def test_power_at_a_clear_effect(record_property):
    n, effect = 10, 1.5
    rng = np.random.default_rng(3)
    d = rng.normal(effect, 1.0, size=(DESIGNS, n))
    rate = float(np.mean(paired_t(d, ALPHA).sign == 1))
    record_property("power", rate)
    print(f"true diff 1.5 sd, n=10: rate of 'better' = {rate:.4f}")
    assert rate >= 0.80
    theory = t_power(effect * math.sqrt(n), n, ALPHA)
    assert abs(rate - theory) <= 4 * mc_se(theory)


@pytest.mark.parametrize("n", [3, 5, 10, 15])
def test_min_detectable_has_80_percent_power(n, record_property):
    sd = 0.03
    delta = detectable_difference(n, sd, ALPHA)
    rng = np.random.default_rng(500 + n)
    d = rng.normal(delta, sd, size=(DESIGNS, n))
    rate = float(np.mean(paired_t(d, ALPHA).sign == 1))
    record_property("power_at_min_detectable", rate)
    print(f"true diff = min_detectable = {delta:.4f}, n={n}: rate of 'better' = {rate:.4f}")
    assert abs(rate - 0.80) <= 0.04


def test_min_detectable_limits():
    # Large n: the noncentral t tends to the normal, λ → z_{1-α/2} + z_{0.8}.
    assert detectable_noncentrality(5000, 0.05) == pytest.approx(1.959964 + 0.841621, rel=2e-3)
    # More pairs detect less; the difference scales with sd.
    ks = [detectable_difference(n, 1.0) for n in (3, 5, 10, 15, 40)]
    assert all(x > y for x, y in zip(ks, ks[1:], strict=False))
    assert detectable_difference(10, 2.0) == pytest.approx(2 * detectable_difference(10, 1.0))
    assert math.isnan(detectable_difference(1, 1.0))
    assert detectable_difference(10, 0.0) == 0.0
    assert t_power(detectable_noncentrality(7, 0.01), 7, 0.01) == pytest.approx(0.8, abs=1e-9)


def test_simulated_designs_agree_with_compare_paired():
    rng = np.random.default_rng(9)
    d = rng.exponential(1.0, size=(5, 10)) - 0.6
    res = paired_t(d, ALPHA)
    for i in range(5):
        r = compare_paired(d[i] + 1.0, np.ones(10))
        # a - b recomputes d up to rounding; the verdicts must agree.
        assert r.p_value == pytest.approx(res.p_value[i], rel=1e-9)
        assert (r.verdict != "no detectable difference") == (res.sign[i] != 0)
