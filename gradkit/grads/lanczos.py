"""Lanczos: one iteration (:func:`lanczos_steps`) for the extreme eigenpairs of a symmetric
operator (:func:`lanczos`) and for stochastic Lanczos quadrature
(:func:`gradkit.grads.hessian.spectral_density`). Golub & Van Loan, *Matrix Computations*, §10.1;
Parlett, *The Symmetric Eigenvalue Problem*, ch. 13.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

MatVec = Callable[[Tensor], Tensor]

__all__ = ["EigenResult", "MatVec", "lanczos", "lanczos_steps", "tridiagonal"]


@dataclass
class EigenResult:
    """Eigenpairs found by Lanczos.

    ``eigenvalues`` [k] (ordered as asked: descending for the top, ascending for the bottom),
    ``eigenvectors`` [k, P] of unit norm, ``residuals`` [k] = ``‖H y − θ y‖``,
    ``error_bounds`` [k] (the stopping quantity, see :func:`lanczos`), ``n_hvp`` products used,
    ``converged``, and ``history`` [n_hvp, k]: the wanted Ritz values after each product.
    """

    eigenvalues: Tensor
    eigenvectors: Tensor
    residuals: Tensor
    error_bounds: Tensor
    n_hvp: int
    converged: bool
    history: Tensor = field(repr=False)


def tridiagonal(alphas: list[float], betas: list[float]) -> Tensor:
    """The float64 tridiagonal ``T`` with ``alphas`` on the diagonal and ``betas`` beside it."""
    T = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if betas:
        off = torch.tensor(betas, dtype=torch.float64)
        T += torch.diag(off, 1) + torch.diag(off, -1)
    return T


def lanczos_steps(matvec: MatVec, q: Tensor, max_iter: int):
    """The one Lanczos iteration of this module (:func:`lanczos` and :func:`spectral_density`).

    From the start vector ``q`` (normalised here), step j takes one product ``w = H q_j``,
    ``α_j = q_jᵀ w``, orthogonalises ``w`` against every basis vector so far, twice ("twice is
    enough", Kahan: full reorthogonalisation, no ghost eigenvalues) and ``β_j = ‖w‖``. After each
    step it yields ``(Q, alphas, betas, β_j, invariant)``: ``Q[: j + 1]`` the basis, ``alphas``
    ``α_0..α_j``, ``betas`` the ``β`` of the steps taken so far (``T_j`` is
    ``tridiagonal(alphas, betas[:j])``) and ``invariant`` when ``β_j ≤ 1e-12 · ‖T_j‖`` (the
    Krylov space is invariant, the Ritz values are exact; the iteration ends there). It also
    ends after ``max_iter`` steps; the caller may stop it earlier (break).
    """
    n = q.numel()
    Q = torch.empty(max_iter, n, dtype=q.dtype, device=q.device)
    Q[0] = q / q.norm()
    alphas: list[float] = []
    betas: list[float] = []
    for j in range(max_iter):
        w = matvec(Q[j]).to(q.dtype)
        alphas.append(float(w @ Q[j]))
        basis = Q[: j + 1]
        for _ in range(2):
            w = w - basis.T @ (basis @ w)
        beta = float(w.norm())
        theta = torch.linalg.eigvalsh(tridiagonal(alphas, betas))
        invariant = beta <= 1e-12 * max(abs(float(theta[0])), abs(float(theta[-1])), 1e-300)
        yield Q, alphas, betas, beta, invariant
        if invariant:
            return
        if j + 1 < max_iter:
            betas.append(beta)
            Q[j + 1] = w / beta


def lanczos(
    matvec: MatVec,
    n: int,
    k: int = 1,
    which: str = "largest",
    tol: float = 1e-4,
    max_iter: int = 100,
    floor: float = 1e-6,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> EigenResult:
    """The k extreme eigenpairs of the symmetric n×n operator ``matvec`` by Lanczos.

    Lanczos builds an orthonormal basis Q_j of the Krylov space span{q, Hq, …, H^{j-1}q} with
    ``H Q_j = Q_j T_j + β_j q_{j+1} e_jᵀ`` (T_j tridiagonal: α on the diagonal, β beside it); the
    eigenvalues θ of T_j (Ritz values) approach the extreme eigenvalues of H first. Every new
    vector is orthogonalised against all previous ones, twice ("full reorthogonalisation"), so
    no ghost copies of converged eigenvalues appear.

    For a Ritz pair (θ, y = Q_j s) the residual is ``r = ‖H y − θ y‖ = β_j |s_j|`` (no extra
    product). An eigenvalue of H lies within r of θ, and within ``r² / gap`` once the nearest
    other eigenvalue is ``gap`` away (Kahan–Parlett–Jiang); the gap is estimated from the other
    Ritz values. With ``scale = max(|θ|, floor · max|Ritz|)`` (relative to the value itself, but
    never below ``floor`` times the estimate of ‖H‖, so that a zero eigenvalue can converge) it
    stops when, for every wanted value, ``min(r, r²/gap) ≤ tol · scale`` *and* θ moved by at
    most ``tol · scale`` in the last iteration.

    The second test guards the bottom of a network's spectrum: there many eigenvalues crowd
    near zero, early Ritz values sit in that crowd with small residuals and a Ritz "gap" to the
    far top, and only later does the Krylov space find the negative directions (on the ResNet
    only after tens of products; the trajectory is in ``benchmarks/README.md``). Like every
    Krylov method it cannot see an eigenvector that the start vector (seeded) misses. One
    product per iteration.
    """
    if which not in ("largest", "smallest"):
        raise ValueError(f"which must be 'largest' or 'smallest', got {which!r}")
    if not 0 <= floor < 1:
        raise ValueError(f"floor must be in [0, 1), got {floor}")
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and n={n}, got {k}")
    max_iter = min(max_iter, n)
    if max_iter < k:
        raise ValueError(f"max_iter={max_iter} is smaller than k={k}")

    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(n, generator=gen, dtype=dtype).to(device)
    history: list[Tensor] = []
    converged = False
    steps = lanczos_steps(matvec, q, max_iter)
    for j, step in enumerate(steps):
        Q, alphas, betas, beta, invariant = step
        theta, S = torch.linalg.eigh(tridiagonal(alphas, betas[:j]))  # ascending
        idx = torch.arange(j, -1, -1) if which == "largest" else torch.arange(j + 1)
        idx = idx[: min(k, j + 1)]
        residual = beta * S[-1, idx].abs()
        history.append(theta[idx])

        if j + 1 >= k:
            others = theta.unsqueeze(0).expand(len(idx), -1).clone()
            others[torch.arange(len(idx)), idx] = math.inf  # gap to the nearest *other* value
            gap = (others - theta[idx].unsqueeze(1)).abs().min(dim=1).values
            # with a single Ritz value there is no gap estimate yet: only r bounds the error
            quad = torch.where(torch.isfinite(gap), residual**2 / gap.clamp_min(1e-300), residual)
            bound = torch.minimum(residual, quad)
            scale = theta[idx].abs().clamp_min(floor * float(theta.abs().max()))
            moved = ((theta[idx] - history[-2]).abs() if len(history) > 1 and len(history[-2])
                     == len(idx) else torch.full_like(scale, math.inf))
            limit = tol * scale.clamp_min(1e-300)
            if bool(((bound <= limit) & (moved <= limit)).all()):
                converged = True
                break
        if invariant:
            converged = True  # invariant subspace: the Ritz values are exact eigenvalues
            break
    steps.close()

    n_used = len(alphas)
    vectors = S[:, idx].T.to(dtype=dtype, device=device) @ Q[:n_used]
    width = len(idx)
    hist = torch.full((n_used, width), math.nan, dtype=torch.float64)
    for i, h in enumerate(history):
        hist[i, : len(h)] = h
    return EigenResult(
        eigenvalues=theta[idx].to(dtype),
        eigenvectors=vectors,
        residuals=residual.to(dtype),
        error_bounds=bound.to(dtype) if j + 1 >= k else residual.to(dtype),
        n_hvp=n_used,
        converged=converged or n_used == n,
        history=hist,
    )
