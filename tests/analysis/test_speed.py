"""Learning speed: the epoch a run leaves chance (and stays), the area under its curve."""

import pandas as pd
import pytest

from gradkit.analysis.speed import speed_summary


def run(objective, correct, n_val=30, seed=0, fold=0):
    return pd.DataFrame({"objective": objective, "seed": seed, "fold": fold,
                         "epoch": range(1, len(correct) + 1), "val_correct": correct,
                         "n_val": n_val, "val_acc": [k / n_val for k in correct]})


def test_leaving_chance_needs_two_epochs_in_a_row_above_it():
    # chance 1/6 of 30 clips is 5; 12 of 30 is above chance (p < 0.01), 6 is not
    m = pd.concat([run("raw", [5, 12, 5, 12, 12, 12]), run("ghm", [5, 5, 5, 5, 5, 6])])
    s = speed_summary(m, n_classes=6, upto=6).set_index("objective")
    assert s.loc["raw", "epochs_to_leave_chance"] == 4 and s.loc["raw", "left_chance"]
    assert s.loc["ghm", "epochs_to_leave_chance"] == 7 and not s.loc["ghm", "left_chance"]
    assert s.loc["raw", "val_acc_area"] == pytest.approx((5 + 12 + 5 + 12 + 12 + 12) / 180)


def test_the_window_is_the_same_for_every_run_and_must_be_logged():
    m = pd.concat([run("raw", [5, 12, 12, 12, 12, 12, 30, 30]), run("ghm", [5, 5, 5, 5, 5])])
    s = speed_summary(m, 6, upto=5).set_index("objective")
    assert s.loc["raw", "val_acc_area"] == pytest.approx((5 + 4 * 12) / 150)
    with pytest.raises(ValueError, match="does not log every epoch"):
        speed_summary(m, 6, upto=6)
    with pytest.raises(ValueError, match="upto"):
        speed_summary(m, 6, upto=1)
