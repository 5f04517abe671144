"""compare_paired: scipy agreement, the degenerate designs, validation, rendering."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from gradkit.stats import (
    PairedComparison,
    compare_paired,
    detectable_difference,
    paired_t,
    sentence,
)

FIVE_WINS = [0.17, 0.15, 0.19, 0.16, 0.18]


@pytest.mark.parametrize("n", [2, 3, 5, 15, 40])
@pytest.mark.parametrize("alpha", [0.05, 0.01, 0.2])
def test_matches_scipy_ttest_rel(n, alpha):
    rng = np.random.default_rng(100 * n + int(alpha * 100))
    a = rng.normal(0.7, 0.05, size=n)
    b = a - rng.normal(0.01, 0.03, size=n)
    r = compare_paired(a, b, alpha=alpha)
    ref = sps.ttest_rel(a, b)
    lo, hi = ref.confidence_interval(confidence_level=1 - alpha)
    assert r.p_value == pytest.approx(ref.pvalue, rel=1e-12, abs=1e-15)
    assert r.ci[0] == pytest.approx(lo, rel=1e-12, abs=1e-15)
    assert r.ci[1] == pytest.approx(hi, rel=1e-12, abs=1e-15)
    assert r.diff == pytest.approx(np.mean(a - b), rel=1e-12)
    assert r.sd == pytest.approx(np.std(a - b, ddof=1), rel=1e-12)
    assert r.n == n
    assert r.min_detectable == pytest.approx(detectable_difference(n, r.sd, alpha), rel=1e-12)


def test_compare_paired_uses_the_vectorised_code_path():
    rng = np.random.default_rng(7)
    d = rng.normal(0.3, 1.0, size=(6, 8))
    d[4] = 0.25          # a spread-free design
    d[5] = 0.0           # an all-zero design
    many = paired_t(d, alpha=0.05)
    for i in range(d.shape[0]):
        r = compare_paired(d[i], np.zeros(8))
        assert r.diff == many.mean[i]
        assert r.sd == many.sd[i]
        assert r.p_value == many.p_value[i]
        assert r.ci == (many.ci_low[i], many.ci_high[i])
        assert {1: "better", -1: "worse", 0: "no detectable difference"}[many.sign[i]] == r.verdict


def test_verdict_ci_and_p_agree_near_the_boundary():
    # Designs whose t-statistic sits close to the critical value, where the three could disagree.
    rng = np.random.default_rng(11)
    n = 6
    z = rng.standard_normal((20000, n))
    z = (z - z.mean(axis=1, keepdims=True)) / z.std(axis=1, ddof=1, keepdims=True)
    t_target = sps.t.ppf(0.975, n - 1) * rng.uniform(0.98, 1.02, size=(20000, 1))
    d = z + t_target / math.sqrt(n) * rng.choice([-1, 1], size=(20000, 1))
    res = paired_t(d, alpha=0.05)
    excludes = (res.ci_low > 0) | (res.ci_high < 0)
    assert np.array_equal(res.sign != 0, excludes)
    assert np.array_equal(res.sign != 0, res.p_value < 0.05)
    assert 0.2 < np.mean(excludes) < 0.8   # both sides of the boundary were exercised


def test_five_of_five_consistent_wins_is_better():
    r = compare_paired(FIVE_WINS, [0.0] * 5)
    assert r.verdict == "better"
    assert (r.wins, r.losses, r.ties) == (5, 0, 0)
    assert r.p_value < 0.05 and r.ci[0] > 0
    # The same numbers as losses (lower is better): A is worse on every pair.
    r_loss = compare_paired(FIVE_WINS, [0.0] * 5, higher_is_better=False)
    assert r_loss.verdict == "worse"
    assert (r_loss.wins, r_loss.losses, r_loss.ties) == (0, 5, 0)
    assert r_loss.diff == r.diff and r_loss.p_value == r.p_value and r_loss.ci == r.ci
    # Swapping the conditions flips the sign and the verdict.
    r_swap = compare_paired([0.0] * 5, FIVE_WINS)
    assert r_swap.verdict == "worse" and r_swap.diff == pytest.approx(-r.diff)


def test_lower_is_better_on_losses():
    a = np.array([0.50, 0.41, 0.47, 0.44, 0.52, 0.46])
    b = a + np.array([0.05, 0.07, 0.04, 0.06, 0.05, 0.08])   # b has the higher loss
    r = compare_paired(a, b, higher_is_better=False, label_a="GHM", label_b="raw")
    assert r.diff < 0 and r.verdict == "better" and r.wins == 6


@pytest.mark.parametrize("n", [0, 1])
def test_fewer_than_two_pairs_is_not_testable(n):
    r = compare_paired([0.8] * n, [0.7] * n)
    assert r.verdict == "no detectable difference"
    assert math.isnan(r.p_value) and all(math.isnan(c) for c in r.ci)
    assert math.isnan(r.sd) and math.isnan(r.min_detectable)
    assert f"n = {n} < 2" in r.reason
    assert r.n == n and r.wins == n
    if n == 1:
        assert r.diff == pytest.approx(0.1)
        assert "not testable" in r.sentence()


def test_all_differences_zero():
    r = compare_paired([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
    assert r.p_value == 1.0 and r.ci == (0.0, 0.0) and r.diff == 0.0 and r.sd == 0.0
    assert r.verdict == "no detectable difference"
    assert (r.wins, r.losses, r.ties) == (0, 0, 3)
    assert "zero" in r.reason


@pytest.mark.parametrize("c, hib, verdict", [(0.25, True, "better"), (-0.25, True, "worse"),
                                             (0.25, False, "worse"), (-0.25, False, "better")])
def test_identical_nonzero_differences(c, hib, verdict):
    b = np.array([0.0, 1.0, 2.0, 3.0])
    r = compare_paired(b + c, b, higher_is_better=hib)
    assert r.p_value == 0.0 and r.sd == 0.0
    assert r.ci == (pytest.approx(c), pytest.approx(c)) and r.ci[0] == r.ci[1] == r.diff
    assert r.verdict == verdict
    assert r.min_detectable == 0.0
    assert "identical" in r.reason


@pytest.mark.parametrize("which, index, value", [("a", 2, np.nan), ("b", 0, np.nan),
                                                 ("b", 3, np.inf)])
def test_non_finite_input_names_argument_and_index(which, index, value):
    a = [0.1, 0.2, 0.3, 0.4]
    b = [0.1, 0.1, 0.1, 0.1]
    bad = list(a if which == "a" else b)
    bad[index] = value
    args = (bad, b) if which == "a" else (a, bad)
    with pytest.raises(ValueError, match=rf"^{which}\[{index}\] is"):
        compare_paired(*args)


def test_unequal_lengths_name_both():
    with pytest.raises(ValueError, match=r"len\(a\) = 3, len\(b\) = 2"):
        compare_paired([1, 2, 3], [1, 2])


def test_bad_shape_and_alpha():
    with pytest.raises(ValueError, match="one-dimensional"):
        compare_paired([[1, 2], [3, 4]], [[1, 2], [3, 4]])
    with pytest.raises(ValueError, match="alpha"):
        compare_paired([1, 2, 3], [1, 2, 2], alpha=1.5)


def test_sentence_of_the_brief_example():
    r = PairedComparison(diff=-0.041, ci=(-0.098, 0.016), p_value=0.14, n=15, sd=0.1,
                         min_detectable=0.062, wins=5, losses=10, ties=0,
                         verdict="no detectable difference", label_a="GHM", label_b="raw",
                         unit="pp", what="seed×fold pairs")
    expected = ("GHM − raw = −4.1 pp [−9.8, 1.6] over 15 seed×fold pairs, p = 0.14: "
                "no detectable difference; this design detects ≥ 6.2 pp")
    assert r.sentence(scale=100) == expected
    assert sentence(r, scale=100) == expected


def test_sentence_of_a_computed_comparison():
    r = compare_paired(FIVE_WINS, [0.0] * 5, label_a="GHM", label_b="raw", unit="pp",
                       what="seeds")
    assert sentence(r, scale=100) == ("GHM − raw = 17.0 pp [15.0, 19.0] over 5 seeds, "
                                      "p < 0.001: GHM better; this design detects ≥ 2.7 pp")
    assert sentence(r, digits=2) == ("GHM − raw = 0.17 pp [0.15, 0.19] over 5 seeds, "
                                     "p < 0.001: GHM better; this design detects ≥ 0.03 pp")


def test_sentence_never_prints_minus_zero():
    r = compare_paired([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
    assert r.sentence() == ("a − b = 0.0 [0.0, 0.0] over 3 pairs, p = 1: "
                            "no detectable difference; this design detects ≥ 0.0")
    tiny = compare_paired([0.0, 0.0, -0.0001], [0.0, 0.0, 0.0])
    assert "= 0.0 [" in tiny.sentence()


def test_as_row():
    r = compare_paired(FIVE_WINS, [0.0] * 5, label_a="GHM", label_b="raw", unit="pp")
    row = r.as_row(scale=100)
    assert row["comparison"] == "GHM − raw"
    assert row["diff"] == pytest.approx(17.0)
    assert (row["ci_low"], row["ci_high"]) == (pytest.approx(r.ci[0] * 100),
                                               pytest.approx(r.ci[1] * 100))
    assert row["p_value"] == r.p_value and row["verdict"] == "better"
    assert (row["wins"], row["losses"], row["ties"], row["n"]) == (5, 0, 0, 5)
    assert row["min_detectable"] == pytest.approx(r.min_detectable * 100)
    assert list(row)[:4] == ["comparison", "diff", "ci_low", "ci_high"]


def test_result_is_frozen():
    r = compare_paired(FIVE_WINS, [0.0] * 5)
    with pytest.raises(AttributeError):
        r.verdict = "worse"
