"""The Hessian spectrum of a real model through Hessian-vector products only, and the check that
those matrix-free estimates find what the dense matrix has on a model small enough to form it.

The estimators are :mod:`gradkit.grads.hessian`'s (Lanczos, Hutchinson, stochastic Lanczos
quadrature); this module runs them together for the notes and summarises what they say.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gradkit.grads.hessian import (
    DensityResult,
    EigenResult,
    HessianOperator,
    hutchinson_trace,
    min_eigenvalue,
    spectral_density,
    top_eigenvalues,
)

__all__ = ["HessianSummary", "hessian_summary", "lanczos_against_dense"]


def lanczos_against_dense(op: HessianOperator, dense_eigenvalues: Tensor, k: int = 3,
                          tol: float = 1e-10, rtol: float = 1e-6, atol: float = 1e-9
                          ) -> tuple[EigenResult, EigenResult]:
    """The ``k`` largest and the smallest eigenpair of ``op`` by Lanczos, checked against the
    dense Hessian's ``dense_eigenvalues`` (any order).

    Raises ``ValueError`` naming the eigenvalues when Lanczos differs from the dense spectrum by
    more than ``atol + rtol·|λ|``: the matrix-free estimates used on the real model are only
    trusted where they reproduce the dense ones.
    """
    ev = torch.sort(dense_eigenvalues.detach().to(torch.float64)).values
    if ev.numel() < k:
        raise ValueError(f"k = {k} eigenvalues asked of a {ev.numel()}-parameter Hessian")
    top = top_eigenvalues(None, None, None, None, k=k, tol=tol, hvp=op)
    low = min_eigenvalue(None, None, None, None, tol=tol, hvp=op)
    for what, got, want in (("largest", top.eigenvalues, ev.flip(0)[:k]),
                            ("smallest", low.eigenvalues, ev[:1])):
        got = got.detach().to(torch.float64).cpu()
        if got.shape != want.shape or not torch.allclose(got, want, rtol=rtol, atol=atol):
            raise ValueError(f"Lanczos' {what} eigenvalue(s) {got.tolist()} differ from the dense "
                             f"Hessian's {want.tolist()} (rtol {rtol:g}, atol {atol:g})")
    return top, low


@dataclass(frozen=True)
class HessianSummary:
    """What :func:`hessian_summary` found. ``per_probe`` ``[n_probes, len(grid)]``: the
    Gaussian-smoothed (``sigma``) SLQ density of each probe; ``near_zero``: the share of the
    spectral mass within ``±near·λ_max`` of zero."""

    n_params: int
    grad_norm: float
    lam_max: float
    lam_min: float
    n_hvp_max: int
    n_hvp_min: int
    trace: float
    trace_se: float
    n_trace: int
    grid: Tensor
    per_probe: Tensor
    sigma: float
    near_zero: float
    near: float


def hessian_summary(op: HessianOperator, n_probes: int = 4, n_steps: int = 20,
                    n_trace: int = 8, near: float = 0.05, grid_points: int = 400
                    ) -> HessianSummary:
    """λ_max and λ_min (Lanczos), the trace (Hutchinson, ``n_trace`` probes) and the eigenvalue
    density (SLQ, ``n_probes`` probes of ``n_steps`` steps, smoothed with σ = 1 % of
    λ_max − λ_min) of the Hessian behind ``op``; the P×P matrix is never formed."""
    if n_probes < 1:
        raise ValueError(f"n_probes must be ≥ 1, got {n_probes}")
    top = top_eigenvalues(None, None, None, None, k=1, tol=1e-4, hvp=op)
    low = min_eigenvalue(None, None, None, None, tol=1e-3, max_iter=80, hvp=op)
    dens = spectral_density(None, None, None, None, n_steps=n_steps, n_vectors=n_probes, hvp=op)
    trace = hutchinson_trace(None, None, None, None, n_samples=n_trace, hvp=op)
    lam_max, lam_min = float(top.eigenvalues[0]), float(low.eigenvalues[0])
    grid = torch.linspace(float(dens.nodes.min()) - 1, float(dens.nodes.max()) + 1, grid_points,
                          dtype=torch.float64)
    sigma = 0.01 * (lam_max - lam_min) if lam_max > lam_min else 1e-3
    per_probe = torch.stack([DensityResult(dens.nodes[i:i + 1], dens.weights[i:i + 1], 0,
                                           dens.n_params).density(grid, sigma)
                             for i in range(n_probes)])
    near_zero = float(dens.weights[dens.nodes.abs() < near * abs(lam_max)].sum()
                      / dens.weights.sum())
    return HessianSummary(op.n_params, float(op.grad.detach().norm()), lam_max, lam_min,
                          top.n_hvp, low.n_hvp, trace.trace, trace.std_error, trace.n_hvp, grid,
                          per_probe, sigma, near_zero, near)
