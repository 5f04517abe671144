"""gradkit.grads.hessian against the dense Hessian of a tiny network, in float64."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradkit.grads import hessian as hs


class TwoHeads(nn.Module):
    """A tiny tanh network returning a tuple, like ResNetAudioRanker: (logits, score)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(5, 6), nn.Tanh())
        self.head = nn.Linear(6, 3)
        self.score = nn.Linear(6, 1)

    def forward(self, x):
        h = self.body(x)
        return self.head(h), self.score(h).squeeze(-1)


def loss_fn(outputs, targets):
    logits, score = outputs
    return nn.functional.cross_entropy(logits, targets) + 0.1 * (score**2).mean()


@pytest.fixture(scope="module")
def problem():
    torch.manual_seed(0)
    model = TwoHeads().double()
    x = torch.randn(20, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (20,))
    H = hs.dense_hessian(model, loss_fn, x, y)
    return model, x, y, H


def test_dense_hessian_is_symmetric_and_full_size(problem):
    model, _, _, H = problem
    P = sum(p.numel() for p in model.parameters())
    assert H.shape == (P, P)
    torch.testing.assert_close(H, H.T, atol=1e-12, rtol=0)


def test_flat_loss_matches_the_module_and_leaves_it_alone(problem):
    model, x, y, H = problem
    loss, theta0 = hs.flat_loss(model, loss_fn, x, y)
    assert theta0.numel() == H.shape[0]
    torch.testing.assert_close(loss(theta0), loss_fn(model(x), y))
    moved = loss(theta0 + 0.1)
    assert float(moved) != pytest.approx(float(loss(theta0)))
    torch.testing.assert_close(loss(theta0), loss_fn(model(x), y))  # the module is unchanged
    torch.testing.assert_close(torch.func.hessian(loss)(theta0), H)


def test_hvp_matches_dense_hessian_times_vector(problem):
    model, x, y, H = problem
    op = hs.HessianOperator(model, loss_fn, x, y)
    v = torch.randn(op.n_params, dtype=torch.float64)
    torch.testing.assert_close(op(v), H @ v, atol=1e-12, rtol=1e-10)
    assert op.n_hvp == 1
    shapes = [t.shape for t in op.unflatten(v)]
    assert shapes == [p.shape for p in model.parameters()]


def test_top_eigenvalues_match_dense(problem):
    model, x, y, H = problem
    exact = torch.linalg.eigvalsh(H).flip(0)  # descending
    res = hs.top_eigenvalues(model, loss_fn, x, y, k=3, tol=1e-10)
    assert res.converged
    assert res.eigenvalues.shape == (3,)
    assert bool((res.eigenvalues[:-1] >= res.eigenvalues[1:]).all())
    torch.testing.assert_close(res.eigenvalues, exact[:3], rtol=1e-8, atol=1e-10)
    assert res.n_hvp < H.shape[0]  # found without a product per parameter
    # eigenvectors: unit norm and H y = θ y
    torch.testing.assert_close(res.eigenvectors.norm(dim=1), torch.ones(3, dtype=torch.float64))
    lhs = res.eigenvectors @ H
    torch.testing.assert_close(lhs, res.eigenvalues[:, None] * res.eigenvectors, atol=1e-5,
                               rtol=0)


def test_min_eigenvalue_matches_dense_and_is_negative_here(problem):
    model, x, y, H = problem
    exact = torch.linalg.eigvalsh(H)[0]
    res = hs.min_eigenvalue(model, loss_fn, x, y, tol=1e-10)
    assert res.eigenvalues.shape == (1,)
    torch.testing.assert_close(res.eigenvalues[0], exact, rtol=1e-7, atol=1e-9)
    assert float(exact) < 0  # a random point of a tanh net is no minimum: the test means it


def test_lanczos_error_bound_holds_on_a_known_spectrum():
    # diagonal operator with known eigenvalues, stopped at a loose tolerance: the reported
    # bound must really bound the error of the top value.
    lam = torch.cat([torch.tensor([10.0, 9.0]), torch.linspace(-1, 5, 298)]).double()
    res = hs.lanczos(lambda v: lam * v, lam.numel(), k=1, tol=1e-6)
    assert res.converged
    err = abs(float(res.eigenvalues[0]) - 10.0)
    assert err <= float(res.error_bounds[0]) + 1e-12
    assert err <= 1e-6 * 10
    assert res.history.shape == (res.n_hvp, 1)


def test_lanczos_rejects_bad_arguments():
    with pytest.raises(ValueError, match="which"):
        hs.lanczos(lambda v: v, 4, which="top")
    with pytest.raises(ValueError, match="k must"):
        hs.lanczos(lambda v: v, 4, k=5)


def test_hutchinson_is_exact_per_sample_and_unbiased(problem):
    model, x, y, H = problem
    res = hs.hutchinson_trace(model, loss_fn, x, y, n_samples=200, seed=1)
    assert res.n_hvp == 200
    gen = torch.Generator().manual_seed(1)
    z = hs.rademacher(H.shape[0], gen)
    torch.testing.assert_close(res.samples[0], z @ H @ z, rtol=1e-10, atol=1e-12)
    exact = float(torch.trace(H))
    assert abs(res.trace - exact) < 4 * res.std_error


