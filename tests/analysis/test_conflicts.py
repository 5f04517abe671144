"""Conflicting clips, failing classes and the class-structure baseline, on known geometry."""

import numpy as np
import pytest
import torch

from gradkit.analysis.conflicts import (
    class_mean_baseline,
    class_table,
    conflict_cosines,
    conflict_table,
    share_opposed,
)


def three_classes():
    """Class 0 along +e0, class 1 along +e1, one class-0 clip along −e0, class 2 one clip."""
    e = torch.eye(3, dtype=torch.float64)
    G = torch.stack([e[0], e[0] + 0.1 * e[2], -0.5 * e[0], e[1], e[1] + 0.1 * e[2], e[2]])
    y = torch.tensor([0, 0, 0, 1, 1, 2])
    return G, y


def test_a_clip_against_its_class_conflicts_and_the_others_do_not():
    G, y = three_classes()
    cos_class, cos_full = conflict_cosines(G, y, np.ones(6, bool))
    assert cos_class[2] < 0 and (cos_class[[0, 1, 3, 4]] > 0).all()
    assert np.isnan(cos_class[5])  # a class of one clip has no rest
    rest = (G[1] + G[2]) / 2
    assert cos_class[0] == pytest.approx(float(G[0] @ rest / G[0].norm() / rest.norm()))
    full = (G.sum(0) - G[3]) / 5
    assert cos_full[3] == pytest.approx(float(G[3] @ full / G[3].norm() / full.norm()))


def test_held_out_clips_do_not_enter_the_full_gradient():
    G, y = three_classes()
    train = np.array([True, True, True, True, True, False])
    _, cos_full = conflict_cosines(G, y, train)
    full = G[:5].sum(0) / 5  # clip 5 is held out, so nothing is left out for it
    assert cos_full[5] == pytest.approx(float(G[5] @ full / full.norm()))


def test_conflict_table_ranks_by_the_share_of_checkpoints():
    per_epoch = {5: (np.array([-0.1, 0.5, 0.3]), np.array([0.2, 0.4, 0.3])),
                 10: (np.array([-0.2, 0.4, -0.1]), np.array([0.1, 0.3, 0.2]))}
    t = conflict_table(per_epoch, ["a", "b", "c"], ["k", "k", "k"])
    assert list(t["path"]) == ["a", "c", "b"]
    assert list(t["conflict share"]) == [1.0, 0.5, 0.0]


def test_class_mean_baseline_gives_the_opposition_of_class_means():
    G, y = three_classes()
    # class means: (0.5 e0 + 0.1 e2)/3, e1 + 0.05 e2, e2 -> no two opposed
    assert class_mean_baseline(G, y) == 0.0
    assert share_opposed(G) == pytest.approx(2 / 15)  # clip 2 against clips 0 and 1
    flipped = torch.cat([G[:3], -G[3:5], G[5:]])
    assert class_mean_baseline(flipped, y) > 0


def test_class_table_flags_a_class_wrong_at_most_checkpoints():
    correct = {5: np.array([0.2, 1.0]), 10: np.array([0.0, 0.9]), 15: np.array([0.8, 1.0])}
    within = {e: np.array([0.3, 0.6]) for e in correct}
    conflict = {e: np.array([0.5, 0.0]) for e in correct}
    t = class_table(correct, within, conflict, ["deg108", "deg000"])
    assert t.loc["deg108", "failing"] and not t.loc["deg000", "failing"]
    assert t.loc["deg108", "share of checkpoints mostly wrong"] == pytest.approx(2 / 3)


def test_within_class_cosines_per_class():
    from gradkit.analysis.conflicts import within_class_cosines

    G, y = three_classes()
    w = within_class_cosines(G, y)
    cos01 = float(G[0] @ G[1] / G[1].norm())
    assert w[0] == pytest.approx((cos01 - 1 - float(G[1, 0] / G[1].norm())) / 3)
    assert w[1] == pytest.approx(float(G[3] @ G[4] / G[4].norm()))
    assert np.isnan(w[2])
