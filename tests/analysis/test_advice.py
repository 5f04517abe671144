"""Notebook 02's decision rules: failed-run check and plateau before advice, interval steps."""

import math

import numpy as np
import pytest

from gradkit.analysis.advice import batch_advice, interval_steps, reproduces, run_status

RISING = np.linspace(0.3, 0.9, 20)
FLAT = 0.8 + 0.01 * np.sin(np.arange(20))


def test_a_run_at_chance_is_failed_and_gets_no_advice():
    status = run_status(np.full(20, 3 / 18), n_val=18, n_classes=6)
    assert status.failed
    assert batch_advice(status, 5.0, 1.0, 8.0, batch_size=4) == "failed run"


def test_a_rising_run_is_not_told_it_converged():
    status = run_status(RISING, n_val=18, n_classes=6)
    assert not status.failed and status.trend == "still improving"
    assert batch_advice(status, 50.0, 20.0, math.inf, batch_size=12) == "still improving"


@pytest.mark.parametrize(("lo", "hi", "word"), [(20.0, 80.0, "larger batch"),
                                                 (1.0, 5.0, "smaller batch"),
                                                 (5.0, 20.0, "keep batch"),
                                                 (20.0, math.inf, "mean gradient ~ 0")])
def test_a_plateaued_run_is_advised_by_the_interval(lo, hi, word):
    status = run_status(FLAT, n_val=18, n_classes=6)
    assert status.trend == "plateaued"
    assert batch_advice(status, (lo + min(hi, 100)) / 2, lo, hi, batch_size=12) == word


def test_two_epochs_are_too_short_for_a_trend():
    status = run_status([0.5, 0.7], n_val=10, n_classes=4)
    assert status.trend == "too short to test"
    assert batch_advice(status, 3.0, 1.0, 5.0, 4) == "too short to test"


def test_a_tenfold_jump_inside_wide_intervals_is_no_change():
    steps = interval_steps([5, 10, 15], [1.0, 10.0, 100.0], [0.1, 1.0, 50.0],
                           [20.0, 30.0, 200.0])
    assert steps == [(5, 10, "no detectable change"), (10, 15, "higher")]


def test_an_estimate_outside_its_percentile_interval_is_taken_in():
    assert interval_steps([1, 2], [1.0, 5.0], [1.5, 4.0], [2.0, 6.0])[0][2] == "higher"


def test_reproduces_by_median_ratio():
    assert reproduces([2e-5, 4e-5], [1.5e-5, 3e-5]) == (True, pytest.approx(4 / 3))
    same, ratio = reproduces([0.3, 3.0], [1.5e-5, 6e-5])
    assert not same and ratio > 1e3
    with pytest.raises(ValueError, match="same shape"):
        reproduces([1.0], [1.0, 2.0])


def test_steadiness_calls_only_what_the_intervals_show():
    import pandas as pd

    from gradkit.analysis.advice import steadiness

    t = pd.DataFrame({"epoch": [5, 10, 15], "gns": [1.0, 8.0, 9.0], "gns_lo": [0.3, 0.5, 4.0],
                      "gns_hi": [3.0, math.inf, 30.0]})
    text = steadiness(t)
    assert "higher (1 → 9" in text  # first vs last: [0.3, 3] against [4, 30]
    assert "No change between neighbouring checkpoints" in text
    assert "Only one checkpoint" in steadiness(t.head(1))


def test_advice_sentence_names_its_numbers():
    from gradkit.analysis.advice import advice_sentence

    s = advice_sentence("larger batch", 40.0, 20.0, 80.0, 12)
    assert "above B" in s and "[20, 80]" in s and "B = 12" in s
    with pytest.raises(ValueError, match="unknown advice"):
        advice_sentence("bigger", 1, 1, 1, 1)
