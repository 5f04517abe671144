"""Critical points: find one of any kind, and tell its kind from the Hessian."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["classify_critical_point", "find_critical_point"]


def find_critical_point(loss: Callable[[Tensor], Tensor], theta0: Tensor, tol: float = 1e-9,
                        max_iter: int = 200, damping: float = 1e-3) -> tuple[Tensor, list[float]]:
    """A point with ``‖∇L(θ)‖ ≤ tol`` near ``theta0``, whatever its kind (minimum or saddle).

    Gradient descent is repelled by saddles; Newton's method is not, it solves ∇L(θ) = 0. Here
    Levenberg–Marquardt on the residual r(θ) = ∇L(θ) (Jacobian H, symmetric):
    ``δ = −(H² + λI)⁻¹ H ∇L``, accepted if it lowers ‖∇L‖ (then λ ← λ/3) else λ ← 10λ.
    Uses the dense Hessian (``torch.func.hessian``): tiny models only. Returns θ and the
    gradient norm after each accepted step (first entry: at θ0).
    """
    grad_fn, hess_fn = torch.func.grad(loss), torch.func.hessian(loss)
    theta = theta0.detach().clone()
    g = grad_fn(theta)
    norms = [float(g.norm())]
    lam, eye = damping, torch.eye(theta.numel(), dtype=theta.dtype)
    for _ in range(max_iter):
        if norms[-1] <= tol:
            break
        H = hess_fn(theta)
        step = -torch.linalg.solve(H @ H + lam * eye, H @ g)
        g_new = grad_fn(theta + step)
        if float(g_new.norm()) < norms[-1]:
            theta, g = theta + step, g_new
            norms.append(float(g.norm()))
            lam = max(lam / 3, 1e-12)
        else:
            lam *= 10
            if lam > 1e12:
                break  # no step lowers ‖∇L‖: a minimum of ‖∇L‖ that is not a critical point
    return theta, norms


def classify_critical_point(eigenvalues: Tensor, rel_tol: float = 1e-6) -> str:
    """From the Hessian's eigenvalues at a critical point (the notes' second-order test).

    Eigenvalues with ``|λ| ≤ rel_tol · max|λ|`` count as zero. All > 0: ``"local minimum"``;
    all < 0: ``"local maximum"``; both signs: ``"saddle point"``; no negative but some zero:
    ``"degenerate (flat directions; no negative curvature)"`` — the second-order test is
    inconclusive there.
    """
    ev = eigenvalues.detach().to(torch.float64)
    zero = rel_tol * float(ev.abs().max())
    neg, pos = int((ev < -zero).sum()), int((ev > zero).sum())
    if neg and pos:
        return "saddle point"
    if neg:
        return "local maximum" if neg == ev.numel() else "degenerate (flat directions)"
    if pos == ev.numel():
        return "local minimum"
    return "degenerate (flat directions; no negative curvature)"
