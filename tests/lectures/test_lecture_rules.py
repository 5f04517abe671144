"""Notebook 05's rules: diagnosis only on trained models, equal-update comparison, feature
normalisation, the BatchNorm probe that always restores its layer."""

import numpy as np
import pandas as pd
import pytest
import torch

from gradkit.lectures import batchnorm, diagnosis, feature_norm, minibatch

FALLING = list(np.linspace(1.5, 0.5, 25))
FLAT = [0.4 + 0.001 * np.sin(k) for k in range(25)]


def test_a_model_whose_loss_still_falls_is_under_trained_not_model_bias():
    assert diagnosis.training_trend(FALLING) == "still improving"
    assert diagnosis.training_trend(FLAT) == "plateaued"
    assert diagnosis.training_trend([1.0, 0.5]) == "too short to test"
    v = diagnosis.diagnose(["a", "b"], [1, 3], [0.4, 1.2], [0.5, 1.3], bias_level=0.9,
                           gap_level=0.5, trends=["plateaued", "still improving"])
    assert v[0].startswith("a: fine") and v[1].startswith("b: under-trained")


def test_no_optimisation_verdict_against_an_under_trained_shallower_model():
    v = diagnosis.diagnose(["a", "b"], [1, 3], [0.2, 0.4], [0.3, 0.5], 0.9, 0.5,
                           trends=["still improving", "plateaued"])
    assert v[1].startswith("b: fine")
    with pytest.raises(ValueError, match="one entry"):
        diagnosis.diagnose(["a"], [1], [0.2], [0.3], 0.9, 0.5, trends=[])


def test_equal_updates_match_epochs_by_steps_per_epoch():
    h = {4: pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [1.0, 0.8, 0.6]}),
         36: pd.DataFrame({"epoch": range(1, 26), "train_loss": np.linspace(2, 1, 25)})}
    t = minibatch.at_equal_updates(h, 36)
    assert list(t.index) == [9, 18] and list(t[4]) == [1.0, 0.8]
    assert t.loc[18, 36] == pytest.approx(np.linspace(2, 1, 25)[17])


def test_standardising_makes_the_surface_round():
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(size=200), 50 * rng.normal(size=200)])
    assert feature_norm.condition_number(X) > 1000
    Z = feature_norm.standardise(X)
    rho = np.corrcoef(Z.T)[0, 1]
    assert feature_norm.condition_number(Z) == pytest.approx((1 + abs(rho)) / (1 - abs(rho)))
    surf = feature_norm.loss_surface(Z, Z @ [1.0, 2.0], np.array([1.0, 0.0]), np.array([2.0]))
    assert surf.shape == (1, 2) and surf[0, 0] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="constant"):
        feature_norm.standardise(np.ones((3, 2)))


def test_batchnorm_probe_restores_the_layer_even_after_a_failure():
    bn = torch.nn.BatchNorm1d(3).eval()
    bn(torch.randn(4, 3))  # eval: no update
    before = {k: v.clone() for k, v in bn.named_buffers()}
    with pytest.raises(RuntimeError), batchnorm.probing(bn):
        out = bn(torch.randn(8, 3) + 5)
        assert bn.training and not out.requires_grad and not torch.is_grad_enabled()
        raise RuntimeError("a failed check inside the probe")
    assert not bn.training and torch.is_grad_enabled()
    for k, v in bn.named_buffers():
        assert torch.equal(v, before[k]), k


def test_steps_to_and_train_linear():
    from gradkit.lectures import optimizers as opt
    from gradkit.lectures import softmax

    path = torch.tensor([[0.0, 1.0], [1.0, 0.01], [1.0, 0.0]], dtype=torch.float64)
    assert opt.steps_to(path, 1e-3) == 2 and opt.steps_to(path[:1], 1e-3) is None
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(20, 3, generator=gen), torch.arange(20) % 2
    lin = torch.nn.Linear(3, 2)
    curve = softmax.train_linear(lin, lambda z: torch.nn.functional.cross_entropy(z, y), x, y,
                                 lr=0.5, steps=30)
    assert len(curve) == 30 and curve[-1] < curve[0]


CREEPING = [0.002 * 0.97 ** k for k in range(25)]  # detectably falling, by a negligible amount


def test_convergence_ignores_a_negligible_fall_but_not_a_real_one():
    assert diagnosis.training_trend(CREEPING) == "still improving"
    assert diagnosis.convergence(CREEPING) == "converged"
    assert diagnosis.convergence(FALLING) == "not converged"
    assert diagnosis.convergence(FLAT) == "converged"
    assert diagnosis.convergence(FALLING[:5]) == "too short to test"
    stop = diagnosis.converged_stop(window=10, min_epochs=12)
    assert not stop(pd.DataFrame({"train_loss": FLAT[:11]}))  # before min_epochs
    assert stop(pd.DataFrame({"train_loss": FLAT[:12]}))
    assert not stop(pd.DataFrame({"train_loss": FALLING}))


