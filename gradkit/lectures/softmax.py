"""Classification: softmax, and the gradient of MSE vs cross-entropy w.r.t. the logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ce_grad_logits", "gradients_against_autograd", "margin_sweep", "mse_grad_logits",
           "saturated_start_curves", "softmax", "train_linear"]


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


def gradients_against_autograd(n: int = 8, n_classes: int = 3, seed: int = 0) -> dict[str, float]:
    """Largest ``|ours − PyTorch's|`` on ``n`` random float64 logit rows: :func:`softmax` vs
    ``torch.softmax``, the summed cross-entropy ``−Σ ŷ ln y'`` vs ``F.cross_entropy``, and
    :func:`ce_grad_logits` / :func:`mse_grad_logits` vs autograd of the two losses."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, n_classes, dtype=torch.float64, generator=gen, requires_grad=True)
    y = torch.randint(0, n_classes, (n,), generator=gen)
    onehot = F.one_hot(y, n_classes).to(z.dtype)
    ce = F.cross_entropy(z, y, reduction="sum")
    mse = ((onehot - torch.softmax(z, -1)) ** 2).sum()
    (g_ce,), (g_mse,) = torch.autograd.grad(ce, z), torch.autograd.grad(mse, z)
    z = z.detach()
    pairs = {"softmax": (softmax(z), torch.softmax(z, -1)),
             "cross-entropy": (-(onehot * softmax(z).log()).sum(), ce.detach()),
             "∂CE/∂z": (ce_grad_logits(z, y), g_ce), "∂MSE/∂z": (mse_grad_logits(z, y), g_mse)}
    return {k: float((a - b).abs().max()) for k, (a, b) in pairs.items()}


def margin_sweep(margins: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Three classes, target 0, logits ``(−m/2, m/2, 0)`` for each margin ``m`` of the wrong
    class 1 over the right one: ``(softmax [len(m), 3], ‖∂CE/∂z‖, ‖∂MSE/∂z‖)``."""
    m = torch.as_tensor(margins, dtype=torch.float64)
    z = torch.stack([-m / 2, m / 2, torch.zeros_like(m)], 1)
    target = torch.zeros(len(m), dtype=torch.long)
    return (softmax(z), ce_grad_logits(z, target).norm(dim=1),
            mse_grad_logits(z, target).norm(dim=1))


def saturated_start_curves(x: Tensor, y: Tensor, n_classes: int, lr: float = 0.5,
                           steps: int = 300, bias: float = 10.0, seed: int = 0
                           ) -> dict[str, list[float]]:
    """A linear classifier ``x → n_classes`` started saturated on class 0 (bias ``bias`` on
    class 0, weights 0.01·N(0, 1)) and trained with :func:`train_linear` once on the
    cross-entropy and once on the MSE of the softmax; the training cross-entropy before each
    step of both (``{"cross-entropy": [...], "MSE": [...]}``), from the same start."""
    x = x.to(torch.float64)
    gen = torch.Generator().manual_seed(seed)
    start = torch.nn.Linear(x.shape[1], n_classes).double()
    with torch.no_grad():
        start.weight.copy_(0.01 * torch.randn(start.weight.shape, generator=gen,
                                              dtype=torch.float64))
        start.bias.zero_()
        start.bias[0] = bias
    onehot = F.one_hot(y, n_classes).to(torch.float64)

    def mse(logits: Tensor) -> Tensor:
        return ((torch.softmax(logits, -1) - onehot) ** 2).sum(1).mean()

    curves = {}
    for name, loss in (("cross-entropy", lambda logits: F.cross_entropy(logits, y)),
                       ("MSE", mse)):
        model = torch.nn.Linear(x.shape[1], n_classes).double()
        model.load_state_dict(start.state_dict())
        curves[name] = train_linear(model, loss, x, y, lr=lr, steps=steps)
    return curves
