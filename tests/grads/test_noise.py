"""gradkit.grads.noise on a problem whose per-sample gradients are known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from gradkit.analysis.noise import checkpoint_noise_scales
from gradkit.grads import per_sample_grads
from gradkit.grads.noise import (
    StreamingNoiseScale,
    _bootstrap,
    batch_deviations,
    batch_noise,
    gns_monte_carlo,
    noise_scale,
    two_batch_estimates,
)


def linear_regression(n=40, d=3, seed=0):
    """``l_i = ½ (w·x_i + b - y_i)²``, so ``∇_(w,b) l_i = r_i (x_i, 1)`` (``r_i``: residual)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = x @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)[:d] + 0.3 * torch.randn(
        n, generator=gen, dtype=torch.float64)
    model = nn.Linear(d, 1).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.2, -1.0, 1.5]], dtype=torch.float64)[:, :d])
        model.bias.fill_(0.4)
    r = (x @ model.weight[0] + model.bias - y).detach()
    G = torch.cat([r[:, None] * x, r[:, None]], dim=1)  # the closed form, [N, d + 1]
    return model, x, y, G


def half_squared_error(out, y):
    return 0.5 * (out.squeeze(-1) - y).pow(2).sum()


def test_per_sample_grads_match_the_closed_form():
    model, x, y, G = linear_regression()
    torch.testing.assert_close(per_sample_grads(model, half_squared_error, x, y), G)


def test_noise_scale_fields_are_the_definitions():
    _, _, _, G = linear_regression()
    Gn = G.numpy()
    n, b = Gn.shape[0], 8
    g = Gn.mean(0)
    gsq = float(g @ g)
    tr = float(np.mean(np.sum((Gn - g) ** 2, axis=1)))
    ns = noise_scale(G, b, n_boot=0)
    assert ns.grad_sq == pytest.approx(gsq, rel=1e-12)
    assert ns.trace_sigma == pytest.approx(tr, rel=1e-12)
    assert ns.gns == pytest.approx(tr / b * (n - b) / (n - 1) / gsq, rel=1e-12)
    assert ns.b_simple == pytest.approx(tr / gsq, rel=1e-12)
    assert ns.gns == pytest.approx(ns.b_simple / b * (n - b) / (n - 1), rel=1e-12)
    assert math.isnan(ns.gns_ci[0])  # no bootstrap asked for


def test_closed_form_agrees_with_sampling_batches_without_replacement():
    _, _, _, G = linear_regression()
    n = G.shape[0]
    for b in (1, 5, 20, n):
        exact = noise_scale(G, b, n_boot=0).gns
        sampled = gns_monte_carlo(G, b, draws=4000, seed=b)
        if b == n:  # the only batch is the data set: no noise at all
            assert exact == 0 and sampled == pytest.approx(0, abs=1e-20)
        else:  # 4000 draws: a relative standard error of a few per cent
            assert sampled == pytest.approx(exact, rel=0.08)
    # drawing with replacement would give tr Σ / B / ||g_D||², without the factor (N-B)/(N-1):
    # the sampled value (without replacement) must sit near the corrected one, not that one
    ns = noise_scale(G, 20, n_boot=0)
    sampled = gns_monte_carlo(G, 20, draws=4000, seed=1)
    assert abs(sampled - ns.gns) < 0.3 * abs(sampled - ns.b_simple / 20)


def test_batch_noise_is_exact_over_all_batches_and_the_sampler_draws_them():
    """``E_B ||g_B - g_D||²`` enumerated over every batch of a small set equals the closed form;
    each sampled deviation is the norm of a real batch mean's deviation."""
    import itertools

    _, _, _, G = linear_regression(n=8)
    g = G.mean(0)
    tr = noise_scale(G, 1, n_boot=0).trace_sigma
    for b in (1, 3, 8):
        every = [float((G[list(c)].mean(0) - g).square().sum())
                 for c in itertools.combinations(range(8), b)]
        assert batch_noise(tr, 8, b) == pytest.approx(np.mean(every), rel=1e-10, abs=1e-14)
    dev = batch_deviations(G, 3, draws=50, seed=4)
    gen = torch.Generator().manual_seed(4)  # the sampler's own draws, replayed
    for k in range(50):
        rows = torch.randperm(8, generator=gen)[:3]
        assert float(dev[k]) == pytest.approx(float((G[rows].mean(0) - g).square().sum()),
                                              rel=1e-9)
    assert gns_monte_carlo(G, 3, draws=50, seed=4) == pytest.approx(
        float(dev.mean()) / noise_scale(G, 3, n_boot=0).grad_sq)