def test_train_short_stops_when_the_stop_rule_says_so():
    from types import SimpleNamespace

    from gradkit.training import train_short

    torch.manual_seed(0)
    x, y = torch.randn(12, 4), torch.arange(12) % 3
    split = SimpleNamespace(x_train=x, y_train=y, x_val=x, y_val=y)
    h = train_short(torch.nn.Linear(4, 3), split, 30, 4, 1e-2, stop=lambda rows: len(rows) >= 5)
    assert list(h.epoch) == [1, 2, 3, 4, 5]


def _clips(mean, n=30, seed=0):
    return np.abs(mean + 0.05 * np.random.default_rng(seed).standard_normal(n))


def test_the_converged_recipe_reads_per_clip_losses_with_intervals():
    names, depths = ["shallow", "deep"], [1, 4]
    # the deeper model converged at a detectably higher training loss: optimisation
    v = diagnosis.diagnose_converged(names, depths, [_clips(0.1), _clips(0.5, seed=1)],
                                     [_clips(0.2), _clips(0.6)], ["converged"] * 2,
                                     bias_level=0.9, gap_level=0.5)
    assert v[0].startswith("shallow: fine") and v[1].startswith("deep: optimisation")
    assert "[" in v[1] and "paired by clip" in v[1]
    # a low training loss with a validation interval far above it: overfitting
    v = diagnosis.diagnose_converged(names, depths, [_clips(0.1), _clips(0.1, seed=1)],
                                     [_clips(1.2), _clips(0.2)], ["converged"] * 2, 0.9, 0.5)
    assert v[0].startswith("shallow: overfitting") and v[1].startswith("deep: fine")
    # a high training loss everywhere: model bias; a model still falling: no verdict
    v = diagnosis.diagnose_converged(names, depths, [_clips(1.5), _clips(0.1, seed=1)],
                                     [_clips(1.6), _clips(0.2)], ["converged", "not converged"],
                                     0.9, 0.5)
    assert v[0].startswith("shallow: model bias")
    assert v[1].startswith("deep: under-trained — not converged")
    # equal training losses (same clips, noise only): no optimisation verdict
    v = diagnosis.diagnose_converged(names, depths, [_clips(0.3), _clips(0.3, seed=1)],
                                     [_clips(0.35), _clips(0.35, seed=2)], ["converged"] * 2,
                                     0.9, 0.5)
    assert v[1].startswith("deep: fine")
    with pytest.raises(ValueError, match="one entry"):
        diagnosis.diagnose_converged(names, depths, [_clips(0.1)], [_clips(0.1)], [], 0.9, 0.5)


def test_a_converged_deeper_model_is_compared_with_a_shallower_one_still_training():
    # the shallower one is still falling and already lower: the deeper one's higher loss is the
    # optimiser's failure either way (training on only lowers the shallower one's loss)
    v = diagnosis.diagnose_converged(["shallow", "deep"], [1, 4],
                                     [_clips(0.6), _clips(1.7, seed=1)],
                                     [_clips(0.8), _clips(1.7, seed=2)],
                                     ["not converged", "converged"], 0.9, 0.5)
    assert v[0].startswith("shallow: under-trained") and v[1].startswith("deep: optimisation")
    # ... but a deeper model that has not converged gets no verdict
    v = diagnosis.diagnose_converged(["shallow", "deep"], [1, 4],
                                     [_clips(0.6), _clips(1.7, seed=1)],
                                     [_clips(0.8), _clips(1.7, seed=2)],
                                     ["converged", "not converged"], 0.9, 0.5)
    assert v[1].startswith("deep: under-trained")


def test_train_until_converged_trains_past_the_minimum_until_the_loss_settles():
    from types import SimpleNamespace

    torch.manual_seed(0)
    x = torch.randn(24, 4)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    split = SimpleNamespace(x_train=x, y_train=y, x_val=x[:12], y_val=y[:12])
    model = torch.nn.Linear(4, 3)
    h, losses = diagnosis.train_until_converged(model, split, min_epochs=12, max_epochs=200,
                                                batch_size=8, lr=0.05)
    assert 12 <= len(h) < 200
    assert diagnosis.convergence(h.train_loss.to_numpy()) == "converged"
    assert losses["train"].shape == (24,) and losses["val"].shape == (12,)
    assert np.mean(losses["train"]) == pytest.approx(h.train_loss.iloc[-1], rel=1e-5)
    capped, _ = diagnosis.train_until_converged(torch.nn.Linear(4, 3), split, 5, 8, 8, 1e-4)
    assert len(capped) == 8  # the cap comes before the test's 10-epoch window: no early stop
