"""The ``"layers"`` method: per-sample gradients from one forward and one backward.

Forward hooks keep each layer's input ``a`` and tensor hooks its output gradient
``δ = ∂(Σ_i l_i)/∂out``; because sample ``i`` only touches row ``i`` of every activation (eval
mode), the per-sample gradient of a layer is a per-sample contraction of ``a_i`` and ``δ_i``, one
small rule per layer type (BackPACK's design):

- Linear ``δ_iᵀ a_i`` (and ``Σ δ_i`` for the bias)
- Conv ``δ_i ⋆ a_i`` (a grouped ``convolution_backward``; 1x1 convs by one ``bmm``; convs with few
  input channels take their input gradient in the same call, :class:`_FusedConv`)
- GroupNorm / LayerNorm / BatchNorm (eval) ``Σ δ_i ⊙ x̂_i`` and ``Σ δ_i``
- the ranker's ``InputPrompt`` ``δ_i``

The backward is taken with respect to the layer outputs only, so autograd never forms the summed
weight gradients it would throw away. More layer types: :func:`register_rule`. Why each rule has
the form it has (measurements): ``benchmarks/README.md``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradkit.core.params import trainable_named_parameters
from gradkit.grads.samples import num_samples, per_sample_losses

__all__ = ["layers_grads", "layers_supported", "register_rule", "unsupported_reason"]


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
    n, g = a.shape[0], m.groups
    w = m.weight.detach()
    if g == 1 and all(k == 1 for k in w.shape[2:]) and not any(m.padding):
        strided = a[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in m.stride)]
        return torch.bmm(d.flatten(2), strided.flatten(2).transpose(1, 2)).view(n, *w.shape)
    if w.shape[1] == 1:  # one input channel per group: repeat it over the group's outputs
        space = a.shape[2:]
        a = a.reshape(n, g, 1, *space).expand(n, g, w.shape[0] // g, *space).reshape(n, -1, *space)
        return _grouped_backward(m, a, d, n * w.shape[0], input_grad=False)[1]
    return _grouped_backward(m, a, d, n * g, input_grad=False)[1]


def _grouped_backward(m, a: Tensor, d: Tensor, groups: int, input_grad: bool):
    """``(∂L/∂a or None, per-sample ∂l_n/∂W)`` from one ``convolution_backward`` of the batch
    folded into ``groups`` groups (see :func:`_conv_weight`)."""
    n, w = a.shape[0], m.weight.detach()
    stacked = w.expand(n, *w.shape).reshape(n * w.shape[0], *w.shape[1:])  # W for each sample
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


def register_rule(*types: type, params: tuple[str, ...] = ("weight", "bias")):
    """Decorator: ``rule(module, a, δ)`` computes per-sample gradients for layers of ``types``."""

    def wrap(rule: Rule) -> Rule:
        for t in types:
            _RULES[t] = (rule, params)
        return rule

    return wrap


def _wants(p: Tensor | None) -> bool:
    return p is not None and p.requires_grad


@register_rule(nn.Linear)
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
def _conv_rule(m: nn.Conv2d, a: Tensor, d: Tensor, weight: bool = True) -> dict[str, Tensor]:
    """Weight: :func:`_conv_weight`; bias: ``∂l_n/∂b[o] = Σ_positions δ[n, o]``."""
    out = {}
    if weight and _wants(m.weight):
        out["weight"] = _conv_weight(m, a, d)
    if _wants(m.bias):
        out["bias"] = d.reshape(d.shape[0], d.shape[1], -1).sum(2)
    return out


# Convolutions with at most this many input channels per group whose input needs a gradient
# take both gradients in one grouped call (_FusedConv); measured at N = 68 on this CPU, the
# input + per-sample weight gradients: 8 -> 8 at 40x32 6.2 ms instead of 7.1, 8 -> 16 stride 2
# 1.14 instead of 2.0, its 1x1 skip 0.49 instead of 0.90; with 16-32 input channels at 20x16
# and 10x8 the fused call was slower (0.9-1.2 ms instead of 0.8-1.1), so they stay separate.
_FUSE_MAX_IN = 8


def _fuses(m: nn.Module, a: Tensor) -> bool:
    return (isinstance(m, nn.modules.conv._ConvNd) and _wants(m.weight) and a.requires_grad
            and m.weight.shape[1] <= _FUSE_MAX_IN)


class _FusedConv(torch.autograd.Function):
    """A conv output (computed by the module, handed over in ``box``) whose backward computes
    ``∂L/∂a`` and the per-sample ``∂l_n/∂W`` in one grouped ``convolution_backward``, where
    autograd would run the input gradient and the hook the weight gradients separately."""

    @staticmethod
    def forward(ctx, a, m, box, store):
        ctx.save_for_backward(a)
        ctx.m, ctx.store = m, store
        return box.pop()  # not an input: autograd attaches this node to it, no copy

    @staticmethod
    def backward(ctx, d):
        (a,), m = ctx.saved_tensors, ctx.m
        ga, gw = _grouped_backward(m, a, d, a.shape[0] * m.groups, input_grad=True)
        ctx.store({"weight": gw, **_conv_rule(m, a, d, weight=False)})
        return ga, None, None, None


@register_rule(nn.GroupNorm, nn.LayerNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
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


def unsupported_reason(m: nn.Module) -> str | None:
    """Why the ``"layers"`` method cannot handle ``m``'s trainable parameters (None: it can)."""
    own = [name for name, p in m._parameters.items() if p is not None and p.requires_grad]
    if not own:
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


