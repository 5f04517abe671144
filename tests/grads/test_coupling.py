"""The loss-coupling check of per_sample_grads (gradkit.grads.coupling) and non-finite rows."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradkit.grads import CoupledLossError, forget, per_sample_grads
from gradkit.losses import pairwise_ranking_loss

METHODS = ("auto", "vmap", "loop", "layers")


class Counted(torch.autograd.Function):
    """The identity, counting how often a backward passes through it."""

    calls = 0

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        Counted.calls += 1
        return g


class Scorer(nn.Module):
    def __init__(self, counted: bool = False):
        super().__init__()
        self.a, self.b, self.counted = nn.Linear(5, 8), nn.Linear(8, 3), counted

    def forward(self, x):
        h = self.a(x)
        return self.b(torch.tanh(Counted.apply(h) if self.counted else h))


def ranking(out, angles):  # the workbook's in-batch pairwise ranking term on the first logit
    return pairwise_ranking_loss(out[:, 0], angles, margin=1.0)


def variance_penalised(out, y):  # CE plus a penalty on the batch's spread of the logits
    return F.cross_entropy(out, y) + 0.5 * out.var(0, unbiased=False).mean()


def problem(n=12, seed=0):
    torch.manual_seed(seed)
    return Scorer().eval(), torch.randn(n, 5), torch.randint(0, 3, (n,))


@pytest.mark.parametrize("method", ["auto", "loop", "layers"])  # vmap cannot trace nonzero
def test_an_in_batch_ranking_loss_raises_naming_it(method):
    model, x, _ = problem()
    angles = torch.randperm(12).float() * 30
    with pytest.raises(CoupledLossError, match="'ranking'.*check=False"):
        per_sample_grads(model, ranking, x, angles, method=method)
    # what it would have returned: all zeros, a pair of one sample being no pair
    assert per_sample_grads(model, ranking, x, angles, method=method, check=False).abs().max() == 0


@pytest.mark.parametrize("method", METHODS)
def test_a_batch_variance_penalty_raises(method):
    model, x, y = problem(seed=1)
    with pytest.raises(CoupledLossError, match="variance_penalised"):
        per_sample_grads(model, variance_penalised, x, y, method=method)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("method", METHODS)
def test_mean_and_sum_losses_pass_and_sum_to_the_batch_gradient(method, reduction):
    model, x, y = problem(seed=2)

    def loss(out, t):
        return F.cross_entropy(out, t, reduction=reduction)

    G = per_sample_grads(model, loss, x, y, method=method)
    batch = torch.autograd.grad(loss(model(x), y), list(model.parameters()))
    scale = 1 / len(x) if reduction == "mean" else 1.0
    torch.testing.assert_close(G.sum(0) * scale, torch.cat([b.flatten() for b in batch]),
                               atol=1e-6, rtol=1e-5)


def test_the_check_in_the_layers_pass_adds_no_backward():
    torch.manual_seed(3)
    model, x, y = Scorer(counted=True).eval(), torch.randn(10, 5), torch.randint(0, 3, (10,))
    per_sample_grads(model, F.cross_entropy, x, y, method="layers")  # probes, consistency check
    Counted.calls = 0
    per_sample_grads(model, F.cross_entropy, x, y, method="layers")  # the check runs again
    assert Counted.calls == 1  # the pass's one backward through the model, nothing more
    with pytest.raises(CoupledLossError):  # and the check did run in it
        per_sample_grads(model, variance_penalised, x, y, method="layers")


def test_on_the_loop_the_check_costs_one_batch_backward_once_per_signature():
    torch.manual_seed(4)
    model, x, y = Scorer(counted=True).eval(), torch.randn(6, 5), torch.randint(0, 3, (6,))
    forget(model)
    Counted.calls = 0
    per_sample_grads(model, F.cross_entropy, x, y, method="loop")
    assert Counted.calls == 6 + 1  # one per sample, one batch backward for the check
    Counted.calls = 0
    per_sample_grads(model, F.cross_entropy, x, y, method="loop")
    assert Counted.calls == 6  # the verdict is kept for this signature


@pytest.mark.parametrize("method", ["auto", "loop"])
def test_a_nan_input_warns_naming_the_sample_at_the_callers_line(method):
    model, x, y = problem(seed=5)
    x[3, 1] = float("nan")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        G = per_sample_grads(model, F.cross_entropy, x, y, method=method)
    hits = [m for m in w if "samples [3]" in str(m.message)]
    assert hits, [str(m.message) for m in w]
    assert hits[0].filename == __file__
    assert not torch.isfinite(G[3]).all() and torch.isfinite(G[[0, 1, 2, 4]]).all()


def test_the_workbooks_objective_is_per_sample_and_its_raw_batch_form_is_not():
    from gradkit.analysis.objective_grads import objective_loss

    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.trunk, self.cls, self.score = nn.Linear(5, 6), nn.Linear(6, 3), nn.Linear(6, 1)

        def forward(self, x):
            h = torch.tanh(self.trunk(x))
            return self.cls(h), self.score(h).squeeze(-1)

    torch.manual_seed(6)
    model, x = TwoHeads().eval(), torch.randn(8, 5)
    y, angles = torch.randint(0, 3, (8,)), torch.randperm(8).float() * 40
    # per-sample terms, the pairs' pull on each score frozen as constants c_k: no coupling
    w, c = torch.rand(8) + 0.5, torch.randn(8)
    G = per_sample_grads(model, objective_loss, x, (y, w, c))
    assert G.shape[0] == 8 and torch.isfinite(G).all()

    def raw(out, t):  # CE + the in-batch ranking term over the batch's pairs
        return F.cross_entropy(out[0], t[0]) + pairwise_ranking_loss(out[1], t[1], 1.0)

    with pytest.raises(CoupledLossError, match="'raw'"):
        per_sample_grads(model, raw, x, (y, angles))


def test_dropout_in_training_mode_is_warned_once_naming_it():
    torch.manual_seed(7)
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3))
    model.train()
    x, y = torch.randn(10, 5), torch.randint(0, 3, (10,))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        first = per_sample_grads(model, F.cross_entropy, x, y)
        second = per_sample_grads(model, F.cross_entropy, x, y)
    said = [m for m in w if "random masks" in str(m.message)]
    assert len(said) == 1 and "'2'" in str(said[0].message) and "eval()" in str(said[0].message)
    assert said[0].filename == __file__
    assert not torch.allclose(first, second)  # what the warning says: masks differ per call
    assert torch.isfinite(per_sample_grads(model, F.cross_entropy, x, y, method="vmap")).all()
    with pytest.raises(ValueError, match="'2'.*eval"):
        per_sample_grads(model, F.cross_entropy, x, y, method="layers")
    model.eval()
    torch.testing.assert_close(per_sample_grads(model, F.cross_entropy, x, y),
                               per_sample_grads(model, F.cross_entropy, x, y))
