"""Notebook 05's demonstrations, one gradkit.lectures call each, against PyTorch's own
implementations and closed forms (the notebook shows these numbers; here they are asserted)."""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pytest
import torch
from torch import nn

import gradkit.lectures as lec
from gradkit.grads.hessian import HessianOperator, dense_hessian, flat_loss
from gradkit.lectures import batchnorm

matplotlib.use("Agg")


def _tiny_problem(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x = torch.randn(20, 3, dtype=torch.float64)
    y = torch.randint(0, 2, (20,))
    return model, x, y


# ---- critical points and the Hessian ---------------------------------------------------------
def test_critical_point_table_finds_the_saddle_and_a_minimum_of_the_valley():
    starts = {"near the saddle": torch.tensor([0.05, 0.1], dtype=torch.float64),
              "near a minimum": torch.tensor([0.8, -0.1], dtype=torch.float64)}
    table, points = lec.critical_point_table(lec.saddle_valley, starts, tol=1e-10)
    assert list(table.kind) == ["saddle point", "local minimum"]
    theta, ev = points["near the saddle"]
    torch.testing.assert_close(theta, torch.zeros(2, dtype=torch.float64), atol=1e-8, rtol=0)
    torch.testing.assert_close(ev, torch.tensor([-1.0, 40.0], dtype=torch.float64))
    theta, ev = points["near a minimum"]  # Hessian diag(3x² − 1, 40) at (1, 0)
    torch.testing.assert_close(ev, torch.tensor([2.0, 40.0], dtype=torch.float64))
    assert table.loc["near a minimum", "loss"] == pytest.approx(0.0, abs=1e-16)
    assert list(table[["# λ<0", "# λ>0"]].sum(axis=1)) == [2, 2]
    assert (table["|∇L| reached"] <= 1e-10).all()


def test_loss_along_a_quadratic_is_half_lambda_s_squared():
    A = torch.diag(torch.tensor([-2.0, 3.0], dtype=torch.float64))

    def loss(theta):
        return 0.5 * theta @ A @ theta

    theta = torch.zeros(2, dtype=torch.float64)
    s = torch.linspace(-1, 1, 11, dtype=torch.float64)
    along = lec.loss_along(loss, theta, {"u1": torch.tensor([1.0, 0.0], dtype=torch.float64),
                                         "u2": torch.tensor([0.0, 1.0], dtype=torch.float64)}, s)
    torch.testing.assert_close(along["u1"], -1.0 * s**2)
    torch.testing.assert_close(along["u2"], 1.5 * s**2)


def test_lanczos_against_dense_passes_on_the_truth_and_raises_on_a_wrong_spectrum():
    model, x, y = _tiny_problem()
    dense = torch.linalg.eigvalsh(dense_hessian(model, nn.functional.cross_entropy, x, y))
    op = HessianOperator(model, nn.functional.cross_entropy, x, y)
    top, low = lec.lanczos_against_dense(op, dense, k=3)
    torch.testing.assert_close(top.eigenvalues, dense.flip(0)[:3], rtol=1e-6, atol=1e-9)
    shifted = dense.clone()
    shifted[-1] += 0.05  # a wrong largest eigenvalue must not pass
    with pytest.raises(ValueError, match="largest"):
        lec.lanczos_against_dense(op, shifted, k=3)
    with pytest.raises(ValueError, match="k = "):
        lec.lanczos_against_dense(op, dense[:2], k=3)


def test_hessian_summary_matches_the_dense_hessian():
    model, x, y = _tiny_problem(1)
    H = dense_hessian(model, nn.functional.cross_entropy, x, y)
    ev = torch.linalg.eigvalsh(H)
    op = HessianOperator(model, nn.functional.cross_entropy, x, y)
    s = lec.hessian_summary(op, n_probes=3, n_steps=op.n_params, n_trace=200)
    assert s.n_params == H.shape[0] == len(ev)
    assert s.lam_max == pytest.approx(float(ev[-1]), rel=1e-3)
    assert s.lam_min == pytest.approx(float(ev[0]), rel=1e-2, abs=1e-4)
    assert abs(s.trace - float(H.trace())) <= 5 * s.trace_se + 1e-9
    assert s.per_probe.shape == (3, len(s.grid))
    dx = float(s.grid[1] - s.grid[0])
    torch.testing.assert_close(s.per_probe.sum(1) * dx, torch.ones(3, dtype=torch.float64),
                               atol=1e-2, rtol=0)  # each probe's density integrates to 1
    assert 0.0 <= s.near_zero <= 1.0
    with pytest.raises(ValueError, match="n_probes"):
        lec.hessian_summary(op, n_probes=0)


# ---- batch size ------------------------------------------------------------------------------
def test_noise_table_closed_form_column_and_measurement():
    torch.manual_seed(0)
    G = torch.randn(10, 7, dtype=torch.float64)
    table = lec.noise_table(G, [1, 3, 10], n_draws=4000)
    g = G.mean(0)
    tr_sigma = float(((G - g) ** 2).sum(1).mean())
    for b in (1, 3, 10):
        assert table.loc[b, "trΣ/B·(N−B)/(N−1)"] == pytest.approx(tr_sigma / b * (10 - b) / 9)
    assert abs(table.loc[3, "z"]) < 5  # the sampler is unbiased (4000 draws)
    assert math.isnan(table.loc[10, "z"]) and table.loc[10, "sampled E‖g_B − g‖²"] < 1e-20
    assert lec.expected_minibatch_noise(G, 1) == pytest.approx(tr_sigma)


# ---- update rules, variants and the schedule against torch -----------------------------------
def test_rules_against_torch_are_rounding_and_a_wrong_twin_is_not():
    model, x, y = _tiny_problem()
    loss, theta0 = flat_loss(model, nn.functional.cross_entropy, x, y)
    table = lec.rules_against_torch({"2-D": (lec.saddle_valley_grad, lec.SADDLE_VALLEY_START, 40),
                                     "net": (torch.func.grad(loss), theta0, 8)}, lr=0.02, beta=0.8)
    assert len(table) == 2 * len(lec.RULES)
    assert table["max |ours − torch.optim|"].max() < 1e-12
    ours = lec.run_rule("Adam", lec.saddle_valley_grad, lec.SADDLE_VALLEY_START, 40, 0.02)
    other = lec.torch_path(lec.torch_optimizer("Adam", 0.03), lec.saddle_valley_grad,
                           lec.SADDLE_VALLEY_START, 40)
    assert float((ours - other).abs().max()) > 1e-3  # the comparison can see a difference
    with pytest.raises(ValueError, match="unknown rule"):
        lec.torch_optimizer("Nesterov", 0.1)


def test_run_rule_maps_beta_to_each_rules_own_parameter():
    start, g = lec.SADDLE_VALLEY_START, lec.saddle_valley_grad
    torch.testing.assert_close(lec.run_rule("momentum", g, start, 20, 0.01, beta=0.5),
                               lec.momentum(g, start, 20, 0.01, mu=0.5))
    torch.testing.assert_close(lec.run_rule("RMSProp", g, start, 20, 0.01, beta=0.5),
                               lec.rmsprop(g, start, 20, 0.01, alpha=0.5))
    torch.testing.assert_close(lec.run_rule("Adam", g, start, 20, 0.01, beta=0.5),
                               lec.adam(g, start, 20, 0.01, betas=(0.5, 0.999)))
    assert list(lec.run_rules(g, start, 5, 0.01, names=("AdaGrad",))) == ["AdaGrad"]
    with pytest.raises(ValueError, match="unknown rule"):
        lec.run_rule("SGDW", g, start, 5, 0.01)


def test_variants_equal_their_twins():
    table = lec.variants_against_torch(lec.saddle_valley_grad, lec.SADDLE_VALLEY_START, 80,
                                       lr=0.05, beta=0.9, warmup=10)
    assert len(table) == 3
    assert table["max |difference|"].max() < 1e-12


def test_torch_warmup_cosine_equals_ours_and_the_closed_form():
    W, T, floor = 6, 40, 0.1
    theirs = lec.torch_warmup_cosine(W, T, floor)
    assert len(theirs) == T
    ours = [lec.warmup_cosine(t, W, T, floor) for t in range(T)]
    np.testing.assert_allclose(theirs, ours, rtol=1e-9, atol=1e-12)
    assert theirs[0] == pytest.approx(1 / W) and theirs[W] == pytest.approx(1.0)
    t = T - 1
    assert theirs[t] == pytest.approx(floor + (1 - floor) * (1 + math.cos(math.pi * (t - W)
                                                                          / (T - W))) / 2)
    assert len(lec.torch_warmup_cosine(W, T, steps=7)) == 7
    with pytest.raises(ValueError, match="warmup"):
        lec.torch_warmup_cosine(0, T)


def test_warmup_cosine_schedule_is_peak_times_the_factor_and_checks_early():
    schedule = lec.warmup_cosine_schedule(4, 20, floor=0.2, peak=0.5)
    assert [schedule(t) for t in range(25)] == [0.5 * lec.warmup_cosine(t, 4, 20, 0.2)
                                                for t in range(25)]
    with pytest.raises(ValueError, match="warmup"):
        lec.warmup_cosine_schedule(20, 20)


# ---- softmax ---------------------------------------------------------------------------------
def test_softmax_formulas_against_autograd():
    diffs = lec.gradients_against_autograd(n=6, n_classes=5, seed=3)
    assert set(diffs) == {"softmax", "cross-entropy", "∂CE/∂z", "∂MSE/∂z"}
    assert max(diffs.values()) < 1e-12


def test_margin_sweep_closed_forms():
    m = torch.tensor([0.0, 12.0], dtype=torch.float64)
    probs, g_ce, g_mse = lec.margin_sweep(m)
    torch.testing.assert_close(probs[0], torch.full((3,), 1 / 3, dtype=torch.float64))
    # ‖y' − e₀‖ at uniform y' = √((2/3)² + 2·(1/3)²)
    assert float(g_ce[0]) == pytest.approx(math.sqrt(6) / 3)
    e = [math.exp(-6.0), math.exp(6.0), 1.0]  # logits (−m/2, m/2, 0) at m = 12
    p = [v / sum(e) for v in e]
    assert float(g_ce[1]) == pytest.approx(math.hypot(p[0] - 1, p[1], p[2]), rel=1e-12)
    # at uniform y' the Jacobian term p·r is 0, so ∂e/∂z = y'·2(y' − e₀), norm 2√6/9
    assert float(g_mse[0]) == pytest.approx(2 * math.sqrt(6) / 9)
    assert float(g_mse[1]) < 0.01 * float(g_ce[1])  # saturated and wrong: MSE's gradient vanishes


def test_saturated_start_cross_entropy_recovers_and_mse_does_not():
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(3).repeat(10)
    x = torch.nn.functional.one_hot(y, 3).double() * 2 + 0.1 * torch.randn(30, 3, generator=gen,
                                                                           dtype=torch.float64)
    curves = lec.saturated_start_curves(x, y, 3, lr=0.5, steps=100)
    assert curves["cross-entropy"][0] == curves["MSE"][0] > 5  # same saturated start
    assert curves["cross-entropy"][-1] < 0.5
    assert curves["MSE"][-1] > 0.9 * curves["MSE"][0]


# ---- feature normalisation, Hoeffding --------------------------------------------------------
def test_surface_around_optimum_is_centred_on_least_squares():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 2)) * [1.0, 30.0]
    t = X @ [0.5, -0.02] + 0.1 * rng.normal(size=50)
    w1, w2, L, kappa = lec.surface_around_optimum(X, t, n=121)
    w_opt = np.linalg.lstsq(X, t, rcond=None)[0]
    assert w1[60] == pytest.approx(w_opt[0]) and w2[60] == pytest.approx(w_opt[1])
    assert np.unravel_index(L.argmin(), L.shape) == (60, 60)
    assert kappa == pytest.approx(lec.condition_number(X))


