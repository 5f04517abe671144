"""The ``"layers"`` method: per-sample gradients from one forward and one backward.

Forward hooks keep each layer's input ``a`` and tensor hooks its output gradient
``δ = ∂(Σ_i l_i)/∂out``; because sample ``i`` only touches row ``i`` of every activation (eval
mode), the per-sample gradient of a layer is a per-sample contraction of ``a_i`` and ``δ_i``, one
small rule per layer type (BackPACK's design):

- Linear ``δ_iᵀ a_i`` (and ``Σ δ_i`` for the bias)
- Conv ``δ_i ⋆ a_i`` (a grouped ``convolution_backward``; 1x1 convs by one ``bmm``; 1x1 convs
  and unstrided convs with few input channels take their input gradient in the same step,
  :class:`FusedConv`)
- GroupNorm / LayerNorm / BatchNorm (eval) ``Σ δ_i ⊙ x̂_i`` and ``Σ δ_i``
- the ranker's ``InputPrompt`` ``δ_i``
- by *replay* (the module's output recomputed with hooks inside): ``LSTM``
  (:mod:`~gradkit.grads.recurrent`, a hand-written backward through time) and
  ``MultiheadAttention`` (:mod:`~gradkit.grads.attention`, its projections as Linear rules)

The backward is taken with respect to the layer outputs only, so autograd never forms the summed
weight gradients it would throw away. More layer types: :func:`register_rule`. Why each rule has
the form it has (measurements): ``benchmarks/README.md``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["any_sample_dim", "conv_path", "layers_supported", "register_replay", "register_rule",
           "replay_for", "rule_for", "unsupported_reason"]


def _conv_weight(m: nn.Conv1d | nn.Conv2d | nn.Conv3d, a: Tensor, d: Tensor) -> Tensor:
    """Per-sample conv weight gradient -> ``[n, *weight.shape]``.

    ``∂l_n/∂W[o, c, i, j] = Σ_{h,w} δ[n, o, h, w] · a_pad[n, c, h·s + i·r, w·s + j·r]``
    (stride ``s``, dilation ``r``). The batch is folded into the channels: ``a`` as one sample
    with ``n·C_in`` channels and ``δ`` with ``n·C_out``, convolved with ``n·groups`` groups, is
    ``n`` independent convolutions, and the *summed* weight gradient of that grouped
    convolution (``aten.convolution_backward``, batch 1) is exactly the stack of the ``n``
    per-sample weight gradients. Measured on this CPU (N = 128, the ranker's 3x3 layers): as
    fast as the ordinary summed weight gradient, 3-6x faster than one batched matmul per kernel
    tap, 10-60x faster than ``F.unfold`` (im2col) + ``bmm`` as in Opacus/BackPACK, 1.05-5x faster
    than the "conv as correlation" trick (``conv2d`` of the channel-major input with ``δ`` as
    ``n·C_out`` kernels) and 1.5-2.5x faster than with channels_last tensors.

    Two layer shapes get their own, measured faster, path (chunk of 64-68, medians in place):

    - 1x1 kernels without padding (the ResNet skips): ``δ_n · a_n[:, ::s, ::s]ᵀ``, one ``bmm``
      (0.07-0.11 ms instead of 0.12-0.18 alone; 0.17-0.26 instead of 0.35-0.43 ms in place).
    - one input channel per group (the 1-channel stem): ``a`` repeated over the output channels
      of its group makes a depthwise convolution with ``n·C_out`` groups, which oneDNN handles
      2x faster alone (0.22 ms instead of 0.45-0.72; 0.63-0.94 instead of 0.78-1.2 in place).
      Depthwise paths for more input channels were 10-100x slower (the repeated ``a`` is big).
    """
    n, w = a.shape[0], m.weight.detach()
    path = conv_path(m, a.shape)
    if path == "bmm":
        strided = a[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in m.stride)]
        return torch.bmm(d.flatten(2), strided.flatten(2).transpose(1, 2)).view(n, *w.shape)
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


# The cost model of the conv weight rule (measured: benchmarks/README.md, "Large convolutions").
# The grouped call (n·groups groups) is as fast as the summed weight gradient while a group is
# small (the ranker: 8-32 channels, 3x3) but oneDNN's grouped kernels degrade with wide groups
# (Conv1d(250, 2000, 32), N = 8: ~24 s against 0.3 s summed). Above these sizes the same
# products go through im2col (``F.unfold``) + one batched matmul, whose cost is the summed
# gradient's flops plus writing the unfolded input, or, when that copy would exceed
# _UNFOLD_BYTES, through one summed weight gradient per sample ("loop": no extra memory).
_GROUP_MAX_OUT = 256  # output channels per group
_GROUP_MAX_WEIGHT = 2**17  # weight elements per group (C_in/g · C_out/g · kernel)
_UNFOLD_BYTES = 256 * 2**20


def conv_path(m: nn.Module, a_shape: torch.Size | tuple[int, ...]) -> str:
    """Which exact path :func:`_conv_weight` takes for input shape ``a_shape`` (the cost model).

    ``"bmm"`` (1x1, no padding, no groups), ``"depthwise"`` (one input channel per group),
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
        return "depthwise"
    if w[0] // g <= _GROUP_MAX_OUT and math.prod(w[1:]) * (w[0] // g) <= _GROUP_MAX_WEIGHT:
        return "grouped"
    if len(w) <= 4:
        out = [(L + 2 * p - r * (k - 1) - 1) // s + 1 for L, p, r, k, s in
               zip(a_shape[2:], padding, dilation, w[2:], stride, strict=True)]
        size = a_shape[0] * w[1] * g * math.prod(w[2:]) * math.prod(out) * 4
        if size <= _UNFOLD_BYTES:
            return "unfold"
    return "loop"


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
    folded into ``groups`` groups (see :func:`_conv_weight`)."""
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


def _normalised(m: nn.Module, a: Tensor) -> Tensor:
    """``x̂``: the layer's input normalised exactly as its forward does, before the affine map."""
    if isinstance(m, nn.GroupNorm):
        return F.group_norm(a, m.num_groups, eps=m.eps)
    if isinstance(m, nn.LayerNorm):
        return F.layer_norm(a, m.normalized_shape, eps=m.eps)
    shape = (1, -1) + (1,) * (a.dim() - 2)  # BatchNorm in eval mode: running statistics
    mean, var = m.running_mean.reshape(shape), m.running_var.reshape(shape)
    return (a - mean) * torch.rsqrt(var + m.eps)


# A rule maps (layer, its input a, its output gradient δ) to the per-sample gradients of the
# layer's own parameters, {name: Tensor[n, *param.shape]}; RULE_PARAMS says which it covers.
Rule = Callable[[nn.Module, Tensor, Tensor], dict[str, Tensor]]
_RULES: dict[type, tuple[Rule, tuple[str, ...]]] = {}
_ANY_DIM: set[type] = set()  # rules that hold with the samples on any dim (moved to dim 0)


def register_rule(*types: type, params: tuple[str, ...] = ("weight", "bias"),
                  any_dim: bool = False):
    """Decorator: ``rule(module, a, δ)`` computes per-sample gradients for layers of ``types``
    (samples on dim 0 of ``a`` and ``δ``; ``any_dim``: the rule also holds when the layer sees
    them on another dim, as a Linear on time-major ``[T, N, C]``, which the pass moves to 0)."""

    def wrap(rule: Rule) -> Rule:
        for t in types:
            _RULES[t] = (rule, params)
            (_ANY_DIM.add if any_dim else _ANY_DIM.discard)(t)
        return rule

    return wrap


def any_sample_dim(m: nn.Module) -> bool:
    """Whether ``m``'s rule holds with the samples on any dim of its input and output."""
    return any(t in _ANY_DIM for t in type(m).__mro__ if t in _RULES)


# A replay rule handles a module whose forward is more than one contraction (an LSTM's
# recurrence, attention). During the pass it runs *instead of* the module's forward: called
# with the call's (args, kwargs), the dim of the samples and a ``store`` callback, it computes
# the output from the parameters' values, detached (the graph must not reach them: that is how
# the pass sees uses outside the call), with hooks on intermediate tensors that
# ``store({name: Tensor[n, *shape]})`` the per-sample gradients of the whole subtree's
# parameters (names as in named_parameters) when the backward reaches them. It returns
# (output, [those tensors]) or why it cannot (the module's own forward then runs).
Replay = Callable[[nn.Module, tuple, dict, int, Callable[[dict[str, Tensor]], None]],
                  "tuple[object, list[Tensor]] | str"]
_REPLAYS: dict[type, Replay] = {}


def register_replay(*types: type):
    """Decorator: ``replay(module, args, kwargs, sample_dim, store)`` for modules of ``types``."""

    def wrap(replay: Replay) -> Replay:
        for t in types:
            _REPLAYS[t] = replay
        return replay

    return wrap


def replay_for(m: nn.Module) -> Replay | None:
    """The replay rule registered for ``m``'s class (None: an ordinary rule or none)."""
    return next((_REPLAYS[t] for t in type(m).__mro__ if t in _REPLAYS), None)


def _wants(p: Tensor | None) -> bool:
    return p is not None and p.requires_grad


@register_rule(nn.Linear, any_dim=True)
def _linear_rule(m: nn.Linear, a: Tensor, d: Tensor) -> dict[str, Tensor]:
    """``∂l_n/∂W = Σ_t δ[n, t]ᵀ a[n, t]``, ``∂l_n/∂b = Σ_t δ[n, t]`` (``t``: any extra dims)."""
    n = a.shape[0]
    a3, d3 = a.reshape(n, -1, a.shape[-1]), d.reshape(n, -1, d.shape[-1])
    out = {}
    if _wants(m.weight):
        out["weight"] = (d3[:, 0, :, None] * a3[:, 0, None, :] if a3.shape[1] == 1
                         else torch.bmm(d3.transpose(1, 2), a3))
    if _wants(m.bias):
        out["bias"] = d3.sum(1)
    return out


@register_rule(nn.Conv1d, nn.Conv2d, nn.Conv3d)
def conv_rule(m: nn.Conv2d, a: Tensor, d: Tensor, weight: bool = True) -> dict[str, Tensor]:
    """Weight: :func:`_conv_weight`; bias: ``∂l_n/∂b[o] = Σ_positions δ[n, o]``."""
    out = {}
    if weight and _wants(m.weight):
        out["weight"] = _conv_weight(m, a, d)
    if _wants(m.bias):
        out["bias"] = d.reshape(d.shape[0], d.shape[1], -1).sum(2)
    return out


# Unstrided convolutions with at most this many input channels per group whose input needs a
# gradient take both gradients in one grouped call (FusedConv); measured at N = 68, the input +
# per-sample weight gradients: 8 -> 8 at 40x32 6.2 ms instead of 7.1 (AVX-512 machine; equal on
# the AMD EPYC AVX2 one); with 16-32 input channels at 20x16 and 10x8 the fused call was slower
# (0.9-1.2 ms instead of 0.8-1.1), and on the AVX2 machine so was 8 -> 16 with stride 2 (6.5-7.7
# ms instead of 4.0-5.1), so they stay separate. 1x1 convs take their input gradient by one
# matmul (_pointwise_input_grad).
_FUSE_MAX_IN = 8


def fuses(m: nn.Module, a: Tensor) -> bool:
    """Whether conv ``m`` takes its input and per-sample weight gradients in one step
    (:func:`_fused_backward`)."""
    if not (isinstance(m, nn.modules.conv._ConvNd) and _wants(m.weight) and a.requires_grad):
        return False
    path = conv_path(m, a.shape)
    return path == "bmm" or (path == "grouped" and m.weight.shape[1] <= _FUSE_MAX_IN
                             and all(s == 1 for s in m.stride))


def _fused_backward(m, a: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
    """``(∂L/∂a, per-sample ∂l_n/∂W)`` of conv ``m`` (a path :func:`fuses` accepts)."""
    if conv_path(m, a.shape) == "bmm":
        return _pointwise_input_grad(m, a, d), _conv_weight(m, a, d)
    return _grouped_backward(m, a, d, a.shape[0] * m.groups, input_grad=True)


def _pointwise_input_grad(m, a: Tensor, d: Tensor) -> Tensor:
    """``∂L/∂a`` of a 1x1 conv without padding: ``Wᵀ δ[n, :, p]`` at the input positions
    ``s·p`` it reads (stride ``s``), zero between them. One matmul; on the AMD EPYC (AVX2) CPU,
    N = 60-68, 3-12x faster than oneDNN's input gradient of the ranker's stride-2 1x1 skips
    (0.3-0.5 ms instead of 0.8-5.8)."""
    n, w = a.shape[0], m.weight.detach()
    on = torch.matmul(w.flatten(1).t(), d.flatten(2))  # [n, C_in, positions read]
    if all(s == 1 for s in m.stride):
        return on.view(a.shape)
    ga = a.new_zeros(a.shape)
    ga[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in m.stride)] = on.view(
        n, -1, *d.shape[2:])
    return ga


class FusedConv(torch.autograd.Function):
    """A conv output (computed by the module, handed over in ``box``) whose backward computes
    ``∂L/∂a`` and the per-sample ``∂l_n/∂W`` in one step (:func:`_fused_backward`), where
    autograd would run the input gradient and the hook the weight gradients separately."""

    @staticmethod
    def forward(ctx, a, m, box, store):
        ctx.save_for_backward(a)
        ctx.m, ctx.store = m, store
        return box.pop()  # not an input: autograd attaches this node to it, no copy

    @staticmethod
    def backward(ctx, d):
        (a,), m = ctx.saved_tensors, ctx.m
        ga, gw = _fused_backward(m, a, d)
        ctx.store({"weight": gw, **conv_rule(m, a, d, weight=False)})
        return ga, None, None, None


@register_rule(nn.LayerNorm, any_dim=True)
@register_rule(nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
def _norm_rule(m: nn.Module, a: Tensor, d: Tensor) -> dict[str, Tensor]:
    """``y = x̂ ⊙ γ + β``: ``∂l_n/∂γ = Σ δ[n] ⊙ x̂[n]``, ``∂l_n/∂β = Σ δ[n]`` over the positions
    the affine parameters are broadcast across (spatial dims; leading dims for LayerNorm)."""
    if isinstance(m, nn.LayerNorm):
        dims = tuple(range(1, a.dim() - len(m.normalized_shape)))
    else:
        dims = tuple(range(2, a.dim()))
    out = {}
    if _wants(m.weight):
        prod = _normalised(m, a).mul_(d)  # in place: one temporary less (measured 2x faster)
        out["weight"] = prod.sum(dims) if dims else prod
    if _wants(getattr(m, "bias", None)):
        out["bias"] = d.sum(dims) if dims else d
    return out


try:  # the project's additive input prompt: x -> x + P, so ∂l_n/∂P = δ[n]
    from gradkit.models import InputPrompt

    @register_rule(InputPrompt, params=("prompt",))
    def _prompt_rule(m: nn.Module, a: Tensor, d: Tensor) -> dict[str, Tensor]:
        """``x + P`` with ``P`` broadcast over the batch: ``∂l_n/∂P = δ[n]``."""
        return {"prompt": d} if _wants(m.prompt) else {}
except ImportError:  # pragma: no cover - models is optional for this module
    pass


# The replay rules, each in its own module (the math of a recurrence or of attention is longer
# than a contraction): they import nothing from here, so registering them here has no cycle.
from gradkit.grads.attention import mha_replay  # noqa: E402
from gradkit.grads.recurrent import lstm_replay  # noqa: E402

register_replay(nn.MultiheadAttention)(mha_replay)
register_replay(nn.LSTM)(lstm_replay)


def unsupported_reason(m: nn.Module) -> str | None:
    """Why the ``"layers"`` method cannot handle ``m``'s trainable parameters (None: it can)."""
    own = [name for name, p in m._parameters.items() if p is not None and p.requires_grad]
    if not own or replay_for(m) is not None:  # a replay checks each call itself
        return None
    entry = next((_RULES[t] for t in type(m).__mro__ if t in _RULES), None)
    if entry is None:
        return f"no per-sample rule for {type(m).__name__}"
    if not set(own) <= set(entry[1]):
        return f"{type(m).__name__} has parameters {own} beyond its rule's {list(entry[1])}"
    if isinstance(m, nn.modules.conv._ConvNd) and (
        m.padding_mode != "zeros" or isinstance(m.padding, str)
    ):
        return f"{type(m).__name__} with padding {m.padding!r} / mode {m.padding_mode!r}"
    return None


def rule_for(m: nn.Module) -> tuple[Rule, type]:
    """``(rule, the registered class it was registered for)`` of a supported module."""
    t = next(t for t in type(m).__mro__ if t in _RULES or t in _REPLAYS)
    return _RULES[t][0] if t in _RULES else _REPLAYS[t], t


def layers_supported(model: nn.Module) -> bool:
    """True when every trainable parameter belongs to a layer the ``"layers"`` method handles.

    Built in: ``Linear``, ``Conv1d``/``2d``/``3d`` (zero padding given as numbers, any stride,
    dilation, groups), ``GroupNorm``, ``LayerNorm``, ``BatchNorm`` (eval mode) and the project's
    ``InputPrompt``, and by replay ``LSTM`` (:mod:`~gradkit.grads.recurrent`) and
    ``MultiheadAttention`` (:mod:`~gradkit.grads.attention`), whose calls are checked as they
    happen; more with :func:`register_rule` / :func:`register_replay`.
    """
    return all(unsupported_reason(m) is None for m in model.modules())
