"""interval_change: the three outcomes, validation, and how conservative non-overlap is."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from gradkit.stats import interval_change


def test_three_outcomes():
    before = (10.0, (8.0, 12.0))
    assert interval_change(before, (15.0, (12.5, 17.0))) == "higher"
    assert interval_change(before, (5.0, (3.0, 7.5))) == "lower"
    assert interval_change(before, (12.5, (11.0, 14.0))) == "no detectable change"
    assert interval_change(before, (10.0, (9.0, 11.0))) == "no detectable change"
    # Touching intervals overlap.
    assert interval_change(before, (14.0, (12.0, 16.0))) == "no detectable change"
    assert interval_change(before, (6.0, (4.0, 8.0))) == "no detectable change"


def test_accepts_sequences_and_numpy_values():
    assert interval_change([1, [0.5, 1.5]], (np.float64(3), np.array([2.0, 4.0]))) == "higher"


@pytest.mark.parametrize("bad", [(5.0, (6.0, 7.0)), (8.0, (6.0, 7.0)), (5.0, (7.0, 3.0)),
                                 (math.nan, (1.0, 2.0)), (1.0, 2.0), "x", (1.0, (1.0,))])
def test_validation(bad):
    with pytest.raises(ValueError, match="before"):
        interval_change(bad, (1.0, (0.0, 2.0)))
    with pytest.raises(ValueError, match="after"):
        interval_change((1.0, (0.0, 2.0)), bad)


def test_non_overlap_of_95_percent_intervals_is_conservative(record_property):
    # Two independent normal estimates with equal standard errors and no true change: the rate
    # of "higher"/"lower" is 2 Φ(-1.96 √2) ≈ 0.0056, not 0.05.
    rng = np.random.default_rng(4)
    m, z = 20000, sps.norm.ppf(0.975)
    e = rng.normal(0.0, 1.0, size=(m, 2))
    calls = [interval_change((e1, (e1 - z, e1 + z)), (e2, (e2 - z, e2 + z))) for e1, e2 in e]
    rate = 1 - calls.count("no detectable change") / m
    record_property("false_change_rate", rate)
    print(f"independent null, equal 95 % intervals: rate of higher/lower = {rate:.4f}")
    expected = 2 * sps.norm.sf(z * math.sqrt(2))
    assert abs(rate - expected) <= 4 * math.sqrt(expected * (1 - expected) / m)
    assert rate < 0.05 / 4