def _rule(m: nn.Module) -> Rule:
    return next(_RULES[t] for t in type(m).__mro__ if t in _RULES)[0]


def layers_supported(model: nn.Module) -> bool:
    """True when every trainable parameter belongs to a layer the ``"layers"`` method handles.

    Built in: ``Linear``, ``Conv1d``/``2d``/``3d`` (zero padding given as numbers, any stride,
    dilation, groups), ``GroupNorm``, ``LayerNorm``, ``BatchNorm`` (eval mode) and the project's
    ``InputPrompt``; more with :func:`register_rule`.
    """
    return all(unsupported_reason(m) is None for m in model.modules())


def layers_grads(model, loss_fn, inputs, targets) -> Tensor:
    n = num_samples(inputs)
    grads: dict[int, Tensor] = {}  # id(parameter) -> [n, numel] per-sample gradients
    edges = []  # where each layer output enters the graph: storage-free handles for the backward

    def store(module, per_sample):
        for name, g in per_sample.items():
            key, g = id(getattr(module, name)), g.reshape(n, -1)
            grads[key] = grads[key] + g if key in grads else g  # shared layers add up

    def forward_hook(module, args, output):
        if not output.requires_grad:
            return None
        if _fuses(module, args[0]):
            # The edge is the conv's input: reaching it runs _FusedConv's backward.
            edges.append(torch.autograd.graph.get_gradient_edge(args[0]))
            return _FusedConv.apply(args[0], module, [output.detach()],
                                    lambda g: store(module, g))
        saved, rule = [args[0].detach()], _rule(module)

        def on_grad(d):  # ∂L/∂output (of the value before any later in-place change)
            store(module, rule(module, saved[0], d))
            saved.clear()  # free the input now, as autograd frees its saved tensors

        # The hook refers to neither the output nor the graph: no reference cycle keeps
        # activations alive after the call (one measurably slowed the next forward).
        output.register_hook(on_grad)
        edges.append(torch.autograd.graph.get_gradient_edge(output))
        return None

    owners = [m for m in model.modules()
              if any(p is not None and p.requires_grad for p in m._parameters.values())]
    handles = [m.register_forward_hook(forward_hook) for m in owners]
    try:
        outputs = model(inputs)
    finally:
        for h in handles:
            h.remove()
    total = per_sample_losses(loss_fn, outputs, targets).sum()
    del outputs
    # Backward to the layer outputs only (as gradient edges, which hold no activations), so
    # autograd never forms the summed parameter gradients; the tensor hooks turn each δ into
    # per-sample gradients as soon as it arrives.
    if edges:
        torch.autograd.grad(total, edges, allow_unused=True)
    return torch.cat([grads[id(p)] if id(p) in grads else p.new_zeros(n, p.numel())
                      for _, p in trainable_named_parameters(model)], dim=1)


