"""compare_proportions: pooled z-test (= uncorrected χ²), Newcombe's interval, exact size."""

import numpy as np
import pytest
from scipy import stats as sps

from gradkit.stats import compare_proportions, sentence

# Newcombe (1998), Table II, method 10 (hybrid score interval), to four decimals.
NEWCOMBE = [((56, 70, 48, 80), (0.0524, 0.3339)), ((9, 10, 3, 10), (0.1705, 0.8090)),
            ((6, 7, 2, 7), (0.0582, 0.8062)), ((5, 56, 0, 29), (-0.0381, 0.1926)),
            ((0, 10, 0, 20), (-0.1611, 0.2775)), ((10, 10, 0, 20), (0.6791, 1.0000))]


@pytest.mark.parametrize("counts, ci", NEWCOMBE)
def test_interval_matches_newcombe_table(counts, ci):
    r = compare_proportions(*counts)
    assert r.ci[0] == pytest.approx(ci[0], abs=6e-5)
    assert r.ci[1] == pytest.approx(ci[1], abs=6e-5)
    assert r.diff == pytest.approx(counts[0] / counts[1] - counts[2] / counts[3])


@pytest.mark.parametrize("k1, n1, k2, n2", [(56, 70, 48, 80), (30, 100, 45, 110), (3, 12, 9, 15)])
def test_p_value_is_uncorrected_chi_square(k1, n1, k2, n2):
    table = np.array([[k1, n1 - k1], [k2, n2 - k2]])
    ref = sps.chi2_contingency(table, correction=False).pvalue
    assert compare_proportions(k1, n1, k2, n2).p_value == pytest.approx(ref, rel=1e-10)


def test_verdicts_and_direction():
    assert compare_proportions(56, 70, 48, 80).verdict == "better"
    assert compare_proportions(48, 80, 56, 70).verdict == "worse"
    assert compare_proportions(56, 70, 48, 80, higher_is_better=False).verdict == "worse"
    assert compare_proportions(62, 100, 50, 100).verdict == "no detectable difference"
    r = compare_proportions(0, 10, 0, 20)
    assert r.p_value == 1.0 and r.verdict == "no detectable difference"


def test_verdict_needs_test_and_interval_to_agree():
    n = 40
    for k1 in range(n + 1):
        for k2 in range(n + 1):
            r = compare_proportions(k1, n, k2, n)
            excludes = r.ci[0] > 0 or r.ci[1] < 0
            assert (r.verdict != "no detectable difference") == (r.p_value < 0.05 and excludes)
            assert bool(r.reason) == ((r.p_value < 0.05) != excludes)


@pytest.mark.parametrize("n", [20, 40, 100])
def test_exact_false_positive_rate(n, record_property):
    ks = np.arange(n + 1)
    called = np.array([[compare_proportions(int(a), n, int(b), n).verdict != "no detectable "
                        "difference" for b in ks] for a in ks])
    sizes = []
    for p in (0.1, 0.3, 0.5, 0.7):
        pmf = sps.binom.pmf(ks, n, p)
        sizes.append(float(np.sum(np.outer(pmf, pmf)[called])))
    record_property("exact_size", sizes)
    print(f"two proportions, n1 = n2 = {n}, p in (0.1, 0.3, 0.5, 0.7): size = "
          + ", ".join(f"{s:.4f}" for s in sizes))
    assert max(sizes) <= 0.06


def test_validation_and_sentence():
    with pytest.raises(ValueError, match="k2"):
        compare_proportions(3, 10, 11, 10)
    with pytest.raises(ValueError, match="alpha"):
        compare_proportions(3, 10, 4, 10, alpha=1)
    r = compare_proportions(62, 100, 50, 100, label_1="GHM", label_2="raw")
    assert sentence(r) == ("GHM − raw = 12.0 pp [−1.7, 25.1] (62.0 % of 100 vs 50.0 % of 100), "
                           "p = 0.087: no detectable difference")
