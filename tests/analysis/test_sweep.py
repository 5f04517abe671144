"""The learning-rate sweep: inner splits never hold a unit's validation clips; the choice per unit;
a real (tiny) nested sweep whose outer runs train at the chosen rates."""

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
