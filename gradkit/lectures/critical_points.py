"""Critical points: find one of any kind, and tell its kind from the Hessian."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["classify_critical_point", "critical_point_table", "find_critical_point",
           "loss_along"]


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


def critical_point_table(loss: Callable[[Tensor], Tensor], starts: dict[str, Tensor],
                         tol: float = 1e-8, max_iter: int = 200, rel_tol: float = 1e-6):
    """:func:`find_critical_point` from each named start, then the dense Hessian's spectrum there.

    Returns ``(table, points)``: ``table`` one row per start (index ``start``; columns
    ``LM steps``, ``|∇L| reached``, ``loss``, ``λ_min``, ``λ_max``, ``# λ<0``, ``# λ>0`` — counted
    beyond ``rel_tol · max|λ|`` as in :func:`classify_critical_point` — and ``kind``), and
    ``points``: start name → ``(θ, eigenvalues ascending)``. Dense Hessian: tiny models only.
    """
    import pandas as pd

    hessian_of = torch.func.hessian(loss)
    rows, points = [], {}
    for name, theta0 in starts.items():
        theta, norms = find_critical_point(loss, theta0, tol=tol, max_iter=max_iter)
        ev = torch.linalg.eigvalsh(hessian_of(theta))
        points[name] = (theta, ev)
        zero = rel_tol * float(ev.abs().max())
        rows.append({"start": name, "LM steps": len(norms) - 1, "|∇L| reached": norms[-1],
                     "loss": float(loss(theta)), "λ_min": float(ev[0]), "λ_max": float(ev[-1]),
                     "# λ<0": int((ev < -zero).sum()), "# λ>0": int((ev > zero).sum()),
                     "kind": classify_critical_point(ev, rel_tol)})
    return pd.DataFrame(rows).set_index("start"), points


def loss_along(loss: Callable[[Tensor], Tensor], theta: Tensor, directions: dict[str, Tensor],
               steps: Tensor) -> dict[str, Tensor]:
    """``L(θ + s u) − L(θ)`` for every step ``s`` in ``steps`` and every named direction ``u``
    (the second-order model predicts ``½ uᵀHu s²``, i.e. ``½ λ s²`` along a unit eigenvector)."""
    base = loss(theta)
    with torch.no_grad():
        return {name: torch.stack([loss(theta + s * u) for s in steps]) - base
                for name, u in directions.items()}
