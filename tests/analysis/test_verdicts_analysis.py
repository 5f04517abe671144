"""Per-run summaries and paired verdicts of notebook 01 (gradkit.analysis.verdicts)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gradkit.analysis import verdicts as vd


def _run(objective, seed, fold, acc, loss=None, n_val=18):
    acc = np.asarray(acc, dtype=float)
    loss = np.linspace(2.0, 1.0, acc.size) if loss is None else np.asarray(loss, dtype=float)
    return pd.DataFrame({"objective": objective, "seed": seed, "fold": fold,
                         "epoch": np.arange(1, acc.size + 1), "val_acc": acc,
                         "val_correct": np.round(acc * n_val).astype(int), "n_val": n_val,
                         "val_raw_loss": loss, "val_ghm_loss": loss * 0.9,
                         "train_loss": np.linspace(2.0, 0.5, acc.size),
                         "train_acc": np.linspace(0.2, 0.9, acc.size)})


def test_run_summary_reads_the_end_epoch_tail_best_trend_and_chance():
    climbing = _run("ghm", 1, 0, np.linspace(0.2, 0.9, 15))
    flat = _run("raw", 1, 0, [0.5, 1.0] + [5 / 18] * 13, loss=[1.0] * 15)
    table = vd.run_summary(pd.concat([climbing, flat]), {(1, 0): (15, "cap")}, n_classes=6,
                           tail=5, window=10)
    ghm = table[table.objective == "ghm"].iloc[0]
    raw = table[table.objective == "raw"].iloc[0]
    assert ghm.end_epoch == 15 and ghm.final_val_acc == pytest.approx(0.9)
    assert ghm.tail_val_acc == pytest.approx(np.linspace(0.2, 0.9, 15)[-5:].mean())
    assert ghm.acc_trend == "still improving" and ghm.chance == "above chance"
    assert raw.best_val_acc == 1.0 and raw.best_epoch == 2      # optimistic pick, reported
    assert raw.acc_trend == "plateaued" and raw.loss_trend == "plateaued"
    assert raw.chance == "at chance"                           # 5/18 vs 1/6: not significant
    with pytest.raises(ValueError, match="n_classes"):
        vd.run_summary(climbing, {}, n_classes=1)


def test_compare_objectives_pairs_by_seed_and_fold_whatever_the_row_order():
    rows = []
    for seed in range(3):
        for fold in range(2):
            base = 0.5 + 0.1 * seed + 0.02 * fold
            rows.append({"objective": "raw", "seed": seed, "fold": fold, "m": base})
            rows.append({"objective": "ghm", "seed": seed, "fold": fold, "m": base + 0.03})
    table = pd.DataFrame(rows).sample(frac=1.0, random_state=0)
    result = vd.compare_objectives(table, "m", "ghm", "raw", labels={"ghm": "GHM"})
    assert result.n == 6 and result.wins == 6 and result.diff == pytest.approx(0.03)
    assert result.verdict == "better" and result.label_a == "GHM"
    lower = vd.compare_objectives(table, "m", "ghm", "raw", higher_is_better=False)
    assert lower.verdict == "worse"
    with pytest.raises(ValueError, match="unknown metric"):
        vd.compare_objectives(table, "nope")


def test_sentences_say_too_few_pairs_below_the_minimum():
    table = pd.DataFrame([{"objective": o, "seed": 42, "fold": f, "m": v}
                          for f, (a, b) in enumerate([(0.6, 0.5), (0.7, 0.55)])
                          for o, v in (("ghm", a), ("raw", b))])
    two = vd.compare_objectives(table, "m", unit="pp")
    assert two.n == 2
    assert "too few pairs" in vd.verdict_sentence(two, scale=100)
    assert vd.headline_verdict(two) == "too few pairs (n = 2)"
    assert "too few" not in vd.verdict_sentence(two, min_pairs=2)


def test_headline_verdict_carries_interval_n_p_and_detectable_difference():
    a = np.array([0.60, 0.62, 0.58, 0.61, 0.65])
    table = pd.DataFrame([{"objective": o, "seed": s, "fold": 0, "m": v}
                          for s in range(5) for o, v in (("ghm", a[s] - 0.1), ("raw", a[s]))])
    result = vd.compare_objectives(table, "m", unit="pp")
    text = vd.headline_verdict(result, scale=100)
    assert text.startswith("worse: \u221210.0 pp [") and "n = 5" in text
    assert "p = 0" in text and "detects" in text


def test_losses_are_read_at_one_common_ranking_weight():
    run = _run("raw", 0, 0, [0.5, 0.6, 0.7]).assign(
        val_ce=[1.0, 0.9, 0.8], val_rank=[10.0, 8.0, 6.0], val_ghmc=[0.5, 0.4, 0.3],
        val_ghm_rank=[4.0, 3.0, 2.0], lr=3e-3, rank_weight=0.3)
    common = vd.at_rank_weight(run, 0.1)
    assert common.val_raw_loss.tolist() == pytest.approx([2.0, 1.7, 1.4])
    assert common.val_ghm_loss.tolist() == pytest.approx([0.9, 0.7, 0.5])
    assert common.val_raw_loss_own.tolist() == run.val_raw_loss.tolist()
    table = vd.run_summary(run, {}, n_classes=6, tail=2, rank_weight=0.1)
    row = table.iloc[0]
    assert row.final_val_raw_loss == pytest.approx(1.4) and row.final_val_ce == pytest.approx(0.8)
    assert row.lr == 3e-3 and row.rank_weight == 0.3
    # the trend is read on the run's own loss (what its stopping rule saw): flat here, while
    # the same run's loss at the common weight falls
    flat_own = pd.concat([run] * 4, ignore_index=True).assign(
        epoch=range(1, 13), val_raw_loss=1.0, val_rank=np.linspace(10, 1, 12))
    assert vd.run_summary(flat_own, {}, 6, rank_weight=0.1).iloc[0].loss_trend == "plateaued"
    assert vd.run_summary(vd.at_rank_weight(flat_own, 0.1).drop(
        columns="val_raw_loss_own"), {}, 6).iloc[0].loss_trend == "still improving"
    own = vd.run_summary(run, {}, n_classes=6, tail=2).iloc[0]
    assert own.final_val_raw_loss == pytest.approx(run.val_raw_loss.iloc[-1])
    with pytest.raises(ValueError, match="lack the validation terms"):
        vd.at_rank_weight(run.drop(columns="val_ghmc"), 0.1)


def test_the_readme_paragraph_names_the_chosen_weights_and_only_states_verdicts_when_comparable():
    from gradkit.stats import compare_paired

    rng = np.random.default_rng(0)
    acc = compare_paired(0.5 + 0.01 * rng.standard_normal(15), 0.8 + 0.01 * rng.standard_normal(15),
                         label_a="GHM", label_b="raw", unit="pp")
    settings = {"raw": "lr 0.003 × 15; rank weight 0.1 × 9, 0.3 × 6",
                "GHM": "lr 0.01 × 15; rank weight 0.03 × 15"}
    common = dict(condition="plastic / 3000 Hz", learnability="learnable", seeds=5, folds=3,
                  settings=settings, cap=100, n_improving=1, n_runs=30,
                  at_chance={"raw": 0, "GHM": 4})
    text = vd.study_paragraph(comparable=True, accuracy=acc, ablation="the GHM-C term", **common)
    assert "rank weight 0.1 × 9, 0.3 × 6" in text and "rank weight 0.03 × 15" in text
    assert "GHM − raw, validation accuracy at convergence: worse" in text
    assert "1 of 30 still improving" in text and "4 of the 30 runs ended at chance" in text
    assert "the GHM-C term" in text
    capped = vd.study_paragraph(comparable=True, accuracy=acc, **{**common, "n_improving": 3})
    assert "at the epoch cap, not at convergence" in capped and "at convergence:" not in capped
    silent = vd.study_paragraph(comparable=False, accuracy=acc, ablation="x", **common)
    assert "not comparable" in silent and "worse" not in silent and "ablation" not in silent
