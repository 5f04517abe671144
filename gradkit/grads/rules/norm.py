"""Normalisation layers: LayerNorm and BatchNorm (eval) by a rule, GroupNorm by a replay.

Their per-sample gradients are ``N x C``-sized (``Σ δ ⊙ x̂`` and ``Σ δ`` over the positions the
affine parameters are broadcast across), so the Gram path materialises them
(:mod:`gradkit.grads.gramsink`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradkit.grads.rules.registry import register_replay, register_rule, wants

__all__ = ["group_norm_replay"]


def _normalised(m: nn.Module, a: Tensor) -> Tensor:
    """``x̂``: the layer's input normalised exactly as its forward does, before the affine map."""
    if isinstance(m, nn.LayerNorm):
        return F.layer_norm(a, m.normalized_shape, eps=m.eps)
    if m.training or m.running_mean is None:
        # BatchNorm on the batch's statistics (the engine refuses it: the samples interact; the
        # tracker, reading a training step, gets each sample's share of the batch gradient)
        dims = (0, *range(2, a.dim()))
        mean, var = a.mean(dims, keepdim=True), a.var(dims, unbiased=False, keepdim=True)
    else:  # BatchNorm in eval mode: running statistics
        shape = (1, -1) + (1,) * (a.dim() - 2)
        mean, var = m.running_mean.reshape(shape), m.running_var.reshape(shape)
    return (a - mean) * torch.rsqrt(var + m.eps)



@register_rule(nn.LayerNorm, any_dim=True)
@register_rule(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
def _norm_rule(m: nn.Module, a: Tensor, d: Tensor) -> dict[str, Tensor]:
    """``y = x̂ ⊙ γ + β``: ``∂l_n/∂γ = Σ δ[n] ⊙ x̂[n]``, ``∂l_n/∂β = Σ δ[n]`` over the positions
    the affine parameters are broadcast across (spatial dims; leading dims for LayerNorm)."""
    if isinstance(m, nn.LayerNorm):
        dims = tuple(range(1, a.dim() - len(m.normalized_shape)))
    else:
        dims = tuple(range(2, a.dim()))
    out = {}
    if wants(m.weight):
        prod = _normalised(m, a).mul_(d)  # in place: one temporary less, faster
        out["weight"] = prod.sum(dims) if dims else prod
    if wants(getattr(m, "bias", None)):
        out["bias"] = d.sum(dims) if dims else d
    return out


class _GroupNorm(torch.autograd.Function):
    """GroupNorm whose backward gives the input gradient and the per-sample ``γ``, ``β``
    gradients in one ``native_group_norm_backward``: the batch of ``n`` samples as one sample
    of ``n·C`` channels in ``n·G`` groups normalises exactly the same groups, and that call's
    "summed" ``γ``, ``β`` gradients are then the ``n`` per-sample ones (PyTorch's own form,
    ``Σ_s δ x̂`` and ``Σ_s δ``): as fast as the input gradient alone, where recomputing ``x̂``
    for the products cost more (benchmarks/README.md)."""

    @staticmethod
    def forward(ctx, a, weight, bias, m, store):
        n, c, g = a.shape[0], a.shape[1], m.num_groups
        y, mean, rstd = torch.native_group_norm(a, weight, bias, n, c, a[0, 0].numel(), g, m.eps)
        ctx.save_for_backward(a, mean, rstd, weight)
        ctx.m, ctx.store, ctx.wants = m, store, (wants(weight), wants(bias))
        return y

    @staticmethod
    def backward(ctx, dy):
        a, mean, rstd, weight = ctx.saved_tensors
        n, c, g = a.shape[0], a.shape[1], ctx.m.num_groups
        dx, dw, db = torch.ops.aten.native_group_norm_backward(
            dy.contiguous().view(1, n * c, -1), a.contiguous().view(1, n * c, -1),
            mean.view(1, -1), rstd.view(1, -1), weight.detach().repeat(n), 1, n * c,
            a[0, 0].numel(), n * g, [ctx.needs_input_grad[0], *ctx.wants])
        ctx.store({k: t.view(n, c) for k, t, w in (("weight", dw, ctx.wants[0]),
                                                   ("bias", db, ctx.wants[1])) if w})
        return (dx.view(a.shape) if dx is not None else None), None, None, None, None


def group_norm_replay(m: nn.GroupNorm, args: tuple, kwargs: dict, sample_dim: int,
                      store: Callable[[dict[str, Tensor]], None]):
    """``m(a)`` as :class:`_GroupNorm`, run instead of ``m``'s forward (a replay rule): the
    output, and the tensor whose gradient the pass must request (``a``, else a parameter)."""
    a = args[0] if len(args) == 1 and not kwargs else None
    if not isinstance(a, Tensor) or a.dim() < 2 or sample_dim != 0 or not m.affine:
        return "GroupNorm called other than as m(x) with the samples on dim 0"
    y = _GroupNorm.apply(a, m.weight, m.bias, m, store)
    return y, [a] if a.requires_grad else [p for p in (m.weight, m.bias) if wants(p)]



register_replay(nn.GroupNorm)(group_norm_replay)


def examples() -> list[tuple[nn.Module, tuple[int, ...]]]:
    """Layers and per-sample input shapes for the shared test grid (``tests/grads/test_rules.py``)
    (BatchNorm with running statistics: the grid runs in eval mode)."""
    return [(nn.LayerNorm(6), (3, 6)), (nn.BatchNorm1d(3), (3, 5)), (nn.BatchNorm2d(2), (2, 3, 3)),
            (nn.BatchNorm3d(2), (2, 2, 2, 2)), (nn.GroupNorm(2, 4), (4, 5))]
