"""plateau_test: scipy agreement, verdicts, simulated rate on flat noise, validation."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from gradkit.stats import plateau_test, sentence


@pytest.mark.parametrize("n", [3, 5, 10, 25])
def test_slope_and_ci_match_linregress(n):
    rng = np.random.default_rng(n)
    y = 0.6 + 0.004 * np.arange(n) + rng.normal(0, 0.01, n)
    r = plateau_test(y, last=n, alpha=0.1)
    ref = sps.linregress(np.arange(n), y)
    half = sps.t.ppf(0.95, n - 2) * ref.stderr
    assert r.slope == pytest.approx(ref.slope, rel=1e-12)
    assert r.p_value == pytest.approx(ref.pvalue, rel=1e-12)
    assert r.ci[0] == pytest.approx(ref.slope - half, rel=1e-12)
    assert r.ci[1] == pytest.approx(ref.slope + half, rel=1e-12)
    assert r.n == n


def test_uses_only_the_last_points():
    y = np.r_[np.linspace(0.1, 0.8, 30), np.full(10, 0.8) + 0.001 * (-1.0) ** np.arange(10)]
    r = plateau_test(y, last=10)
    assert r.n == 10 and r.verdict == "plateaued"
    ref = sps.linregress(np.arange(10), y[-10:])
    assert r.slope == pytest.approx(ref.slope, abs=1e-15)
    assert plateau_test(y, last=40).verdict == "still improving"
    assert plateau_test(y[:5], last=10).n == 5          # fewer points than last: all of them


def test_rising_line_with_noise_is_still_improving():
    rng = np.random.default_rng(0)
    y = 0.5 + 0.01 * np.arange(10) + rng.normal(0, 0.01, 10)
    r = plateau_test(y)
    assert r.verdict == "still improving" and r.ci[0] > 0 and r.p_value < 0.05


def test_falling_curve_is_getting_worse_and_direction_flips_for_losses():
    rng = np.random.default_rng(1)
    acc = 0.8 - 0.01 * np.arange(12) + rng.normal(0, 0.01, 12)
    assert plateau_test(acc).verdict == "getting worse"
    assert plateau_test(acc, higher_is_better=False).verdict == "still improving"
    assert plateau_test(-acc, higher_is_better=False).verdict == "getting worse"


def test_flat_noise_is_plateaued_at_rate_one_minus_alpha(record_property):
    rng = np.random.default_rng(2)
    m, alpha = 3000, 0.05
    curves = 0.7 + rng.normal(0, 0.02, size=(m, 10))
    verdicts = [plateau_test(c).verdict for c in curves]
    rate = verdicts.count("plateaued") / m
    record_property("plateaued_rate", rate)
    print(f"flat noise, last=10: rate of 'plateaued' = {rate:.4f}")
    se = math.sqrt(alpha * (1 - alpha) / m)
    assert rate >= 1 - alpha - 3 * se
    assert rate <= 1 - alpha + 3 * se
    # The false trends split between the two directions.
    assert verdicts.count("still improving") > 0.3 * (m - verdicts.count("plateaued"))


def test_constant_curve_is_plateaued():
    r = plateau_test([0.75] * 8)
    assert r.verdict == "plateaued"
    assert (r.slope, r.ci, r.p_value) == (0.0, (0.0, 0.0), 1.0)


def test_exact_line_is_decided():
    assert plateau_test(np.arange(6) * 0.1).verdict == "still improving"
    assert plateau_test(-np.arange(6) * 0.1).verdict == "getting worse"


def test_validation():
    with pytest.raises(ValueError, match="at least 3"):
        plateau_test([0.1, 0.2])
    with pytest.raises(ValueError, match="last"):
        plateau_test([0.1, 0.2, 0.3, 0.4], last=2)
    with pytest.raises(ValueError, match=r"values\[2\]"):
        plateau_test([0.1, 0.2, np.nan, 0.4])
    with pytest.raises(ValueError, match="alpha"):
        plateau_test([0.1, 0.2, 0.3], alpha=0)


def test_plateau_sentence():
    y = [0.50, 0.52, 0.51, 0.55, 0.56]
    r = plateau_test(y, unit="pp", step="epoch")
    assert r.sentence(scale=100) == sentence(r, scale=100) == (
        "over the last 5 epochs the slope is 1.50 pp/epoch [0.30, 2.70], p = 0.029: "
        "still improving")
    assert plateau_test(y[::-1], unit="pp", step="epoch").sentence(scale=100) == (
        "over the last 5 epochs the slope is −1.50 pp/epoch [−2.70, −0.30], p = 0.029: "
        "getting worse")
    assert plateau_test([0.75] * 4).sentence() == (
        "over the last 4 steps the slope is 0.00 per step [0.00, 0.00], p = 1: plateaued")
