"""Convolutions (1-D, 2-D, 3-D): the materialised rule, its exact paths and their cost model,
and the Gram, norm and sketch forms of a convolution as a Linear layer on unfolded patches.

**Materialised** (:func:`conv_rule`): :func:`conv_weight` gives ``∂l_n/∂W`` for every sample of
a batch from the layer's input ``a`` and output gradient ``δ``, by the path :func:`conv_path`
picks for the layer's shape (a grouped ``convolution_backward`` with the batch folded into the
groups, one ``bmm`` for 1x1 kernels, one ``bmm`` per kernel tap for a 1-channel input, a
depthwise call, im2col + ``einsum``, or one summed gradient per sample); :func:`fused_backward`
adds ``∂L/∂a`` in the same step where that is cheaper than autograd's (:class:`FusedConv`). The
measurements behind each path are in the docstrings and ``benchmarks/README.md``.

**Gram, norms, sketch**: with ``A_i = unfold(a_i)`` (``T`` output positions x ``C_in/g · K``
patch values, per group) and ``B_i`` the output gradient (``T x C_out/g``), group ``c`` of the
per-sample weight gradient is ``B_{i,c}ᵀ A_{i,c}``, so the forms of
:mod:`gradkit.grads.rules.linear` apply group by group and add up (groups are disjoint blocks
of the weight); the unfolded input costs ``N T C_in K`` numbers, and 1-D / 2-D convolutions
have it (``F.unfold``), 3-D ones are always materialised.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradkit.grads.rules.registry import Factored, register_factored, register_rule, wants

__all__ = ["FusedConv", "conv_factored", "conv_path", "conv_rule", "conv_sizes", "conv_weight",
           "fused_backward", "fuses", "unfold_factors"]


def conv_weight(m: nn.Conv1d | nn.Conv2d | nn.Conv3d, a: Tensor, d: Tensor) -> Tensor:
    """Per-sample conv weight gradient -> ``[n, *weight.shape]``.

    ``∂l_n/∂W[o, c, i, j] = Σ_{h,w} δ[n, o, h, w] · a_pad[n, c, h·s + i·r, w·s + j·r]``
    (stride ``s``, dilation ``r``). The batch is folded into the channels: ``a`` as one sample
    with ``n·C_in`` channels and ``δ`` with ``n·C_out``, convolved with ``n·groups`` groups, is
    ``n`` independent convolutions, and the *summed* weight gradient of that grouped
    convolution (``aten.convolution_backward``, batch 1) is exactly the stack of the ``n``
    per-sample weight gradients: as fast as the ordinary summed weight gradient, and faster
    than one batched matmul per kernel tap, ``F.unfold`` (im2col) + ``bmm`` as in
    Opacus/BackPACK, the "conv as correlation" trick (``conv2d`` of the channel-major input with
    ``δ`` as ``n·C_out`` kernels) or channels_last tensors (figures: benchmarks/README.md,
    "Timing notes moved from the code").

    Three layer shapes get their own, faster, path:

    - 1x1 kernels without padding (the ResNet skips): ``δ_n · a_n[:, ::s, ::s]ᵀ``, one ``bmm``.
    - one input channel and one group (the 1-channel stem): one ``bmm`` per kernel tap on
      views (:func:`_taps_weight`), steady from run to run where oneDNN's depthwise kernel
      with ``n·C_out`` groups is fast only on some runs and batch sizes. With more input
      channels the per-tap products are slower than the grouped call.
    - one input channel per group, several groups: ``a`` repeated over the output channels
      of its group makes a depthwise convolution with ``n·C_out`` groups, which oneDNN handles
      faster than the grouped call. Depthwise paths for more input channels were much slower
      (the repeated ``a`` is big).
    """
    n, w = a.shape[0], m.weight.detach()
    path = conv_path(m, a.shape)
    if path == "bmm":
        strided = a[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in m.stride)]
        return torch.bmm(d.flatten(2), strided.flatten(2).transpose(1, 2)).view(n, *w.shape)
    if path == "taps":
        return _taps_weight(m, a, d)
    if path == "depthwise":  # one input channel per group: repeat it over the group's outputs
        g, space = m.groups, a.shape[2:]
        a = a.reshape(n, g, 1, *space).expand(n, g, w.shape[0] // g, *space).reshape(n, -1, *space)
        return _grouped_backward(m, a, d, n * w.shape[0], input_grad=False)[1]
    if path == "grouped":
        return _grouped_backward(m, a, d, n * m.groups, input_grad=False)[1]
    if path == "unfold":
        return _unfold_weight(m, a, d)
    return torch.cat([_grouped_backward(m, a[i : i + 1], d[i : i + 1], m.groups, False)[1]
                      for i in range(n)])  # "loop": one summed weight gradient per sample


# The cost model of the conv weight rule (figures: benchmarks/README.md, "Large convolutions").
# The grouped call (n·groups groups) is as fast as the summed weight gradient while a group is
# small (the ranker: 8-32 channels, 3x3) but oneDNN's grouped kernels degrade with wide groups
# (Conv1d(250, 2000, 32): many times the summed gradient). Above these sizes the same
# products go through im2col (``F.unfold``) + one batched matmul, whose cost is the summed
# gradient's flops plus writing the unfolded input, or, when that copy would exceed
# _UNFOLD_BYTES, through one summed weight gradient per sample ("loop": no extra memory).
_GROUP_MAX_OUT = 256  # output channels per group
_GROUP_MAX_WEIGHT = 2**17  # weight elements per group (C_in/g · C_out/g · kernel)
_UNFOLD_BYTES = 256 * 2**20


def conv_path(m: nn.Module, a_shape: torch.Size | tuple[int, ...]) -> str:
    """Which exact path :func:`conv_weight` takes for input shape ``a_shape`` (the cost model).

    ``"bmm"`` (1x1, no padding, no groups), ``"taps"`` (one input channel, no groups, 1-D or
    2-D), ``"depthwise"`` (one input channel per group),
    ``"grouped"`` (small groups: ≤ _GROUP_MAX_OUT outputs and ≤ _GROUP_MAX_WEIGHT weight elements
    per group), else ``"unfold"`` (2-D, or 1-D as 2-D, when the unfolded input fits
    _UNFOLD_BYTES) or ``"loop"`` (one summed weight gradient per sample).
    """
    return _path(tuple(m.weight.shape), m.groups, tuple(m.padding), tuple(m.stride),
                 tuple(m.dilation), tuple(a_shape))


@functools.lru_cache(maxsize=1024)  # asked several times per layer and chunk
def _path(w: tuple[int, ...], g: int, padding, stride, dilation, a_shape) -> str:
    if g == 1 and all(k == 1 for k in w[2:]) and not any(padding):
        return "bmm"
    if w[1] == 1:
        return "taps" if g == 1 and len(w) <= 4 else "depthwise"
    if w[0] // g <= _GROUP_MAX_OUT and math.prod(w[1:]) * (w[0] // g) <= _GROUP_MAX_WEIGHT:
        return "grouped"
    if len(w) <= 4:
        out = [(L + 2 * p - r * (k - 1) - 1) // s + 1 for L, p, r, k, s in
               zip(a_shape[2:], padding, dilation, w[2:], stride, strict=True)]
        size = a_shape[0] * w[1] * g * math.prod(w[2:]) * math.prod(out) * 4
        if size <= _UNFOLD_BYTES:
            return "unfold"
    return "loop"


def _taps_weight(m, a: Tensor, d: Tensor) -> Tensor:
    """``∂l_n/∂W[:, :, i, j] = δ_n · a_pad[n, :, i·r + s·h, j·r + s·w]ᵀ``: one ``bmm`` per kernel
    tap, on views of the input (no im2col copy).

    The padded input is split once into its ``s x s`` stride phases (plane ``(p, q)`` holds
    ``a_pad[p::s, q::s]``), each plane flattened row by row, and δ's rows are padded with zeros
    to the plane's width ``Wq``. The input positions a tap reads for the flattened output
    positions ``h·Wq + w`` are then one contiguous slice of its plane (a row's extra columns
    meet zeros of δ). 1-D convs run as 2-D of height 1.
    """
    n, w, g = a.shape[0], m.weight, m.groups
    pairs = list(zip(w.shape[2:], m.stride, m.padding, m.dilation, strict=True))
    if w.dim() == 3:
        a, d, pairs = a.unsqueeze(2), d.unsqueeze(2), [(1, 1, 0, 1), *pairs]
    (kh, sh, ph, rh), (kw, sw, pw, rw) = pairs
    c, o, (H, W), (Ho, Wo) = a.shape[1] // g, w.shape[0] // g, a.shape[2:], d.shape[2:]
    Hq, Wq = -(-(H + 2 * ph) // sh), -(-(W + 2 * pw) // sw)  # a phase plane's height, width
    apad = F.pad(a.reshape(n * g, c, H, W), (pw, Wq * sw - W - pw, ph, Hq * sh - H - ph))
    planes = a.new_zeros(n * g, c, sh, sw, Hq + 1, Wq)  # a spare row for the last slices
    planes[..., :Hq, :] = apad.view(n * g, c, Hq, sh, Wq, sw).permute(0, 1, 3, 5, 2, 4)
    planes = planes.view(n * g, c, sh, sw, -1)
    length = Ho * Wq
    dq = F.pad(d.reshape(n * g, o, Ho, Wo), (0, Wq - Wo)).view(n * g, o, length)
    out = a.new_empty(kh, kw, n * g, o, c)
    for i in range(kh):
        for j in range(kw):
            y, x = i * rh, j * rw
            start = (y // sh) * Wq + x // sw
            torch.bmm(dq, planes[:, :, y % sh, x % sw, start:start + length].transpose(1, 2),
                      out=out[i, j])
    return out.permute(2, 3, 4, 0, 1).reshape(n, *w.shape)


def _unfold_weight(m, a: Tensor, d: Tensor) -> Tensor:
    """``∂l_n/∂W = δ_n · unfold(a_n)ᵀ`` per group (im2col, as Opacus / BackPACK)."""
    n, w, g = a.shape[0], m.weight, m.groups
    pairs = list(zip(w.shape[2:], m.dilation, m.padding, m.stride, strict=True))
    if w.dim() == 3:  # a 1-D conv as a 2-D conv of height 1
        a, pairs = a.unsqueeze(2), [(1, 1, 0, 1), *pairs]
    k, r, p, s = zip(*pairs, strict=True)
    cols = F.unfold(a, k, dilation=r, padding=p, stride=s)  # [n, C_in·K, L]
    cols = cols.view(n, g, -1, cols.shape[-1])
    dg = d.reshape(n, g, w.shape[0] // g, -1)
    return torch.einsum("ngol,ngil->ngoi", dg, cols).reshape(n, *w.shape)


def _grouped_backward(m, a: Tensor, d: Tensor, groups: int, input_grad: bool):
    """``(∂L/∂a or None, per-sample ∂l_n/∂W)`` from one ``convolution_backward`` of the batch
    folded into ``groups`` groups (see :func:`conv_weight`)."""
    n, w = a.shape[0], m.weight.detach()
    if input_grad:
        stacked = w.expand(n, *w.shape).reshape(n * w.shape[0], *w.shape[1:])  # W per sample
    else:  # only its shape matters: the weight gradient does not read the weight
        stacked = w.new_zeros(()).expand(n * w.shape[0], *w.shape[1:])
    ga, gw, _ = torch.ops.aten.convolution_backward(
        d.reshape(1, -1, *d.shape[2:]), a.reshape(1, -1, *a.shape[2:]), stacked, None,
        list(m.stride), list(m.padding), list(m.dilation), False, [0] * len(m.stride),
        groups, [input_grad, True, False],
    )
    return (ga.reshape(a.shape) if input_grad else None), gw.reshape(n, *w.shape)


def fused_backward(m, a: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
    """``(∂L/∂a, per-sample ∂l_n/∂W)`` of conv ``m`` (a path that
    :func:`fuses` accepts)."""
    if conv_path(m, a.shape) == "bmm":
        return _pointwise_input_grad(m, a, d), conv_weight(m, a, d)
    return _grouped_backward(m, a, d, a.shape[0] * m.groups, input_grad=True)


def _pointwise_input_grad(m, a: Tensor, d: Tensor) -> Tensor:
    """``∂L/∂a`` of a 1x1 conv without padding: ``Wᵀ δ[n, :, p]`` at the input positions
    ``s·p`` it reads (stride ``s``), zero between them. One matmul, faster than oneDNN's input
    gradient of the ranker's stride-2 1x1 skips (benchmarks/README.md)."""
    n, w = a.shape[0], m.weight.detach()
    on = torch.matmul(w.flatten(1).t(), d.flatten(2))  # [n, C_in, positions read]
    if all(s == 1 for s in m.stride):
        return on.view(a.shape)
    ga = a.new_zeros(a.shape)
    ga[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in m.stride)] = on.view(
        n, -1, *d.shape[2:])
    return ga


