"""The learning-rate sweep: inner splits never hold a unit's validation clips; the choice per unit;
a real (tiny) nested sweep whose outer runs train at the chosen rates."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from gradkit.analysis.sweep import (
    choose_learning_rates,
    choose_settings,
    coordinate_sweep,
    inner_member,
    sweep_learning_rates,
    sweep_settings,
    train_at_chosen,
)
from gradkit.data.folds import ConditionFeatures, fold_splits
from gradkit.training import TrainConfig
from gradkit.training.ensemble import Member


def condition(per_class=9, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), per_class)
    x = rng.standard_normal((y.size, 1, 8, 8)) + 0.8 * y[:, None, None, None]
    return ConditionFeatures(torch.tensor(x, dtype=torch.float32), torch.tensor(y),
                             torch.tensor(y * 45.0), [f"c{i:02d}.wav" for i in range(y.size)],
                             [f"deg{45 * c:03d}" for c in range(classes)])


def test_the_inner_split_holds_only_the_units_training_clips():
    fs = fold_splits(condition(), 3, 42)
    for fold, split in enumerate(fs.splits):
        inner = inner_member(Member(42, fold, split)).split
        inner_paths = set(inner.paths_train) | set(inner.paths_val)
        assert inner_paths == set(split.paths_train)
        assert not inner_paths & set(split.paths_val)
        assert not set(inner.paths_train) & set(inner.paths_val)
        assert sorted(torch.bincount(inner.y_val).tolist()) == [2, 2, 2]  # a third of 6 each


def test_the_choice_is_per_unit_by_score_then_loss_then_the_smaller_rate():
    table = pd.DataFrame([
        (1e-3, 0, 0, 0.5, 1.0), (1e-2, 0, 0, 0.7, 1.2),     # higher score wins
        (1e-3, 0, 1, 0.6, 0.9), (1e-2, 0, 1, 0.6, 0.8),     # tie: lower loss wins
        (1e-3, 1, 0, 0.4, 1.0), (1e-2, 1, 0, 0.4, 1.0),     # full tie: the smaller rate
    ], columns=["lr", "seed", "fold", "score", "loss"])
    assert choose_learning_rates(table) == {(0, 0): 1e-2, (0, 1): 1e-2, (1, 0): 1e-3}
    with pytest.raises(ValueError, match="lacks the columns"):
        choose_learning_rates(table.drop(columns="loss"))


def test_a_tiny_nested_sweep_trains_each_unit_at_its_chosen_rate(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADKIT_ROOT", str(tmp_path))
    monkeypatch.setenv("GRADKIT_DEVICE", "cpu")
    config = TrainConfig(epochs=3, save_every=3, batch_size=4, widths=(4, 8))
    members = [Member(0, f, s) for f, s in enumerate(fold_splits(condition(), 3, 0).splits)]
    table = sweep_learning_rates(config, members, [1e-3, 3e-2], min_epochs=3, tail=2)
    assert len(table) == 6 and set(table.lr) == {1e-3, 3e-2}
    chosen = choose_learning_rates(table)
    result = train_at_chosen(config, members, chosen, min_epochs=3)
    lr_of = result.metrics.groupby(["seed", "fold"]).lr.first().to_dict()
    assert lr_of == chosen and set(result.stopped) == set(chosen)
    with pytest.raises(ValueError, match="no chosen learning rate"):
        train_at_chosen(config, members, {(0, 0): 1e-3}, min_epochs=3)
    with pytest.raises(ValueError, match="lrs must be"):
        sweep_learning_rates(config, members, [])


def test_the_setting_choice_breaks_ties_by_loss_then_rate_then_weight():
    table = pd.DataFrame([
        (1e-3, 0.1, 0, 0, 0.5, 1.0), (1e-3, 0.3, 0, 0, 0.7, 1.2),   # the weight can win
        (1e-3, 0.1, 0, 1, 0.6, 0.9), (1e-3, 0.3, 0, 1, 0.6, 0.8),   # tie: lower loss wins
        (1e-2, 0.3, 1, 0, 0.4, 1.0), (1e-2, 0.1, 1, 0, 0.4, 1.0),   # full tie: smaller weight
    ], columns=["lr", "rank_weight", "seed", "fold", "score", "loss"])
    assert choose_settings(table) == {(0, 0): (1e-3, 0.3), (0, 1): (1e-3, 0.3),
                                      (1, 0): (1e-2, 0.1)}
    assert choose_learning_rates(table) == {(0, 0): 1e-3, (0, 1): 1e-3, (1, 0): 1e-2}


def test_the_coordinate_sweep_tries_the_other_weights_at_each_units_best_rate(tmp_path,
                                                                              monkeypatch):
    monkeypatch.setenv("GRADKIT_ROOT", str(tmp_path))
    monkeypatch.setenv("GRADKIT_DEVICE", "cpu")
    config = TrainConfig(epochs=2, save_every=2, batch_size=4, widths=(4,), rank_weight=0.1)
    members = [Member(0, f, s) for f, s in enumerate(fold_splits(condition(), 3, 0).splits)]
    table = coordinate_sweep(config, members, [1e-3, 3e-2], [0.1, 0.0, 1.0], min_epochs=2,
                             tail=2)
    first, second = table[table.stage == 1], table[table.stage == 2]
    assert len(first) == 6 and set(first.rank_weight) == {0.1}
    best = choose_learning_rates(first)
    assert len(second) == 6 and set(second.rank_weight) == {0.0, 1.0}  # 0.1 is not tried twice
    assert all(best[(r.seed, r.fold)] == r.lr for r in second.itertuples())
    chosen = choose_settings(table)
    result = train_at_chosen(config, members, chosen, min_epochs=2)
    got = result.metrics.groupby(["seed", "fold"])[["lr", "rank_weight"]].first()
    assert {u: (r.lr, r.rank_weight) for u, r in got.iterrows()} == chosen
    single = sweep_settings(config, members, {(0, f): [(1e-3, 0.1)] if f else [(1e-3, 0.1),
                                                                       (3e-2, 0.1)]
                                              for f in range(3)}, min_epochs=2, tail=2,
                            train_single=False)
    untrained = single[single.fold > 0]
    assert len(single) == 4 and (untrained.end_epoch == 0).all() and untrained.score.isna().all()
    assert choose_settings(single)[(0, 1)] == (1e-3, 0.1)  # its only candidate, untrained
    assert single[single.fold == 0].end_epoch.min() == 2
    with pytest.raises(ValueError, match="no candidate settings"):
        sweep_settings(config, members, {(0, 0): [(1e-3, 0.1)]})
    with pytest.raises(ValueError, match="a setting is"):
        sweep_settings(config, members[:1], {(0, 0): [(1e-3, -1.0)]})


def test_the_settings_text_counts_units_per_rate_and_weight():
    from gradkit.analysis.sweep import settings_text

    chosen = {(0, 0): (1e-3, 0.1), (0, 1): (3e-3, 0.1), (1, 0): (3e-3, 0.3)}
    assert settings_text(chosen) == "lr 0.001 × 1, 0.003 × 2; rank weight 0.1 × 2, 0.3 × 1"
    assert settings_text({(0, 0): 1e-2}) == "lr 0.01 × 1"
    with pytest.raises(ValueError, match="no chosen settings"):
        settings_text({})


def test_nested_runs_and_the_work_counts_of_a_tiny_study(tmp_path, monkeypatch):
    from gradkit.analysis.ablation import train_hybrids
    from gradkit.analysis.sweep import (
        metrics_epochs,
        nested_runs,
        sweep_epochs,
        unit_sizes,
        work_row,
    )

    monkeypatch.setenv("GRADKIT_ROOT", str(tmp_path))
    monkeypatch.setenv("GRADKIT_DEVICE", "cpu")
    members = [Member(0, f, s) for f, s in enumerate(fold_splits(condition(), 3, 0).splits)]
    base = TrainConfig(save_every=2, batch_size=4, widths=(4,))
    runs = {o: nested_runs(dataclasses.replace(base, objective=o, epochs=3), members,
                           [1e-3, 3e-2], [0.0, 0.1], sweep_epochs=2, sweep_min_epochs=2,
                           sweep_tail=2, min_epochs=3) for o in ("raw", "ghm")}
    for n in runs.values():
        assert len(n.table) == 9 and set(n.chosen) == {(0, 0), (0, 1), (0, 2)}
        assert n.table.end_epoch.max() == 2 and n.result.metrics.epoch.max() == 3
    inner = unit_sizes(members, inner=True)
    row = work_row("sweep", sweep_epochs([n.table for n in runs.values()]), inner)
    assert row["runs"] == 18 and row["member-epochs"] == 36
    assert row["training clip-epochs"] == 36 * 12 and row["validation clip-epochs"] == 36 * 6
    outer = work_row("runs", metrics_epochs([n.result.metrics for n in runs.values()]),
                     unit_sizes(members))
    assert outer["runs"] == 6 and outer["member-epochs"] == 18
    hybrids = train_hybrids(base, members, {o: n.chosen for o, n in runs.items()}, upto=2)
    for arm, (table, picked, result) in hybrids.items():
        agree = {u for u in picked if runs["raw"].chosen[u][0] == runs["ghm"].chosen[u][0]}
        assert set(table[table.end_epoch == 0][["seed", "fold"]].itertuples(index=False,
                                                                             name=None)) == agree
        assert result.metrics.epoch.max() == 2 and set(result.metrics.objective) == {arm}