def test_slq_is_gauss_quadrature_exact_for_low_degree_moments(problem):
    model, x, y, H = problem
    m = 6
    dens = hs.spectral_density(model, loss_fn, x, y, n_steps=m, n_vectors=2, seed=3)
    assert dens.nodes.shape == (2, m) and dens.n_hvp == 2 * m
    torch.testing.assert_close(dens.weights.sum(1), torch.ones(2, dtype=torch.float64))
    gen = torch.Generator().manual_seed(3)
    for row in range(2):
        q = hs.rademacher(H.shape[0], gen)
        q = q / q.norm()
        Hk = torch.eye(H.shape[0], dtype=torch.float64)
        for degree in range(2 * m):  # exact up to degree 2m-1
            quad = (dens.weights[row] * dens.nodes[row] ** degree).sum()
            torch.testing.assert_close(quad, q @ Hk @ q, rtol=1e-6, atol=1e-9)
            Hk = Hk @ H
    grid = torch.linspace(-3, 3, 601, dtype=torch.float64)
    phi = dens.density(grid, sigma=0.05)
    area = float(phi.sum() * (grid[1] - grid[0]))
    inside = float(dens.weights[:, (dens.nodes.abs() < 2.8).all(0)].sum(1).mean())
    assert abs(area - inside) < 0.02


def test_hessian_operator_rejects_nonscalar_loss(problem):
    model, x, y, _ = problem
    with pytest.raises(ValueError, match="scalar"):
        hs.HessianOperator(model, lambda o, t: o[0], x, y)


def test_lanczos_bottom_of_a_crowded_spectrum_is_not_declared_early():
    # like a network Hessian: one large eigenvalue, a crowd near zero, one negative eigenvalue
    lam = torch.cat([torch.tensor([100.0, -0.5]), torch.linspace(0.0, 0.1, 1998)]).double()

    class Quadratic(nn.Module):  # L(θ) = ½ Σ λ_i θ_i², Hessian diag(λ)
        def __init__(self):
            super().__init__()
            self.theta = nn.Parameter(torch.ones(lam.numel(), dtype=torch.float64))

        def forward(self, x):
            return self.theta

    res = hs.min_eigenvalue(Quadratic(), lambda out, t: 0.5 * (lam * out**2).sum(), None, None)
    assert res.converged
    assert abs(float(res.eigenvalues[0]) + 0.5) <= 1e-4 * 0.5
    # the first Ritz values sat in the crowd: stopping on them would have been wrong
    assert float(res.history[1, 0]) > -0.25


def test_top_eigenvalue_of_the_resnet_within_1e_4_in_at_most_12_products():
    from gradkit.models import ResNetAudioRanker

    torch.manual_seed(0)
    model = ResNetAudioRanker().eval()
    model.score_head.requires_grad_(False)  # unused by the loss below
    x, y = torch.randn(8, 1, 20, 16), torch.arange(8) % 6

    def ce(outputs, targets):
        return nn.functional.cross_entropy(outputs[0], targets)

    ref_model = ResNetAudioRanker().double().eval()
    ref_model.load_state_dict(model.state_dict())
    ref_model.score_head.requires_grad_(False)
    ref = hs.top_eigenvalues(ref_model, ce, x.double(), y, tol=1e-10)
    assert ref.converged
    for seed in (0, 1):
        res = hs.top_eigenvalues(model, ce, x, y, seed=seed)  # float32, default tol 1e-4
        err = abs(float(res.eigenvalues[0]) - float(ref.eigenvalues[0]))
        assert res.converged and res.n_hvp <= 12
        assert err <= 1e-4 * abs(float(ref.eigenvalues[0]))


class TinyAttention(nn.Module):
    """One Transformer encoder layer (scaled_dot_product_attention inside) and a linear head."""

    def __init__(self):
        super().__init__()
        self.enc = nn.TransformerEncoderLayer(4, 2, 6, dropout=0.0, batch_first=True)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.enc(x).mean(1))


def test_hessian_of_an_attention_model_on_cpu_matches_dense():
    torch.manual_seed(0)
    model = TinyAttention().double().eval()
    x, y = torch.randn(6, 5, 4, dtype=torch.float64), torch.randint(0, 3, (6,))
    ce = nn.functional.cross_entropy
    loss = ce(model(x), y)  # the default (fused) kernel has no double backward: the bug
    g = torch.autograd.grad(loss, list(model.parameters()), create_graph=True)
    with pytest.raises(RuntimeError, match="not implemented"):
        torch.autograd.grad(sum(gi.sum() for gi in g), list(model.parameters()))
    H = hs.dense_hessian(model, ce, x, y)
    op = hs.HessianOperator(model, ce, x, y)
    v = torch.randn(op.n_params, dtype=torch.float64)
    torch.testing.assert_close(op(v), H @ v, atol=1e-10, rtol=1e-8)
    top = hs.top_eigenvalues(None, None, None, None, k=2, tol=1e-8, hvp=op)
    torch.testing.assert_close(top.eigenvalues, torch.linalg.eigvalsh(H).flip(0)[:2],
                               atol=1e-8, rtol=1e-6)
    assert hs.hutchinson_trace(model, ce, x, y, n_samples=2).n_hvp == 2