@register_rule(nn.Conv1d, nn.Conv2d, nn.Conv3d)
def conv_rule(m: nn.Conv2d, a: Tensor, d: Tensor, weight: bool = True) -> dict[str, Tensor]:
    """Weight: :func:`conv_weight`; bias:
    ``∂l_n/∂b[o] = Σ_positions δ[n, o]``."""
    out = {}
    if weight and wants(m.weight):
        out["weight"] = conv_weight(m, a, d)
    if wants(m.bias):
        out["bias"] = d.reshape(d.shape[0], d.shape[1], -1).sum(2)
    return out


# Unstrided convolutions with at most this many input channels per group whose input needs a
# gradient take both gradients in one grouped call (FusedConv): faster up to 8 input channels,
# slower above (and with stride 2), so those stay separate (figures: benchmarks/README.md).
# 1x1 convs take their input gradient by one matmul (:func:`fused_backward`).
_FUSE_MAX_IN = 8


def fuses(m: nn.Module, a: Tensor) -> bool:
    """Whether conv ``m`` takes its input and per-sample weight gradients in one step
    (:func:`fused_backward`)."""
    if not (isinstance(m, nn.modules.conv._ConvNd) and wants(m.weight) and a.requires_grad):
        return False
    path = conv_path(m, a.shape)
    return path == "bmm" or (path == "grouped" and m.weight.shape[1] <= _FUSE_MAX_IN
                             and all(s == 1 for s in m.stride))


