"""Classification: softmax, and the gradient of MSE vs cross-entropy w.r.t. the logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ce_grad_logits", "mse_grad_logits", "softmax", "train_linear"]


def softmax(z: Tensor) -> Tensor:
    """``y'_i = exp(z_i) / Σ_j exp(z_j)`` along the last axis (shifted by max z for stability)."""
    e = torch.exp(z - z.max(-1, keepdim=True).values)
    return e / e.sum(-1, keepdim=True)


def ce_grad_logits(z: Tensor, target: Tensor) -> Tensor:
    """``∂e/∂z`` of ``e = −Σ_i ŷ_i ln y'_i`` (one-hot ŷ, y' = softmax z): ``y' − ŷ``."""
    return softmax(z) - F.one_hot(target, z.shape[-1]).to(z.dtype)


def mse_grad_logits(z: Tensor, target: Tensor) -> Tensor:
    """``∂e/∂z`` of ``e = Σ_i (ŷ_i − y'_i)²``: ``J ᵀ 2(y' − ŷ)`` with the softmax Jacobian
    ``J = diag(y') − y'y'ᵀ``. J → 0 when y' saturates (one y'_i → 1), so the gradient vanishes
    even when the prediction is confidently *wrong*."""
    p = softmax(z)
    r = 2 * (p - F.one_hot(target, z.shape[-1]).to(z.dtype))
    return p * r - p * (p * r).sum(-1, keepdim=True)


def train_linear(model: torch.nn.Module, loss_fn, x: Tensor, y: Tensor, lr: float = 0.5,
                 steps: int = 300) -> list[float]:
    """Full-batch SGD on ``loss_fn(model(x))`` for ``steps`` steps; returns the cross-entropy
    ``CE(model(x), y)`` before each step (the quantity compared whatever loss is trained)."""
    sgd = torch.optim.SGD(model.parameters(), lr=lr)
    curve = []
    for _ in range(steps):
        logits = model(x)
        curve.append(float(F.cross_entropy(logits.detach(), y)))
        sgd.zero_grad()
        loss_fn(logits).backward()
        sgd.step()
    return curve