def test_bootstrap_interval_is_seeded_and_brackets_the_estimate():
    _, _, _, G = linear_regression(n=60)
    a = noise_scale(G, 6, n_boot=500, seed=1)
    assert a == noise_scale(G, 6, n_boot=500, seed=1)
    assert a.gns_ci[0] < a.gns < a.gns_ci[1]
    assert a.b_simple_ci[0] < a.b_simple < a.b_simple_ci[1]
    # the Gram-matrix bootstrap equals resampling the rows and recomputing from scratch
    gsq_b, tr_b = _bootstrap(G, 20, seed=1)
    c = np.random.default_rng(1).multinomial(60, np.full(60, 1 / 60), size=20)
    for k, counts in enumerate(c):
        rows = G[torch.from_numpy(np.repeat(np.arange(60), counts))]
        again = noise_scale(rows, 6, n_boot=0)
        assert gsq_b[k] == pytest.approx(again.grad_sq, rel=1e-9)
        assert tr_b[k] == pytest.approx(again.trace_sigma, rel=1e-9)
    # replicates are bias-corrected: even where B_simple is of the order of N (the plain
    # plug-in replicates then sit almost all below the estimate) the interval brackets it
    gen = torch.Generator().manual_seed(2)
    noise = torch.randn(60, 200, generator=gen, dtype=torch.float64)
    noise -= noise.mean(0)
    tr = float(noise.square().sum(1).mean())
    signal = torch.full((200,), math.sqrt(1.5 * tr / 60 / 200), dtype=torch.float64)
    hard = noise_scale(noise + signal, 6, n_boot=1000, seed=1)
    assert hard.b_simple == pytest.approx(60 / 1.5)  # ||g_D||² = 1.5 tr Σ / N by construction
    assert hard.b_simple_ci[0] < hard.b_simple < hard.b_simple_ci[1]
    gsq_b, tr_b = _bootstrap(noise + signal, 1000, seed=1)
    assert np.quantile(tr_b / gsq_b, 0.95) < hard.b_simple  # what plain replicates would do
    # pure noise around a zero mean: the upper bound is unbounded
    assert noise_scale(noise + 1e-6, 6, n_boot=500).b_simple_ci[1] == math.inf
    wide = noise_scale(G[:12], 6, n_boot=500, seed=1)
    assert (wide.b_simple_ci[1] - wide.b_simple_ci[0]) > (a.b_simple_ci[1] - a.b_simple_ci[0])


@pytest.mark.parametrize("n_data", [None, 40])
def test_streaming_estimator_converges_to_the_exact_one(n_data):
    _, _, _, G = linear_regression(n=40)
    n = G.shape[0]
    exact = noise_scale(G, 4, n_boot=0)
    est = StreamingNoiseScale(4, 16, n_data=n_data)
    gen = torch.Generator().manual_seed(3)
    for _ in range(6000):
        perm = torch.randperm(n, generator=gen)
        est.update(G[perm[:4]].mean(0), G[perm[:16]].mean(0))
    if n_data is None:
        # the i.i.d. formulas estimate the population quantities behind D:
        # S -> tr Σ · N/(N-1) and |G|² -> ||g_D||² - tr Σ/(N-1)
        tr, gsq = exact.trace_sigma * n / (n - 1), exact.grad_sq - exact.trace_sigma / (n - 1)
    else:
        tr, gsq = exact.trace_sigma, exact.grad_sq
    assert est.trace_sigma == pytest.approx(tr, rel=0.05)
    assert est.grad_sq == pytest.approx(gsq, rel=0.05)
    assert est.b_simple == pytest.approx(tr / gsq, rel=0.08)
    if n_data is not None:
        assert est.gns(4) == pytest.approx(exact.gns, rel=0.08)


def test_streaming_accepts_squared_norms_and_ema():
    est = StreamingNoiseScale(2, 8, ema=0.9)
    for _ in range(50):  # |G|² = 1, S = 4: E||g_B||² = 1 + 4/B
        est.update(1 + 4 / 2, 1 + 4 / 8)
    assert est.trace_sigma == pytest.approx(4)
    assert est.grad_sq == pytest.approx(1)
    assert est.b_simple == pytest.approx(4)
    assert math.isnan(StreamingNoiseScale(2, 8).b_simple)  # nothing seen yet


