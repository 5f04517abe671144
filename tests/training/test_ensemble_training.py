"""The vectorised ensemble equals separate runs; its GHM state, stopping rule and store."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest
import torch

import gradkit.training.ensemble as E
import gradkit.training.runs as T
from gradkit.losses.ghm import bin_edges, ghm_weights, ghm_weights_batched
from gradkit.training import TrainConfig, get_run
from gradkit.training.ensemble import (
    Member,
    get_ensemble,
    plateau_stop,
    train_ensemble,
)

ANGLES = torch.tensor([0.0, 36, 72, 108, 144, 180])
COLUMNS = ["train_loss", "train_raw_loss", "train_ghm_loss", "train_acc", "val_loss",
           "val_raw_loss", "val_ghm_loss", "val_acc"]


def fake_split(seed, n_train=12, n_val=6):
    gen = torch.Generator().manual_seed(seed)

    def part(n):
        y = torch.arange(n) % 6
        return torch.randn(n, 1, 8, 8, generator=gen) + y.view(-1, 1, 1, 1) * 0.4, y, ANGLES[y]

    (xt, yt, at), (xv, yv, av) = part(n_train), part(n_val)
    return SimpleNamespace(x_train=xt, y_train=yt, angles_train=at, x_val=xv, y_val=yv,
                           angles_val=av, classes=[str(a) for a in range(6)],
                           paths_train=[], paths_val=[], mean=0.0, std=1.0)


def small(**kw):
    return TrainConfig(**{**dict(epochs=5, save_every=5, batch_size=4, widths=(4, 8)), **kw})


@pytest.fixture
def folds(tmp_path, monkeypatch):
    """Two fake folds; ``get_run`` of ``split_seed = f`` trains on fold ``f``."""
    monkeypatch.setenv("GRADKIT_ROOT", str(tmp_path))
    monkeypatch.setenv("GRADKIT_DEVICE", "cpu")
    splits = [fake_split(10), fake_split(11)]
    monkeypatch.setattr(T, "_load_split", lambda config: splits[config.split_seed])
    return splits


@pytest.mark.parametrize("objective", ["raw", "ghm"])
def test_every_member_equals_its_separate_run(folds, objective):
    members = [Member(seed, f, split) for seed in (3, 7) for f, split in enumerate(folds)]
    result = train_ensemble(small(objective=objective), members)
    assert len(result.metrics) == 4 * 5
    assert all(v == (5, "cap") for v in result.stopped.values())
    for mb in members:
        alone = get_run(small(objective=objective, seed=mb.seed, split_seed=mb.fold),
                        progress=False).metrics
        ours = result.metrics[(result.metrics.seed == mb.seed) & (result.metrics.fold == mb.fold)]
        ours = ours.sort_values("epoch").reset_index(drop=True)
        assert ours.epoch.tolist() == alone.epoch.tolist() == [1, 2, 3, 4, 5]
        for column in COLUMNS:
            assert (ours[column] - alone[column]).abs().max() < 1e-5, (mb, column)
    # the members really differ (else equality would prove nothing about pairing)
    finals = result.metrics[result.metrics.epoch == 5].train_loss
    assert finals.nunique() == 4


def test_members_that_stop_leave_and_the_others_go_on_unchanged(folds):
    members = [Member(seed, f, split) for seed in (3, 7) for f, split in enumerate(folds)]
    leave = {(3, 0): 2, (7, 1): 4}                 # (seed, fold) -> the epoch it stops at

    def stop(history):
        row = history[-1]
        return leave.get((row["seed"], row["fold"])) == row["epoch"]

    cfg = small(objective="ghm")
    result = train_ensemble(cfg, members, stop=stop)
    assert result.stopped[(3, 0)] == (2, "plateau") and result.stopped[(3, 1)] == (5, "cap")
    full = train_ensemble(cfg, members).metrics.set_index(["seed", "fold", "epoch"])
    part = result.metrics.set_index(["seed", "fold", "epoch"])
    assert len(part) == 2 + 5 + 5 + 4
    diff = (part[COLUMNS] - full.loc[part.index, COLUMNS]).abs().to_numpy().max()
    assert diff < 1e-6


def test_batched_ghm_weights_match_the_single_member_rule():
    gen = torch.Generator().manual_seed(0)
    edges = bin_edges(10)
    g = torch.rand(3, 17, generator=gen)
    g[0, :5] = 0.05                      # a crowded bin
    valid = torch.rand(3, 17, generator=gen) > 0.2
    acc = torch.rand(3, 10, generator=gen) * 4
    out = ghm_weights_batched(g, valid, edges, acc, 0.75)
    for m in range(3):   # each member alone: no member's terms leak into another's bins
        ref = ghm_weights(g[m], valid[m], edges, acc[m], 0.75)
        for key in ("weights", "acc", "counts", "bin_weights", "tot", "nonempty"):
            assert torch.equal(out[key][m], ref[key]), (m, key)
    assert not torch.equal(out["bin_weights"][0], out["bin_weights"][1])


def test_plateau_stop_waits_for_min_epochs_and_a_flat_window():
    flat = [{"val_acc": 0.5 + 0.01 * (k % 2), "val_raw_loss": 1.0 + 0.01 * (k % 3)}
            for k in range(30)]
    assert not plateau_stop(flat[:19], window=10, min_epochs=20)
    assert plateau_stop(flat[:20], window=10, min_epochs=20)
    falling = [{"val_acc": 0.5, "val_raw_loss": 2.0 - 0.05 * k} for k in range(30)]
    assert not plateau_stop(falling, window=10, min_epochs=20)


def test_get_ensemble_stores_and_finds_the_result_again(folds, monkeypatch):
    members = [Member(1, f, split) for f, split in enumerate(folds)]
    first = get_ensemble(small(objective="ghm", epochs=3), members, window=3, min_epochs=3)

    def refuse(*args, **kwargs):
        raise AssertionError("a stored ensemble must not be trained again")

    monkeypatch.setattr(E, "train_ensemble", refuse)
    again = get_ensemble(small(objective="ghm", epochs=3), members, window=3, min_epochs=3)
    pd.testing.assert_frame_equal(first.metrics, again.metrics)
    assert again.stopped == first.stopped
    with pytest.raises(AssertionError, match="must not"):   # another rule: another result
        get_ensemble(small(objective="ghm", epochs=3), members, window=3, min_epochs=4)


def test_train_ensemble_refuses_bad_members(folds):
    with pytest.raises(ValueError, match="distinct"):
        train_ensemble(small(), [Member(1, 0, folds[0]), Member(1, 0, folds[1])])
    with pytest.raises(ValueError, match="at least one"):
        train_ensemble(small(), [])
    with pytest.raises(ValueError, match="full runs"):
        train_ensemble(small(mode="prompt"), [Member(1, 0, folds[0])])


@pytest.mark.parametrize("objective", ["raw", "ghm"])
def test_the_ensemble_objective_is_each_members_run_objective(objective):
    """One batch, three members: the batched objective (terms, gradients, new GHM state) equals
    :func:`objective_terms` of each member's own GHM modules, run alone."""
    from gradkit.training.objective import ghm_modules, objective_terms

    cfg = small(objective=objective)
    gen = torch.Generator().manual_seed(1)
    logits = (torch.randn(3, 8, 6, generator=gen) * 2).requires_grad_()
    scores = (torch.randn(3, 8, generator=gen) * 10).requires_grad_()
    y = torch.randint(0, 6, (3, 8), generator=gen)
    a = ANGLES[y]
    a[2] = 0.0                                   # a member whose batch has no ranking pair
    acc = {"cls": torch.rand(3, cfg.bins, generator=gen), "rank": torch.rand(3, cfg.bins)}
    loss, terms, new_acc = E._objective(cfg, bin_edges(cfg.bins), acc, logits, scores, y, a)
    grads = torch.autograd.grad(loss.sum(), [logits, scores])
    for m in range(3):
        ghmc, ghm_rank = ghm_modules(cfg)
        ghmc.acc_sum.copy_(acc["cls"][m])
        ghm_rank.acc_sum.copy_(acc["rank"][m])
        state = SimpleNamespace(config=cfg, ghmc=ghmc, ghm_rank=ghm_rank)
        lm, sm = logits[m].detach().requires_grad_(), scores[m].detach().requires_grad_()
        alone, ref = objective_terms(state, lm, sm, y[m], a[m], update_state=True)
        ref_grads = torch.autograd.grad(alone, [lm, sm])
        for key, value in ref.items():
            assert torch.allclose(terms[key][m], value, rtol=1e-6, atol=1e-7), (m, key)
        assert torch.allclose(new_acc["cls"][m], ghmc.acc_sum)
        assert torch.allclose(new_acc["rank"][m], ghm_rank.acc_sum)
        assert torch.allclose(grads[0][m], ref_grads[0], atol=1e-7)
        assert torch.allclose(grads[1][m], ref_grads[1], atol=1e-7)
    assert terms["rank"][2] == 0 and torch.equal(new_acc["rank"][2], acc["rank"][2])
