"""Feature normalisation: why features on different scales make a badly conditioned loss.

For a linear model ``ŷ = Xw`` with the mean squared error ``L(w) = (1/2N) ||Xw − t||²`` the
Hessian is ``H = XᵀX / N``; gradient descent's speed is limited by its condition number
``κ = λ_max / λ_min`` (the loss surface's contours are ellipses with axis ratio ``√κ``).
Standardising each feature (``(x − mean) / std``) turns ``H`` into the features' correlation
matrix, whose condition number is ``(1 + |ρ|) / (1 − |ρ|)`` for two features.
"""

from __future__ import annotations

import numpy as np

__all__ = ["condition_number", "loss_surface", "standardise", "surface_around_optimum"]


def standardise(X: np.ndarray) -> np.ndarray:
    """``(x − mean) / std`` per column (population std; a constant column raises)."""
    X = np.asarray(X, dtype=float)
    sd = X.std(0)
    if (sd == 0).any():
        raise ValueError(f"columns {np.flatnonzero(sd == 0).tolist()} are constant")
    return (X - X.mean(0)) / sd


def condition_number(X: np.ndarray) -> float:
    """``κ(XᵀX / N)``: the ratio of the largest to the smallest eigenvalue of the Hessian."""
    X = np.asarray(X, dtype=float)
    ev = np.linalg.eigvalsh(X.T @ X / len(X))
    return float(ev[-1] / ev[0]) if ev[0] > 0 else float("inf")


def loss_surface(X: np.ndarray, t: np.ndarray, w1: np.ndarray, w2: np.ndarray) -> np.ndarray:
    """``L(w) = (1/2N) ||Xw − t||²`` of a two-feature linear model on the grid ``w1 × w2``
    (``[len(w2), len(w1)]``, rows along ``w2`` as ``meshgrid``)."""
    X, t = np.asarray(X, dtype=float), np.asarray(t, dtype=float)
    W1, W2 = np.meshgrid(w1, w2)
    pred = X[:, 0, None, None] * W1 + X[:, 1, None, None] * W2
    return 0.5 * ((pred - t[:, None, None]) ** 2).mean(0)


def surface_around_optimum(X: np.ndarray, t: np.ndarray, n: int = 120):
    """``(w1, w2, L, κ)``: :func:`loss_surface` on an ``n × n`` grid centred on the least-squares
    weights (half-width ``3|w*| + 0.5/std`` per feature, so both the optimum and the valley's
    shape are in view) and :func:`condition_number` of ``X``."""
    X, t = np.asarray(X, dtype=float), np.asarray(t, dtype=float)
    w_opt = np.linalg.lstsq(X, t, rcond=None)[0]
    half = 3 * np.abs(w_opt) + 0.5 / X.std(0)
    w1, w2 = (np.linspace(w_opt[k] - half[k], w_opt[k] + half[k], n) for k in range(2))
    return w1, w2, loss_surface(X, t, w1, w2), condition_number(X)