def test_bad_arguments_are_named():
    _, _, _, G = linear_regression()
    with pytest.raises(ValueError, match="batch_size"):
        noise_scale(G, 0)
    with pytest.raises(ValueError, match="batch_size"):
        noise_scale(G, G.shape[0] + 1)
    with pytest.raises(ValueError, match="Tensor\\[N, P\\]"):
        noise_scale(G[0], 2)
    with pytest.raises(ValueError, match="NaN"):
        noise_scale(G * float("nan"), 2)
    with pytest.raises(ValueError, match="b_small must be < b_big"):
        StreamingNoiseScale(8, 2)


class FakeRun:
    """The part of gradkit.training.Run that checkpoint_noise_scales uses: two 'checkpoints'."""

    def __init__(self):
        self.model, self.x, self.y, self.G = linear_regression(n=30)
        self.split = type("Split", (), {"x_train": self.x, "y_train": self.y})()
        self.config = type("Config", (), {"batch_size": 5})()
        self.checkpoint_epochs = [1, 2]

    def load_model(self, epoch):
        model = nn.Linear(3, 1).double()
        model.load_state_dict(self.model.state_dict())
        with torch.no_grad():
            model.bias.add_(epoch - 1)  # epoch 2 differs: every residual grows by 1
        return model


def test_checkpoint_noise_scales_walks_the_checkpoints():
    run = FakeRun()
    table, norms = checkpoint_noise_scales(run, half_squared_error, n_boot=200)
    assert list(table.epoch) == [1, 2] and list(norms) == [1, 2]
    first = noise_scale(run.G, 5, n_boot=200)
    assert table.gns[0] == pytest.approx(first.gns) and table.batch_size[0] == 5
    assert table.gns_lo[0] == pytest.approx(first.gns_ci[0])
    torch.testing.assert_close(norms[1], run.G.norm(dim=1))
    assert table.gns[1] != pytest.approx(table.gns[0])


def test_gns_variants_follow_their_definitions():
    from gradkit.analysis.noise import gns_variants
    from gradkit.grads import Gram

    _, _, _, G = linear_regression(n=40)
    mask = torch.tensor([True, True, False, False])
    v = gns_variants(Gram.of_rows(G), 8, {"first two": Gram.of_rows(G[:, mask])}, p=4,
                     p_total=10)
    exact = noise_scale(G, 8, n_boot=0)
    assert v["exact"] == pytest.approx(exact.gns)
    assert v["B = N, with replacement"] == pytest.approx(exact.trace_sigma / 40 / exact.grad_sq)
    assert v["per-parameter mean"] == pytest.approx(exact.gns / 4)
    assert v["per-parameter mean, all parameters"] == pytest.approx(exact.gns / 10)
    unit = G / G.norm(dim=1, keepdim=True)
    assert v["unit directions"] == pytest.approx(noise_scale(unit, 8, n_boot=0).gns)
    assert v["first two only"] == pytest.approx(noise_scale(G[:, :2], 8, n_boot=0).gns)


def test_streaming_with_sizes_per_update_equals_fixed_sizes():
    """The DDP hook's use: no sizes at construction, each step names its own (fractional
    harmonic means included); the same pairs give the same estimates as fixed sizes."""
    gen = torch.Generator().manual_seed(0)
    pairs = [(1 + 4 / 2 + 0.3 * float(torch.randn(1, generator=gen)), 1 + 4 / 8) for _ in range(20)]
    fixed, free = StreamingNoiseScale(2, 8, ema=0.9), StreamingNoiseScale(ema=0.9)
    for small, big in pairs:
        assert fixed.update(small, big) == free.update(small, big, b_small=2, b_big=8)
    assert (free.trace_sigma, free.grad_sq, free.b_simple) == (
        fixed.trace_sigma, fixed.grad_sq, fixed.b_simple)
    gsq, tr = two_batch_estimates(1 + 4 / 2.5, 1 + 4 / 8, 2.5, 8)   # E||g_b||² = 1 + 4/b
    assert gsq == pytest.approx(1) and tr == pytest.approx(4)
    with pytest.raises(ValueError, match="pass b_small and b_big"):
        free.update(1.0, 1.0)
    with pytest.raises(ValueError, match="b_small < b_big"):
        free.update(1.0, 1.0, b_small=8, b_big=8)
    with pytest.raises(ValueError, match="both b_small and b_big"):
        StreamingNoiseScale(2)