class FusedConv(torch.autograd.Function):
    """A conv output (computed by the module, handed over in ``box``) whose backward computes
    ``∂L/∂a`` and the per-sample ``∂l_n/∂W`` in one step
    (:func:`fused_backward`), where autograd would run the input gradient
    and the hook the weight gradients separately."""

    @staticmethod
    def forward(ctx, a, m, box, store):
        ctx.save_for_backward(a)
        ctx.m, ctx.store = m, store
        return box.pop()  # not an input: autograd attaches this node to it, no copy

    @staticmethod
    def backward(ctx, d):
        (a,), m = ctx.saved_tensors, ctx.m
        ga, gw = fused_backward(m, a, d)
        ctx.store({"weight": gw, **conv_rule(m, a, d, weight=False)})
        return ga, None, None, None


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


@register_factored(nn.Conv1d, nn.Conv2d, nn.Conv3d)
def conv_factored(m: nn.Module, a: Tensor, d: Tensor) -> Factored:
    """A grouped Linear layer on unfolded patches (:func:`unfold_factors`, built only when the
    ghost form is chosen; 3-D convolutions have none)."""
    t, d_in, d_out, g = conv_sizes(m, d)
    unfolds = m.weight.dim() <= 4
    size = a.shape[0] * t * d_in * g * a.element_size() if unfolds else math.inf
    return Factored(t, d_in, d_out, g, lambda: unfold_factors(m, a, d) if unfolds else None, size,
                    rest=lambda: conv_rule(m, a, d, weight=False))


def examples() -> list[tuple[nn.Module, tuple[int, ...]]]:
    """Layers and per-sample input shapes for the shared test grid (tests/grads/test_rules.py)."""
    return [(nn.Conv1d(2, 4, 3, padding=1), (2, 9)),
            (nn.Conv2d(4, 4, 3, stride=2, groups=2), (4, 7, 6)),
            (nn.Conv3d(2, 3, 2), (2, 4, 3, 3))]
