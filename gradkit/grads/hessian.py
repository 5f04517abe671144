"""The Hessian of a network's loss, seen through Hessian-vector products.

For the loss ``L(θ) = loss_fn(model(inputs), targets)`` at the model's current parameters θ
(flattened to one vector of length P), the Hessian is ``H_ij = ∂²L / ∂θ_i ∂θ_j``. It is never
formed: every estimator here only needs products ``v ↦ H v`` (one double backward each), and
reports how many it used.

- :class:`HessianOperator`  ``H v`` by double backward through a retained gradient graph
- :func:`lanczos`           extreme eigenpairs of a symmetric ``matvec`` (:mod:`.lanczos`)
- :func:`top_eigenvalues`   the k algebraically largest eigenvalues of H, descending
- :func:`min_eigenvalue`    the algebraically smallest eigenvalue of H (negative ⇒ not a minimum)
- :func:`hutchinson_trace`  ``tr H ≈ mean_z zᵀ H z`` with Rademacher z
- :func:`spectral_density`  stochastic Lanczos quadrature (SLQ) of the eigenvalue density
- :func:`flat_loss`         the loss as a function of one flat parameter vector θ
- :func:`dense_hessian`     the full P×P matrix by ``torch.func.hessian`` (tiny models, tests)

The loss is evaluated in the model's current mode: call ``model.eval()`` first if it has dropout
or batch-norm layers, otherwise H is the Hessian of a random (or batch-dependent) function.

Attention: the fused ``scaled_dot_product_attention`` kernels (flash, memory-efficient; on CPU
``_scaled_dot_product_flash_attention_for_cpu``) have no double backward, so every loss whose
second derivative is taken here is evaluated under :func:`double_backward_sdpa`, which selects
the math kernel (``SDPBackend.MATH``, built of differentiable ops; same values up to rounding).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from gradkit.core.params import (
    flat_grad,
    flatten,
    trainable_named_parameters,
    trainable_parameters,
)
from gradkit.grads.databatches import Batches, is_batches
from gradkit.grads.lanczos import EigenResult, lanczos, lanczos_steps, tridiagonal
from gradkit.grads.samples import num_samples, per_sample_losses

LossFn = Callable[[Any, Tensor], Tensor]
__all__ = ["DataHessianOperator", "DensityResult", "EigenResult", "HessianOperator",
           "TraceResult", "dense_hessian", "double_backward_sdpa", "flat_loss", "hutchinson_trace",
           "lanczos", "lanczos_steps",
           "min_eigenvalue", "rademacher", "spectral_density", "top_eigenvalues", "tridiagonal"]


def double_backward_sdpa():
    """Context: attention through the math SDPA kernel, the one with a double backward."""
    return sdpa_kernel(SDPBackend.MATH)


class HessianOperator:
    """``v ↦ H v`` at the model's current parameters, by double backward.

    The gradient ``g(θ) = ∇L(θ)`` is computed once with ``create_graph=True``; each product is
    ``H v = ∇_θ (g(θ) · v)``, one backward pass through that retained graph (Pearlmutter's trick
    in reverse-over-reverse form), the forward under :func:`double_backward_sdpa`. ``n_hvp``
    counts the products taken so far.
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, inputs: Tensor, targets: Tensor):
        self.params = trainable_parameters(model, require=True)
        with double_backward_sdpa():  # the graph must have a double backward (module docstring)
            loss = loss_fn(model(inputs), targets)
            if loss.dim() != 0:
                raise ValueError(f"loss_fn must return a scalar, got shape {tuple(loss.shape)}")
            self.loss = loss.detach()
            # create_graph keeps the graph of the gradient for the second derivative
            self.grad = flat_grad(loss, self.params, create_graph=True)
        self.n_params = self.grad.numel()
        self.dtype, self.device = self.grad.dtype, self.grad.device
        self.n_hvp = 0

    def __call__(self, v: Tensor) -> Tensor:
        """``H v`` for a flat vector ``v`` of length P."""
        if v.shape != (self.n_params,):
            raise ValueError(f"v must have shape ({self.n_params},), got {tuple(v.shape)}")
        self.n_hvp += 1
        hv = torch.autograd.grad(
            self.grad, self.params, grad_outputs=v.to(self.dtype),
            retain_graph=True, allow_unused=True, materialize_grads=True,
        )
        return flatten(hv).detach()

    def unflatten(self, v: Tensor) -> list[Tensor]:
        """Split a flat vector into tensors shaped like the model's parameters."""
        return [c.view_as(p) for c, p in zip(v.split([p.numel() for p in self.params]),
                                             self.params, strict=True)]


