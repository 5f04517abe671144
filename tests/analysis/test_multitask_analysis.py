"""Notebook 04's decision rules: paired verdicts by seed, plateau of the losses, stable weights."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gradkit.analysis import multitask as mta


def _history(w_det, w_cls=None, steps_per_epoch=4, loss_det=None):
    w_det = np.repeat(np.asarray(w_det, dtype=float), steps_per_epoch)
    w_cls = 2 - w_det if w_cls is None else np.repeat(np.asarray(w_cls, float), steps_per_epoch)
    n = w_det.size
    loss = np.linspace(2.0, 1.0, n) if loss_det is None else np.asarray(loss_det, float)
    return pd.DataFrame({"step": np.arange(n), "epoch": np.arange(n) // steps_per_epoch,
                         "w_det": w_det, "w_cls": w_cls, "loss_det": loss,
                         "loss_cls": np.full(n, 0.7)})


def test_weights_stable_epoch():
    assert mta.weights_stable_epoch(_history([1.0] * 6)) == (0, True)        # fixed weights
    assert mta.weights_stable_epoch(_history([1.0, 1.3, 1.5, 1.52, 1.51, 1.5])) == (2, True)
    assert mta.weights_stable_epoch(_history([1.0, 1.1, 1.2, 1.3, 1.4, 1.5])) == (5, False)
    with pytest.raises(ValueError, match="tol"):
        mta.weights_stable_epoch(_history([1.0] * 3), tol=0)


def test_loss_trends_see_a_falling_and_a_flat_curve():
    trends = mta.loss_trends(_history([1.0] * 8))
    assert trends == {"detection": "still improving", "classification": "plateaued"}
    assert mta.loss_trends(_history([1.0] * 2)) == {"detection": "too short",
                                                     "classification": "too short"}
    losses = mta.epoch_losses(_history([1.0] * 3))
    assert list(losses.columns) == ["detection", "classification"] and len(losses) == 3


def _table():
    rows = []
    for seed in (4, 0, 2, 1, 3):                     # deliberately out of order
        base = 0.5 + 0.05 * seed
        rows += [{"method": "equal", "seed": seed, "accuracy": base, "mean_iou": 0.4,
                  "mean_cosine": 0.01 * (seed - 2)},
                 {"method": "gradnorm", "seed": seed, "accuracy": base + 0.1 + 0.001 * seed,
                  "mean_iou": 0.4 - 0.02 - 0.001 * seed, "mean_cosine": 0.2 + 0.01 * seed}]
    return pd.DataFrame(rows)


def test_paired_vs_pairs_by_seed_and_calls_a_five_of_five_win():
    table = _table()
    acc = mta.paired_vs(table, "gradnorm", "equal", "accuracy", {"gradnorm": "GradNorm"})
    assert acc.n == 5 and acc.wins == 5 and acc.verdict == "better"
    assert acc.diff == pytest.approx(0.102) and acc.label_a == "GradNorm"
    iou = mta.paired_vs(table, "gradnorm", "equal", "mean_iou")
    assert iou.losses == 5 and iou.verdict == "worse"
    slower = mta.paired_vs(table, "gradnorm", "equal", "accuracy", higher_is_better=False)
    assert slower.verdict == "worse"
    rows = mta.paired_table(table, "equal", {"accuracy": "acc", "mean_iou": "IoU"})
    assert rows[["method", "metric", "verdict"]].values.tolist() == [
        ["gradnorm", "acc", "better"], ["gradnorm", "IoU", "worse"]]
    with pytest.raises(ValueError, match="share their seeds"):
        mta.paired_vs(table.iloc[:-1], "gradnorm", "equal", "accuracy")


def test_collapse_and_cosine_rules():
    assert mta.weight_collapsed(_history([1.0, 1.9, 1.97]))
    assert not mta.weight_collapsed(_history([1.0, 1.5, 1.6]))
    table = _table()
    assert mta.cosine_against_zero(table, "gradnorm").verdict == "better"     # aligned
    assert mta.cosine_against_zero(table, "equal").verdict == "no detectable difference"
