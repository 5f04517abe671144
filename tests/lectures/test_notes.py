"""gradkit.notes: the small computations behind notebook 05."""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from gradkit.lectures import batchnorm, critical_points, diagnosis, hoeffding, minibatch, softmax
from gradkit.lectures.optimizers import saddle_valley
from gradkit.models import cnn
from gradkit.training import short


def test_batchnorm_running_stats_equal_torch_with_momentum_one_minus_p():
    torch.manual_seed(0)
    p = 0.9
    batches = [torch.randn(8, 3, 5) * (1 + k) + k for k in range(12)]
    bn = nn.BatchNorm1d(3, momentum=1 - p)  # torch's momentum is the weight of the NEW value
    bn.train()
    torch_means, torch_vars = [], []
    for b in batches:
        out = bn(b)
        torch_means.append(bn.running_mean.clone())
        torch_vars.append(bn.running_var.clone())
        mean, var = batchnorm.batch_stats(b)  # training mode normalises with the biased variance
        expected = batchnorm.batchnorm_output(b, mean, var, bn.weight, bn.bias)
        torch.testing.assert_close(out, expected)
    means, variances = batchnorm.batchnorm_running_stats(batches, p)
    torch.testing.assert_close(means, torch.stack(torch_means))
    torch.testing.assert_close(variances, torch.stack(torch_vars))
    bn.eval()
    x = batches[0][:2]
    torch.testing.assert_close(
        bn(x), batchnorm.batchnorm_output(x, means[-1], variances[-1], bn.weight, bn.bias))
    # the other convention (momentum = p) would be clearly different
    wrong, _ = batchnorm.batchnorm_running_stats(batches, 1 - p)
    assert not torch.allclose(wrong, means, atol=1e-2)


def test_moving_average_recursion():
    v = torch.tensor([1.0, 2.0, 4.0])
    out = batchnorm.moving_average(v, 0.5, init=0.0)
    torch.testing.assert_close(out, torch.tensor([0.5, 1.25, 2.625]))
    with pytest.raises(ValueError, match="p must"):
        batchnorm.moving_average(v, 1.5)


def test_softmax_gradients_match_autograd_and_mse_vanishes_when_saturated():
    torch.manual_seed(0)
    z = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 3, 1, 1, 2])
    torch.testing.assert_close(softmax.softmax(z), torch.softmax(z, -1))
    ce = nn.functional.cross_entropy(z, y, reduction="sum")
    onehot = nn.functional.one_hot(y, 4).double()
    torch.testing.assert_close(ce, -(onehot * torch.log(softmax.softmax(z))).sum())
    (g_ce,) = torch.autograd.grad(ce, z)
    torch.testing.assert_close(g_ce, softmax.ce_grad_logits(z.detach(), y))
    mse = ((onehot - torch.softmax(z, -1)) ** 2).sum()
    (g_mse,) = torch.autograd.grad(mse, z)
    torch.testing.assert_close(g_mse, softmax.mse_grad_logits(z.detach(), y))
    # confidently wrong: target 0, logit of class 1 far ahead
    wrong = torch.tensor([[0.0, 12.0, 0.0]], dtype=torch.float64)
    t0 = torch.tensor([0])
    assert softmax.ce_grad_logits(wrong, t0).norm() > 1.0
    assert softmax.mse_grad_logits(wrong, t0).norm() < 1e-4


def test_minibatch_noise_formula_is_exact_over_all_subsets():
    torch.manual_seed(0)
    G = torch.randn(7, 5, dtype=torch.float64)
    g = G.mean(0)
    for B in (1, 2, 3, 7):
        exact = np.mean([float(((G[list(c)].mean(0) - g) ** 2).sum())
                         for c in itertools.combinations(range(7), B)])
        assert minibatch.expected_minibatch_noise(G, B) == pytest.approx(exact, rel=1e-10)
        measured, se = minibatch.minibatch_gradient_noise(G, B, n_draws=4000, seed=1)
        assert abs(measured - exact) <= 5 * se + 1e-12
    assert minibatch.expected_minibatch_noise(G, 7) == pytest.approx(0.0, abs=1e-12)
    # one sampler and one formula for the whole package: notebook 02's noise scale uses them too
    from gradkit.grads import noise

    ns = noise.noise_scale(G, 3, n_boot=0)
    assert minibatch.expected_minibatch_noise(G, 3) == pytest.approx(ns.gns * ns.grad_sq, rel=1e-12)
    measured, _ = minibatch.minibatch_gradient_noise(G, 3, n_draws=100, seed=2)
    assert measured == pytest.approx(noise.gns_monte_carlo(G, 3, draws=100, seed=2) * ns.grad_sq,
                                     rel=1e-12)