def test_bound_table_intervals_and_bound():
    table = lec.bound_table([20, 200], [1, 10], eps=0.1, noise=0.1, n_trials=4000)
    assert len(table) == 4 and table.consistent.all()
    assert (table["95 % CI low"] <= table["simulated P(bad)"]).all()
    assert (table["simulated P(bad)"] <= table["95 % CI high"]).all()
    for _, r in table.iterrows():
        assert r.bound == pytest.approx(float(lec.hoeffding_bound(r.N, 0.1, r["|H|"])))
    from gradkit.lectures.hoeffding import evenly_spaced_thresholds
    np.testing.assert_allclose(evenly_spaced_thresholds(4), [0.125, 0.375, 0.625, 0.875])
    with pytest.raises(ValueError, match="size"):
        evenly_spaced_thresholds(0)


# ---- BatchNorm -------------------------------------------------------------------------------
def test_training_stream_covers_every_row_once_per_epoch():
    x = torch.arange(10.0)[:, None, None]
    stream = lec.training_stream(x, 4, 3)
    assert [len(b) for b in stream] == [4, 4, 2] * 3
    for e in range(3):
        rows = torch.cat(stream[3 * e:3 * e + 3]).flatten()
        assert sorted(rows.tolist()) == list(range(10))


def test_running_stats_against_torch_and_output_spread():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(12, 3, 5, generator=gen, dtype=torch.float64) * 2 + 1
    batches = lec.training_stream(x, 4, 5)
    run = lec.running_stats_against_torch(batches, 0.9)
    assert max(run.mean_diff, run.var_diff, run.output_diff) < 1e-12
    assert run.other_convention_diff > 1e-2
    assert not run.layer.training
    torch.testing.assert_close(run.layer.running_mean, run.mean[-1])
    buffers = {k: v.clone() for k, v in run.layer.named_buffers()}
    outs, alone, eval_diff = lec.output_spread(run.layer, x[:1], x[1:], 4, n_probes=10)
    assert outs.shape == (10, 3, 5) and alone.shape == (3, 5)
    assert eval_diff < 1e-12 and float(outs.std(0).max()) > 1e-3
    expected = batchnorm.batchnorm_output(x[:1], run.layer.running_mean, run.layer.running_var,
                                          run.layer.weight, run.layer.bias)[0]
    torch.testing.assert_close(alone, expected.detach())
    for k, v in run.layer.named_buffers():
        torch.testing.assert_close(v, buffers[k])  # the probe left the layer as it was
    assert not run.layer.training
    with pytest.raises(ValueError, match="batch_size"):
        lec.output_spread(run.layer, x[:1], x[1:], 1)


# ---- the slider frames -----------------------------------------------------------------------
def test_scrubber_frames_draw_every_rule_or_the_three_with_a_beta():
    import matplotlib.pyplot as plt

    from gradkit.viz import optim

    fig = plt.figure()
    optim.draw_lr_frame(fig, 0.02)
    labels = {line.get_label() for line in fig.axes[0].get_lines()}
    assert set(lec.RULES) <= labels
    fig2 = plt.figure()
    optim.draw_beta_frame(fig2, 0.5)
    labels = {line.get_label() for line in fig2.axes[0].get_lines()}
    assert {"momentum", "RMSProp", "Adam"} <= labels and "AdaGrad" not in labels
    plt.close(fig)
    plt.close(fig2)
