"""Convolutions' Gram, norm and sketch forms: a convolution is a Linear layer on unfolded patches.

With ``A_i = unfold(a_i)`` (``T`` output positions x ``C_in/g · K`` patch values, per group) and
``B_i`` the output gradient (``T x C_out/g``), group ``c`` of the per-sample weight gradient is
``B_{i,c}ᵀ A_{i,c}``, so the forms of :mod:`gradkit.grads.rules.linear` apply group by group and
add up (groups are disjoint blocks of the weight). The materialised rule is
:func:`gradkit.grads.convs.conv_weight`; the unfolded input costs ``N T C_in K`` numbers, and
1-D / 2-D convolutions have it (``F.unfold``), 3-D ones are always materialised.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["conv_sizes", "unfold_factors"]


def conv_sizes(m: nn.Module, d: Tensor) -> tuple[int, int, int, int]:
    """``(T, d_in, d_out, groups)`` of conv ``m`` as a grouped Linear layer: output positions,
    patch values and output channels per group."""
    w, g = m.weight, m.groups
    return math.prod(d.shape[2:]), math.prod(w.shape[1:]), w.shape[0] // g, g


def unfold_factors(m: nn.Module, a: Tensor, d: Tensor) -> list[tuple[Tensor, Tensor]] | None:
    """``[(A_c [n, T, C_in/g·K], B_c [n, T, C_out/g]) per group c]``, or None (3-D: no unfold)."""
    w = m.weight
    if w.dim() > 4:
        return None
    n, g = a.shape[0], m.groups
    pairs = list(zip(w.shape[2:], m.dilation, m.padding, m.stride, strict=True))
    if w.dim() == 3:  # a 1-D conv as a 2-D conv of height 1
        a, pairs = a.unsqueeze(2), [(1, 1, 0, 1), *pairs]
    k, r, p, s = zip(*pairs, strict=True)
    cols = F.unfold(a, k, dilation=r, padding=p, stride=s)  # [n, C_in·K, T], channel-major
    t = cols.shape[-1]
    cols = cols.view(n, g, -1, t).transpose(2, 3)  # [n, g, T, C_in/g·K]
    outs = d.reshape(n, g, -1, t).transpose(2, 3).to(a.dtype)  # [n, g, T, C_out/g]
    return [(cols[:, c], outs[:, c]) for c in range(g)]