def test_hoeffding_simulation_matches_exact_binomial_for_one_hypothesis():
    n, eps, noise = 50, 0.1, 0.1
    sim = hoeffding.simulate_bad_training_sets(n, eps, np.array([0.3]), noise, n_trials=40000)
    p = float(hoeffding.threshold_losses(np.array([0.3]), noise)[0])  # 0.26
    k = np.arange(n + 1)
    exact = float(stats.binom.pmf(k, n, p)[np.abs(k / n - p) > eps].sum())
    se = math.sqrt(exact * (1 - exact) / 40000)
    assert abs(sim - exact) < 5 * se
    assert sim <= hoeffding.hoeffding_bound(n, eps, 1)


def test_hoeffding_bad_probability_grows_with_h_shrinks_with_n_and_stays_under_bound():
    eps = 0.1
    h10, h100 = np.linspace(0.05, 0.95, 10), np.linspace(0.005, 0.995, 100)
    p_small = hoeffding.simulate_bad_training_sets(100, eps, h10, n_trials=5000)
    p_large_h = hoeffding.simulate_bad_training_sets(100, eps, h100, n_trials=5000)
    p_large_n = hoeffding.simulate_bad_training_sets(400, eps, h10, n_trials=5000)
    assert p_large_h >= p_small > p_large_n
    assert p_small <= hoeffding.hoeffding_bound(100, eps, 10)
    assert float(hoeffding.hoeffding_bound(10, eps, 100)) == 1.0


def test_find_critical_point_reaches_the_saddle_and_classifies_it():
    theta, norms = critical_points.find_critical_point(saddle_valley, torch.tensor([0.2, 0.5],
                                                                         dtype=torch.float64))
    assert norms[-1] <= 1e-9 and norms[0] > 1
    torch.testing.assert_close(theta, torch.zeros(2, dtype=torch.float64), atol=1e-9, rtol=0)
    H = torch.func.hessian(saddle_valley)(theta)
    assert critical_points.classify_critical_point(torch.linalg.eigvalsh(H)) == "saddle point"
    start = torch.tensor([0.8, 0.1], dtype=torch.float64)
    theta, _ = critical_points.find_critical_point(saddle_valley, start)
    torch.testing.assert_close(theta, torch.tensor([1.0, 0.0], dtype=torch.float64))


def _ev(*values):
    return torch.tensor(values, dtype=torch.float64)


def test_classify_critical_point():
    assert critical_points.classify_critical_point(_ev(1.0, 2.0)) == "local minimum"
    assert critical_points.classify_critical_point(_ev(-1.0, -2.0)) == "local maximum"
    assert critical_points.classify_critical_point(_ev(-1.0, 2.0)) == "saddle point"
    assert critical_points.classify_critical_point(_ev(0.0, 2.0)).startswith("degenerate")


def test_diagnose_recipe():
    v = diagnosis.diagnose(["shallow", "deep"], [2, 8], [0.5, 0.9], [0.6, 1.0], 1.0, 0.5)
    assert v[0].startswith("shallow: fine") and v[1].startswith("deep: optimisation")
    v = diagnosis.diagnose(["a", "b"], [1, 2], [1.5, 1.4], [1.6, 1.5], 1.0, 0.5)
    assert v[0].startswith("a: model bias") and v[1].startswith("b: model bias")
    v = diagnosis.diagnose(["a", "b"], [1, 2], [0.5, 0.1], [0.6, 0.9], 1.0, 0.5)
    assert v[1].startswith("b: overfitting")


def test_train_short_is_seeded_and_learns_on_tiny_data():
    torch.manual_seed(0)
    x = torch.randn(24, 1, 6, 5)
    y = torch.arange(24) % 3
    x[:, 0, 0, 0] += 3 * y  # a learnable signal
    split = SimpleNamespace(x_train=x, y_train=y, x_val=x[:6], y_val=y[:6])
    runs = []
    for _ in range(2):
        model = cnn.plain_cnn(2, width=4, n_classes=3, seed=1)
        runs.append(short.train_short(model, split, epochs=8, batch_size=8, lr=1e-2))
    df = runs[0]
    assert list(df.columns[:3]) == ["epoch", "seconds", "lr"] and len(df) == 8
    assert df.train_loss.iloc[-1] < df.train_loss.iloc[0]
    assert df.train_loss.tolist() == runs[1].train_loss.tolist()  # deterministic
    sched = short.train_short(cnn.plain_cnn(2, 4, 3), split, epochs=2, batch_size=8, lr=0.1,
                              schedule=lambda t: 0.5 ** t)
    assert sched.lr.tolist() == pytest.approx([0.1 * 0.5**3, 0.1 * 0.5**6])