class DataHessianOperator:
    """``v ↦ H v`` of the mean loss over a whole data set given as an iterable of ``(inputs,
    targets)`` batches (a ``DataLoader`` with ``shuffle=False``): ``H = Σ_b (n_b / N) H_b`` for
    batches of ``n_b`` samples and ``loss_fn`` the mean over its batch, so ``H`` is the Hessian
    of :class:`HessianOperator` on all the samples in one batch.

    No graph is kept between products: each product reads the batches again and takes, per
    batch, a forward, a gradient with its graph and one backward through it (memory: one
    batch's double backward). ``loss_fn`` is checked on the first reading to be the mean of the
    per-sample losses (a sum would weigh the batches differently); the batches are checked to
    be the same at every reading.
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, batches, name: str = "batches"):
        self.model, self.loss_fn = model, loss_fn
        self.params = trainable_parameters(model, require=True)
        self.batches = Batches(batches, name, again=True)
        total = 0.0
        for i, (x, y) in enumerate(self.batches):
            with torch.no_grad():
                out = model(x)
                loss = loss_fn(out, y)
                if loss.dim() != 0:
                    raise ValueError(f"loss_fn must return a scalar, got shape "
                                     f"{tuple(loss.shape)}")
                mean = per_sample_losses(loss_fn, out, y).mean()
            if not torch.allclose(loss, mean, rtol=1e-4, atol=1e-6 * float(mean.abs()) + 1e-12):
                raise ValueError(
                    f"loss_fn must return the mean of the per-sample losses over its batch (for "
                    f"{name}, the data set's mean loss weighs each batch by its size); on batch "
                    f"{i} it gave {float(loss):.6g}, their mean is "
                    f"{float(mean):.6g}")
            total += float(loss) * num_samples(y, "targets")
        self.loss = torch.tensor(total / self.batches.n)
        p = self.params[0]
        self.n_params = sum(q.numel() for q in self.params)
        self.dtype, self.device = p.dtype, p.device
        self.n_hvp = 0

    def __call__(self, v: Tensor) -> Tensor:
        """``H v`` for a flat vector ``v`` of length P."""
        if v.shape != (self.n_params,):
            raise ValueError(f"v must have shape ({self.n_params},), got {tuple(v.shape)}")
        self.n_hvp += 1
        v = v.to(self.dtype)
        out = torch.zeros(self.n_params, dtype=self.dtype, device=self.device)
        n = self.batches.n
        for x, y in self.batches:
            with double_backward_sdpa():
                loss = self.loss_fn(self.model(x), y)
                grad = flat_grad(loss, self.params, create_graph=True)
            hv = torch.autograd.grad(grad, self.params, grad_outputs=v, allow_unused=True,
                                     materialize_grads=True)
            out += flatten(hv).detach() * (num_samples(y, "targets") / n)
        return out

    unflatten = HessianOperator.unflatten


def _operator(model, loss_fn, inputs, targets, hvp):
    """The operator asked for: ``hvp`` as given, else of one batch, else (``targets`` omitted)
    of an iterable of batches (:class:`DataHessianOperator`)."""
    if hvp is not None:
        return hvp
    if is_batches(inputs, targets):
        return DataHessianOperator(model, loss_fn, inputs, "inputs")
    return HessianOperator(model, loss_fn, inputs, targets)


def top_eigenvalues(
    model: nn.Module | None,
    loss_fn: LossFn | None,
    inputs: Tensor | None,
    targets: Tensor | None,
    k: int = 1,
    tol: float = 1e-4,
    max_iter: int = 100,
    seed: int = 0,
    hvp: HessianOperator | None = None,
) -> EigenResult:
    """The k algebraically largest eigenvalues of the loss Hessian, descending (Lanczos).

    ``tol`` is relative to each eigenvalue (see :func:`lanczos`). Pass ``hvp`` to reuse one
    :class:`HessianOperator` (then model/loss_fn/inputs/targets may be None). For the Hessian of
    the mean loss over a whole data set, pass an iterable of ``(inputs, targets)`` batches (a
    ``DataLoader`` with ``shuffle=False``) as ``inputs`` and ``targets=None``
    (:class:`DataHessianOperator`: each product reads every batch). The same holds for
    :func:`min_eigenvalue`, :func:`hutchinson_trace` and :func:`spectral_density`.

    >>> import torch, torch.nn.functional as F
    >>> model = torch.nn.Linear(3, 2).double()
    >>> x, y = torch.randn(6, 3, dtype=torch.float64), torch.tensor([0, 1, 1, 0, 1, 0])
    >>> loader = torch.utils.data.DataLoader(list(zip(x, y)), batch_size=4)
    >>> one = top_eigenvalues(model, F.cross_entropy, x, y).eigenvalues
    >>> bool(torch.allclose(top_eigenvalues(model, F.cross_entropy, loader, None).eigenvalues,
    ...                     one))
    True
    """
    op = _operator(model, loss_fn, inputs, targets, hvp)
    return lanczos(op, op.n_params, k=k, which="largest", tol=tol, max_iter=max_iter,
                   seed=seed, dtype=op.dtype, device=op.device)


def min_eigenvalue(
    model: nn.Module | None,
    loss_fn: LossFn | None,
    inputs: Tensor | None,
    targets: Tensor | None,
    tol: float = 1e-4,
    max_iter: int = 100,
    seed: int = 0,
    hvp: HessianOperator | None = None,
) -> EigenResult:
    """The algebraically smallest eigenvalue of the loss Hessian (Lanczos), with its vector.

    A negative value means the point is not a local minimum: moving along the eigenvector
    lowers the quadratic model of the loss. ``tol`` is relative to |λ_min| (never to less than
    1e-6 of the largest |Ritz value|). The bottom of a network's spectrum converges much more
    slowly than the top (it is crowded near zero): check ``converged`` and ``n_hvp``.
    """
    op = _operator(model, loss_fn, inputs, targets, hvp)
    return lanczos(op, op.n_params, k=1, which="smallest", tol=tol, max_iter=max_iter,
                   seed=seed, dtype=op.dtype, device=op.device)


@dataclass
class TraceResult:
    """Hutchinson's estimate ``trace`` ± ``std_error`` from ``samples`` (each zᵀHz)."""

    trace: float
    std_error: float
    samples: Tensor
    n_hvp: int


