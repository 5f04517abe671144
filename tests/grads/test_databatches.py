"""A whole data set as an iterable of batches: norms, the Gram matrix in blocks, the sketch, the
noise scale and its interval, and the Hessian's top eigenvalues, each equal to the one-batch
result; bad iterables refused by name."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from test_hessian import TwoHeads
from test_hessian import loss_fn as two_heads_loss
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from gradkit.grads import (
    Gram,
    gradient_gram,
    gradient_sketch,
    noise_scale,
    per_sample_grads,
    per_sample_norms,
    top_eigenvalues,
)
from gradkit.grads import hessian as hs


def ce(out, y):
    return F.cross_entropy(out, y)


def problem(n=11, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv1d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 6, 4),
                          nn.GroupNorm(2, 4), nn.Linear(4, 3))
    x, y = torch.randn(n, 2, 8), torch.randint(0, 3, (n,))
    return model, x, y


def loop_grads(model, x, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return per_sample_grads(model, ce, x, y, method="loop").double()


@pytest.mark.parametrize("batch_size", [11, 4, 3, 1])
def test_gram_norms_and_sketch_of_a_loader_equal_the_one_batch_ones(batch_size):
    model, x, y = problem()
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size)
    G = loop_grads(model, x, y)
    want = G @ G.T
    K = gradient_gram(model, ce, loader)
    torch.testing.assert_close(K, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
    norms = per_sample_norms(model, ce, loader)
    torch.testing.assert_close(norms, G.norm(dim=1), rtol=1e-5, atol=1e-7)
    model64, loader64 = model.double(), DataLoader(TensorDataset(x.double(), y), batch_size)
    one = gradient_sketch(model64, ce, x.double(), y, k=8, seed=3)  # float64: no rounding gap
    torch.testing.assert_close(gradient_sketch(model64, ce, loader64, k=8, seed=3), one,
                               rtol=1e-9, atol=1e-12)
    model.float()
    blocks = gradient_gram(model, ce, list(zip(x.split(batch_size), y.split(batch_size),
                                               strict=True)), by_layer=True)
    assert list(blocks) == [k for k, _ in model.named_parameters()]
    torch.testing.assert_close(sum(blocks.values()), K, rtol=1e-10, atol=1e-12)


def test_the_noise_scale_and_its_interval_from_a_loader_equal_the_one_batch_ones():
    model, x, y = problem(n=12, seed=1)
    model, x = model.double(), x.double()  # |g_D|² is a small difference: no float32 rounding
    loader = DataLoader(TensorDataset(x, y), batch_size=5)
    chunked = noise_scale(Gram(gradient_gram(model, ce, loader)), batch_size=4, n_boot=200)
    one = noise_scale(loop_grads(model, x, y), batch_size=4, n_boot=200)
    assert one.gns_ci[0] < one.gns_ci[1]
    for field in ("gns", "b_simple", "trace_sigma", "grad_sq"):
        assert getattr(chunked, field) == pytest.approx(getattr(one, field), rel=1e-5)
    assert chunked.gns_ci == pytest.approx(one.gns_ci, rel=1e-5)
    assert chunked.b_simple_ci == pytest.approx(one.b_simple_ci, rel=1e-5)


def test_top_eigenvalues_of_a_loader_equal_the_one_batch_ones():
    torch.manual_seed(0)
    model = TwoHeads().double()
    x, y = torch.randn(20, 5, dtype=torch.float64), torch.randint(0, 3, (20,))
    loader = DataLoader(TensorDataset(x, y), batch_size=7)  # unequal batches: 7, 7, 6
    one = top_eigenvalues(model, two_heads_loss, x, y, k=3, tol=1e-8)
    full = top_eigenvalues(model, two_heads_loss, loader, None, k=3, tol=1e-8)
    torch.testing.assert_close(full.eigenvalues, one.eigenvalues, rtol=1e-7, atol=1e-10)
    op = hs.DataHessianOperator(model, two_heads_loss, loader)
    v = torch.randn(op.n_params, dtype=torch.float64)
    torch.testing.assert_close(op(v), hs.HessianOperator(model, two_heads_loss, x, y)(v))
    assert op.loss == pytest.approx(float(two_heads_loss(model(x), y).detach()))


def test_a_summed_loss_is_refused_for_the_data_hessian():
    model, x, y = problem()
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    with pytest.raises(ValueError, match="mean of the per-sample losses"):
        top_eigenvalues(model, lambda o, t: F.cross_entropy(o, t, reduction="sum"), loader, None)


def test_empty_and_inconsistent_batches_are_named():
    model, x, y = problem()
    with pytest.raises(ValueError, match="batches yielded no samples"):
        per_sample_norms(model, ce, [])
    with pytest.raises(ValueError, match=r"batches\[1\] has 3 inputs but 2 targets"):
        per_sample_norms(model, ce, [(x[:4], y[:4]), (x[4:7], y[:2])])
    with pytest.raises(ValueError, match=r"batches\[0\] must be an \(inputs, targets\) pair"):
        per_sample_norms(model, ce, [x])
    with pytest.raises(TypeError, match="one-shot iterator"):
        gradient_gram(model, ce, iter([(x, y)]))
    with pytest.raises(ValueError, match="targets must be a tensor"):
        gradient_gram(model, ce, x)  # a tensor with targets forgotten
    with pytest.raises(TypeError, match="iterable of"):
        hs.DataHessianOperator(model, ce, x)
    shuffled = DataLoader(TensorDataset(x, y), batch_size=4, shuffle=True)
    with pytest.raises(ValueError, match="different batches when read again"):
        gradient_gram(model, ce, shuffled)
    with pytest.raises(ValueError, match="inputs yielded different batches"):
        top_eigenvalues(model, ce, shuffled, None)


def test_norms_read_a_one_shot_iterator_once():
    model, x, y = problem()
    got = per_sample_norms(model, ce, ((a, b) for a, b in zip(x.split(5), y.split(5),
                                                                strict=True)))
    torch.testing.assert_close(got, loop_grads(model, x, y).norm(dim=1), rtol=1e-5, atol=1e-7)
