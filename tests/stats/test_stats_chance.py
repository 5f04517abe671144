"""wilson_interval and above_chance against scipy.stats.binomtest."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from gradkit.stats import above_chance, sentence, wilson_interval


@pytest.mark.parametrize("n", [1, 2, 7, 20, 200, 5000])
@pytest.mark.parametrize("confidence", [0.8, 0.95, 0.99])
def test_wilson_matches_scipy(n, confidence):
    for k in sorted({0, 1, n // 3, n // 2, n - 1, n}):
        lo, hi = wilson_interval(k, n, confidence)
        ref = sps.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
        assert lo == pytest.approx(ref.low, rel=1e-12, abs=1e-15)
        assert hi == pytest.approx(ref.high, rel=1e-12, abs=1e-15)
        assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_wilson_coverage_is_near_nominal():
    # Coverage of the 95 % interval, averaged over true p, at n = 50 (Brown, Cai & DasGupta 2001).
    n = 50
    ks = np.arange(n + 1)
    intervals = np.array([wilson_interval(k, n) for k in ks])
    cover = []
    for p in np.linspace(0.05, 0.95, 37):
        inside = (intervals[:, 0] <= p) & (p <= intervals[:, 1])
        cover.append(np.sum(sps.binom.pmf(ks, n, p)[inside]))
    assert 0.935 <= np.mean(cover) <= 0.965


@pytest.mark.parametrize("bad", [(-1, 10), (11, 10), (3, 0), (2.5, 10), ("x", 10)])
def test_wilson_rejects_bad_counts(bad):
    with pytest.raises(ValueError):
        wilson_interval(*bad)


def test_wilson_rejects_bad_confidence():
    with pytest.raises(ValueError, match="confidence"):
        wilson_interval(3, 10, confidence=1.0)


@pytest.mark.parametrize("k, n, chance", [(60, 100, 0.5), (56, 100, 0.5), (30, 100, 0.25),
                                          (3, 10, 0.1), (0, 10, 0.5), (10, 10, 0.5)])
def test_above_chance_matches_binomtest(k, n, chance):
    r = above_chance(k, n, chance)
    ref = sps.binomtest(k, n, chance, alternative="greater")
    assert r.p_value == pytest.approx(ref.pvalue, rel=1e-12)
    assert r.accuracy == k / n and r.chance == chance and (r.successes, r.n) == (k, n)
    assert r.ci == wilson_interval(k, n, 0.95)
    assert r.verdict == ("above chance" if ref.pvalue < 0.05 else "at chance")


def test_above_chance_verdicts():
    assert above_chance(60, 100, 0.5).verdict == "above chance"      # p = 0.028
    assert above_chance(55, 100, 0.5).verdict == "at chance"         # p = 0.18
    assert above_chance(28, 100, 0.25).verdict == "at chance"
    assert above_chance(12, 20, 0.1).verdict == "above chance"
    # One-sided: far *below* chance is not above chance.
    r = above_chance(10, 100, 0.5)
    assert r.verdict == "at chance" and r.p_value > 0.99


def test_above_chance_false_positive_rate_is_at_most_alpha():
    # Exact test: P(p < alpha | accuracy = chance) <= alpha for every n (discreteness makes it <).
    for n, chance in [(20, 0.5), (100, 0.1), (333, 0.25)]:
        ks = np.arange(n + 1)
        p = np.array([above_chance(int(k), n, chance).p_value for k in ks])
        size = np.sum(sps.binom.pmf(ks, n, chance)[p < 0.05])
        assert size <= 0.05
        assert size > 0.02


def test_above_chance_validation():
    with pytest.raises(ValueError, match="chance"):
        above_chance(5, 10, 1.0)
    with pytest.raises(ValueError, match="alpha"):
        above_chance(5, 10, 0.5, alpha=0)
    with pytest.raises(ValueError, match=r"\[0, 10\]"):
        above_chance(11, 10, 0.5)


def test_chance_sentence():
    r = above_chance(60, 100, 0.5)
    lo, hi = r.ci
    assert math.isclose(lo, 0.502, abs_tol=1e-3) and math.isclose(hi, 0.691, abs_tol=1e-3)
    assert sentence(r) == ("accuracy 60.0 % [50.2, 69.1] over 100 trials vs chance 50.0 %, "
                           "p = 0.028: above chance")
    assert sentence(r, digits=2, scale=1.0, unit="") == (
        "accuracy 0.60 [0.50, 0.69] over 100 trials vs chance 0.50, p = 0.028: above chance")