def rademacher(n: int, gen: torch.Generator, dtype=torch.float64) -> Tensor:
    """A vector of independent ±1 entries (each with probability 1/2)."""
    return torch.randint(0, 2, (n,), generator=gen).to(dtype) * 2 - 1


def hutchinson_trace(
    model: nn.Module | None,
    loss_fn: LossFn | None,
    inputs: Tensor | None,
    targets: Tensor | None,
    n_samples: int = 20,
    seed: int = 0,
    hvp: HessianOperator | None = None,
) -> TraceResult:
    """``tr H = E_z[zᵀ H z]`` for Rademacher z (E[z zᵀ] = I); mean of ``n_samples`` draws.

    The standard error is the sample standard deviation over √n_samples.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be ≥ 1, got {n_samples}")
    op = _operator(model, loss_fn, inputs, targets, hvp)
    gen = torch.Generator().manual_seed(seed)
    samples = []
    for _ in range(n_samples):
        z = rademacher(op.n_params, gen, op.dtype).to(op.device)
        samples.append(float(z @ op(z)))
    s = torch.tensor(samples, dtype=torch.float64)
    se = float(s.std() / math.sqrt(n_samples)) if n_samples > 1 else math.nan
    return TraceResult(trace=float(s.mean()), std_error=se, samples=s, n_hvp=n_samples)


@dataclass
class DensityResult:
    """SLQ quadrature: ``nodes`` and ``weights`` [n_vectors, n_steps]; each row sums to 1.

    ``∫ f(λ) dμ(λ) ≈ mean_l Σ_i weights[l, i] f(nodes[l, i])`` where μ is the eigenvalue
    distribution of H (each of the P eigenvalues carries mass 1/P).
    """

    nodes: Tensor
    weights: Tensor
    n_hvp: int
    n_params: int

    def density(self, grid: Tensor, sigma: float) -> Tensor:
        """The Gaussian-smoothed density ``φ(t) = mean_l Σ_i w_li N(t; θ_li, σ²)`` on ``grid``."""
        if sigma <= 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        g = grid.to(torch.float64).reshape(-1, 1, 1)
        kern = torch.exp(-0.5 * ((g - self.nodes) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
        return (kern * self.weights).sum(-1).mean(-1)


def spectral_density(
    model: nn.Module | None,
    loss_fn: LossFn | None,
    inputs: Tensor | None,
    targets: Tensor | None,
    n_steps: int = 30,
    n_vectors: int = 1,
    seed: int = 0,
    hvp: HessianOperator | None = None,
) -> DensityResult:
    """Stochastic Lanczos quadrature of the Hessian's eigenvalue density.

    For a random unit vector q, ``qᵀ f(H) q = Σ_k (qᵀu_k)² f(λ_k)``, whose expectation is
    ``tr f(H) / P``. m Lanczos steps from q give the Gauss quadrature of that sum: nodes = the
    Ritz values θ_i of T_m, weights = ``s_{1i}²`` (first components of T_m's eigenvectors); it
    is exact for polynomials f of degree ≤ 2m−1. Averaged over ``n_vectors`` Rademacher starts.
    """
    op = _operator(model, loss_fn, inputs, targets, hvp)
    m = min(n_steps, op.n_params)
    start = op.n_hvp
    gen = torch.Generator().manual_seed(seed)
    nodes, weights = [], []
    for _ in range(n_vectors):
        q = rademacher(op.n_params, gen, op.dtype).to(op.device)
        *_, (_, alphas, betas, _, _) = lanczos_steps(op, q, m)  # m steps (fewer: invariant)
        T = tridiagonal(alphas, betas[: len(alphas) - 1])
        theta, S = torch.linalg.eigh(T)
        pad = m - len(theta)  # an early invariant subspace gives fewer nodes: pad with weight 0
        nodes.append(torch.nn.functional.pad(theta, (0, pad), value=float(theta[-1])))
        weights.append(torch.nn.functional.pad(S[0] ** 2, (0, pad)))
    return DensityResult(torch.stack(nodes), torch.stack(weights), op.n_hvp - start, op.n_params)


def flat_loss(model: nn.Module, loss_fn: LossFn, inputs: Tensor,
              targets: Tensor) -> tuple[Callable[[Tensor], Tensor], Tensor]:
    """``(L, θ0)``: ``L(θ) = loss_fn(model_θ(inputs), targets)`` of a flat parameter vector θ
    (trainable parameters in ``named_parameters()`` order, through ``functional_call``: the
    module itself is not modified) and the model's current θ0."""
    named = trainable_named_parameters(model)
    if not named:
        raise ValueError(f"model {type(model).__name__} has no parameters with requires_grad=True")
    names, shapes = [n for n, _ in named], [p.shape for _, p in named]
    sizes = [p.numel() for _, p in named]

    def loss(theta: Tensor) -> Tensor:
        chunks = [c.view(s) for c, s in zip(theta.split(sizes), shapes, strict=True)]
        outputs = torch.func.functional_call(model, dict(zip(names, chunks, strict=True)),
                                             (inputs,))
        return loss_fn(outputs, targets)

    return loss, flatten(p.detach() for _, p in named)


def dense_hessian(model: nn.Module, loss_fn: LossFn, inputs: Tensor, targets: Tensor) -> Tensor:
    """The full P×P Hessian: ``g = ∇L(θ)`` of :func:`flat_loss` with a graph, then one backward
    per row, ``H[i] = ∇_θ g_i``.

    Independent of :class:`HessianOperator` (a flat θ through ``functional_call``, not the
    module's parameters), so the two check each other. Not ``torch.func.hessian``: in torch
    2.11 its forward-over-reverse (and ``jacrev(jacrev)``) Hessian of a LayerNorm network is
    wrong (asymmetric by 0.4 where central differences of the gradient agree with this to 2e-10,
    float64). Memory is P², P backward passes: only for tiny models.
    """
    loss, theta = flat_loss(model, loss_fn, inputs, targets)
    theta = theta.clone().requires_grad_(True)
    with double_backward_sdpa():
        (g,) = torch.autograd.grad(loss(theta), theta, create_graph=True)
    eye = torch.eye(theta.numel(), dtype=theta.dtype, device=theta.device)
    return torch.stack([torch.autograd.grad(g, theta, e, retain_graph=True)[0] for e in eye])
