"""Exact per-sample, per-batch and full-data gradients.

Notation (used by :mod:`gradkit.gns` and the notebooks): a data set ``D`` of ``N`` samples, the
trainable parameters ``θ`` (those with ``requires_grad``, in ``named_parameters()`` order,
flattened to ``P`` numbers) and a per-sample loss ``l_i(θ) = loss_fn(model(x_i), y_i)``.

- per-sample gradients  ``G[i] = ∇_θ l_i(θ)``                    -> ``Tensor[N, P]``
- batch gradient        ``g_B = (1/|B|) Σ_{i∈B} ∇_θ l_i(θ)``     -> one row per batch
- full-data gradient    ``g_D = (1/N) Σ_{i∈D} ∇_θ l_i(θ)``       -> ``Tensor[P]``

``loss_fn(outputs, targets)`` receives the model's output for a batch (a tensor or a tuple such
as the ranker's ``(logits, score)``) and the matching targets (a tensor or a tuple of them). For
a single sample it is called on a batch of one, so its reduction (mean or sum) does not matter.

Three exact ways to get ``G`` (all agree with a per-sample autograd loop to 1e-5, see the tests):

``"vmap"``
    ``torch.func``: ``vmap(grad(l))`` over the samples with ``functional_call`` (buffers and frozen
    parameters passed through unchanged, trainable ones differentiated).
``"loop"``
    one ``torch.autograd.grad`` per sample (the reference).
``"layers"``
    one forward and one backward for the whole batch, as BackPACK and Opacus do: forward hooks
    keep each layer's input ``a`` and tensor hooks its output gradient ``δ = ∂(Σ_i l_i)/∂out``;
    because sample ``i`` only touches row ``i`` of every activation (eval mode), the per-sample
    gradient of a layer is a per-sample contraction of ``a_i`` and ``δ_i``:
    Linear ``δ_iᵀ a_i``, Conv ``δ_i · unfold(a_i)ᵀ``, GroupNorm / BatchNorm (eval) / LayerNorm
    ``Σ δ_i ⊙ x̂_i`` and ``Σ δ_i``. The backward is taken with respect to the layer outputs only,
    so autograd never forms the summed weight gradients it would throw away. The per-sample
    losses ``l_i`` are computed with ``torch.func.vmap`` over ``loss_fn``.
    Available when every trainable parameter lives in a supported layer.

``method="auto"`` picks by measurement (this project's 2-core CPU, torch 2.11, ResNetAudioRanker,
``benchmarks/per_sample_grads.py`` and ``benchmarks/README.md``; medians of interleaved rounds):

- ``"layers"`` whenever every trainable parameter is in a supported layer and the chunk has at
  least ``_LOOP_BELOW = 4`` samples. At N = 128 it costs 1.15-1.16x a plain batch forward +
  backward (N = 32: 1.24-1.25x; two full benchmark runs), against 1.6-2.0x for vmap, 2.5-2.6x
  for Opacus, 2.7-3.1x for PyTorch's ExpandedWeights, 3.5-3.8x for BackPACK and ~5x for the
  loop (benchmark README). What is left over the plain backward is measured too: without any
  per-sample rule the pass costs 0.91-0.96x; the per-sample conv weight gradients add
  0.12-0.18x at N = 128 (0.3x before the convs with few input channels took them in the same
  call as their input gradient, ``_FusedConv``), GroupNorm and Linear ~0.07x.
- ``"loop"`` below 4 samples (a batch of 1-3 is cheaper as 1-3 plain backward passes than
  through any vectorised machinery: at N = 1 the loop is one plain backward, ``"layers"``
  ~2x, vmap ~4x), and for models ``"layers"`` cannot handle up to ``_LOOP_MAX = 8`` samples.
- ``"vmap"`` for models ``"layers"`` cannot handle above 8 samples (vmap overtook the loop
  between 8 and 16 samples).

The layer rules were chosen by measurement too: per-sample conv weight gradients through one
grouped ``convolution_backward`` (as fast as the ordinary summed weight gradient) instead of
``F.unfold`` + ``bmm`` (10-60x slower on this CPU), for convs with at most 8 input channels per
group together with their input gradient (one call instead of two, 1.2-1.8x faster, see
``_FUSE_MAX_IN``), 1x1 convs by one ``bmm`` and the 1-channel stem as a depthwise call (see
:func:`_conv_weight`); one thread instead of two lowers the ratio to a plain backward (1.05x)
but is slower in wall time (66 ms instead of 44 at N = 128), channels_last 1.5-2.5x slower;
GroupNorm's ``x̂`` recomputed and multiplied in place (2x faster than a fresh product, and more
exact than sums of statistics); the backward taken to gradient edges, not tensors, and hooks
free of reference cycles, so activations are released as early as in a plain backward (peak
memory 66 MiB instead of 132 at N = 128; a reference cycle had also made the *next* forward ~2x
slower).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from torch.utils._pytree import tree_map

LossFn = Callable[[Any, Any], Tensor]
METHODS = ("auto", "vmap", "loop", "layers")

# Target temporary memory of one chunk (activations, per-sample grads), as estimated by
# default_chunk_size; 32 MiB gives chunks of 68 for the ranker. Measured at N = 128: peak memory
# 35 MiB instead of 65 for one chunk; time within noise of one chunk in the full benchmark
# (1.23-1.29x vs 1.22-1.30x a plain backward; alone against the plain backward, chunks of
# 64-96 even measured 0.92-1.03x against 1.23x for one chunk of 128).
_CHUNK_BYTES = 32 * 2**20
_CHUNK_MIN = 8
# "auto": below this many samples the plain loop is fastest (measured, see the docstring) ...
_LOOP_BELOW = 4
# ... and without layer support the loop beats vmap up to this many samples.
_LOOP_MAX = 8
# Rows of a sketch matrix generated from one seed: any chunking of N or P gives the same sketch.
_SKETCH_BLOCK = 8192


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------
def trainable_named_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The parameters that get gradients (``requires_grad``), in ``named_parameters()`` order."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def num_trainable(model: nn.Module) -> int:
    """``P``: the number of trainable scalars, i.e. the width of every gradient row here."""
    return sum(p.numel() for _, p in trainable_named_parameters(model))


def param_slices(model: nn.Module) -> dict[str, slice]:
    """Where each trainable parameter lives in a flattened gradient row: ``name -> slice``."""
    out, start = {}, 0
    for name, p in trainable_named_parameters(model):
        out[name] = slice(start, start + p.numel())
        start += p.numel()
    return out


def _num_samples(inputs: Any) -> int:
    leaves = [t for t in torch.utils._pytree.tree_leaves(inputs) if isinstance(t, Tensor)]
    if not leaves:
        raise ValueError("inputs must be a tensor (or a tuple of tensors) with a batch dimension")
    return leaves[0].shape[0]


def _take(tree: Any, index) -> Any:
    """Rows ``index`` of every tensor in a (possibly nested) tuple of tensors."""
    return tree_map(lambda t: t[index] if isinstance(t, Tensor) else t, tree)


def _unsqueeze(tree: Any) -> Any:
    return tree_map(lambda t: t.unsqueeze(0) if isinstance(t, Tensor) else t, tree)


def _check_inputs(model: nn.Module, inputs: Any, targets: Any) -> int:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    n = _num_samples(inputs)
    nt = _num_samples(targets)
    if n != nt:
        raise ValueError(f"inputs have {n} samples but targets have {nt}")
    if n == 0:
        raise ValueError("inputs hold no samples (N = 0)")
    if not trainable_named_parameters(model):
        raise ValueError("model has no trainable parameters (none with requires_grad=True)")
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and (
            m.training or m.running_mean is None
        ):
            raise ValueError(
                f"module {name!r} is a BatchNorm that normalises with batch statistics (training "
                "mode or no running statistics): a sample's output depends on the whole batch, "
                "so per-sample gradients are not defined; call model.eval() first (running "
                "statistics are then used, as at evaluation)"
            )
    return n


def per_sample_losses(loss_fn: LossFn, outputs: Any, targets: Any) -> Tensor:
    """``l_i = loss_fn(outputs[i:i+1], targets[i:i+1])`` for every ``i`` -> ``Tensor[N]``.

    Vectorised with ``torch.func.vmap`` over ``loss_fn``; a loss that vmap cannot trace (data-
    dependent Python control flow, ``.item()``) falls back to a Python loop over the samples.
    """

    def one(out, tgt):
        return loss_fn(_unsqueeze(out), _unsqueeze(tgt)).reshape(())

    try:
        return vmap(one)(outputs, targets)
    except Exception:  # noqa: BLE001 - any tracing failure: the loop is always correct
        n = _num_samples(targets)
        return torch.stack([one(_take(outputs, i), _take(targets, i)) for i in range(n)])


# ---------------------------------------------------------------------------------------------
# Method 1: torch.func (vmap of grad)
# ---------------------------------------------------------------------------------------------
def _vmap_grads(model, loss_fn, inputs, targets, chunk_size) -> Tensor:
    trainable = dict(trainable_named_parameters(model))
    params = {n: p.detach() for n, p in trainable.items()}
    frozen = {n: p.detach() for n, p in model.named_parameters() if n not in trainable}
    buffers = dict(model.named_buffers())

    def loss_one(p, x, y):
        out = functional_call(model, (p, frozen, buffers), (_unsqueeze(x),))
        return loss_fn(out, _unsqueeze(y)).reshape(())

    g = vmap(grad(loss_one), in_dims=(None, 0, 0), chunk_size=chunk_size)(params, inputs, targets)
    n = _num_samples(inputs)
    return torch.cat([g[name].reshape(n, -1) for name in trainable], dim=1)


# ---------------------------------------------------------------------------------------------
# Method 2: the per-sample autograd loop (the reference)
# ---------------------------------------------------------------------------------------------
def _loop_grads(model, loss_fn, inputs, targets) -> Tensor:
    params = [p for _, p in trainable_named_parameters(model)]
    rows = []
    for i in range(_num_samples(inputs)):
        sl = slice(i, i + 1)
        loss = loss_fn(model(_take(inputs, sl)), _take(targets, sl)).reshape(())
        g = torch.autograd.grad(loss, params, allow_unused=True)
        rows.append(
            torch.cat([(gi if gi is not None else torch.zeros_like(p)).reshape(-1)
                       for gi, p in zip(g, params, strict=True)])
        )
    return torch.stack(rows)


# ---------------------------------------------------------------------------------------------
# Method 3: per-layer contractions of saved activations and output gradients
# ---------------------------------------------------------------------------------------------
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


def _unsupported(m: nn.Module) -> str | None:
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
    return all(_unsupported(m) is None for m in model.modules())


def _layers_grads(model, loss_fn, inputs, targets) -> Tensor:
    n = _num_samples(inputs)
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


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------
def choose_method(model: nn.Module, n: int, *, supported: bool | None = None) -> str:
    """The method ``"auto"`` uses for a chunk of ``n`` samples (measurements: module docstring).

    ``"loop"`` for ``n < _LOOP_BELOW``; else ``"layers"`` if every trainable parameter is in a
    supported layer (``supported``, if given, saves re-checking); else ``"loop"`` up to
    ``_LOOP_MAX`` samples and ``"vmap"`` above.
    """
    if n < _LOOP_BELOW:
        return "loop"
    if layers_supported(model) if supported is None else supported:
        return "layers"
    return "loop" if n <= _LOOP_MAX else "vmap"


def default_chunk_size(model: nn.Module, inputs: Any, n: int) -> int:
    """Samples per chunk so that one chunk's temporaries stay near ``_CHUNK_BYTES`` (32 MiB).

    Estimate per sample: its gradient row (``4 P`` bytes) plus 80 times its input, a rough
    stand-in for the activations a small conv net keeps for its backward. Never fewer than
    ``_CHUNK_MIN`` samples (vectorisation would be lost); smaller chunks were measured faster
    than one big one on this CPU (cache and allocator effects; see ``_CHUNK_BYTES``).
    """
    leaves = [t for t in torch.utils._pytree.tree_leaves(inputs) if isinstance(t, Tensor)]
    per_input = sum(t[0].numel() * t.element_size() for t in leaves)
    per_sample = 4 * num_trainable(model) + 80 * per_input
    return max(min(n, _CHUNK_MIN), min(n, _CHUNK_BYTES // max(per_sample, 1)))


def per_sample_grads(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Any,
    targets: Any,
    chunk_size: int | None = None,
    *,
    method: str = "auto",
    sketch_dim: int | None = None,
    sketch_seed: int = 0,
) -> Tensor:
    """Per-sample gradients ``G[i] = ∇_θ loss_fn(model(x_i), y_i)`` -> ``Tensor[N, P]``.

    ``θ`` are the trainable parameters (``requires_grad``) in ``named_parameters()`` order, each
    flattened; frozen parameters and buffers (BatchNorm running statistics) enter as constants.
    The model must be in eval mode where it has BatchNorm (a sample's output must not depend on
    the rest of the batch). Samples are processed ``chunk_size`` at a time (default:
    :func:`default_chunk_size`) so memory stays bounded; ``method`` is ``"auto"``, ``"vmap"``
    (``torch.func``), ``"loop"`` or ``"layers"`` (see the module docstring for each and for the
    measurements behind ``"auto"``). With ``sketch_dim=k`` every chunk is projected at once by
    :func:`sketch` (seed ``sketch_seed``) and the result is ``Tensor[N, k]`` instead.
    """
    n = _check_inputs(model, inputs, targets)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if chunk_size is None:
        chunk_size = default_chunk_size(model, inputs, n)
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    chunk_size = int(chunk_size)
    if method == "layers":
        reasons = {name: r for name, m in model.named_modules() if (r := _unsupported(m))}
        if reasons:
            raise ValueError(f"method='layers' cannot handle {reasons}; use 'vmap' or 'loop'")
    supported = layers_supported(model) if method == "auto" else None
    rows = []
    for start in range(0, n, chunk_size):
        sl = slice(start, min(n, start + chunk_size))
        x, y = _take(inputs, sl), _take(targets, sl)
        how = (choose_method(model, sl.stop - sl.start, supported=supported)
               if method == "auto" else method)
        if how == "vmap":
            g = _vmap_grads(model, loss_fn, x, y, chunk_size=None)
        elif how == "loop":
            g = _loop_grads(model, loss_fn, x, y)
        else:
            g = _layers_grads(model, loss_fn, x, y)
        g = g.detach()
        rows.append(sketch(g, sketch_dim, sketch_seed) if sketch_dim is not None else g)
    return torch.cat(rows) if len(rows) > 1 else rows[0]


def _batch_order(n: int, generator: torch.Generator | int | None, ordering) -> Tensor:
    if ordering is not None:
        order = torch.as_tensor(ordering, dtype=torch.long)
        if order.dim() != 1 or order.numel() != n or not torch.equal(order.sort().values,
                                                                     torch.arange(n)):
            raise ValueError(f"ordering must be a permutation of range({n})")
        return order
    if generator is None:
        return torch.arange(n)
    if isinstance(generator, int):
        generator = torch.Generator().manual_seed(generator)
    return torch.randperm(n, generator=generator)


def batch_index(n: int, batch_size: int, generator: torch.Generator | int | None = None,
                ordering: Sequence[int] | Tensor | None = None,
                drop_last: bool = False) -> list[Tensor]:
    """The sample indices of every batch of one epoch, as a shuffled data loader makes them.

    ``ordering`` (a permutation of ``range(n)``) wins; else ``generator`` (a ``torch.Generator``
    or a seed) shuffles; else the data order is kept. The last short batch is kept unless
    ``drop_last``.
    """
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    order = _batch_order(n, generator, ordering)
    batches = list(order.split(int(batch_size)))
    if drop_last and batches and batches[-1].numel() < batch_size:
        batches.pop()
    return batches


def _mean_grad(model, loss_fn, inputs, targets, params) -> Tensor:
    """``(1/|B|) Σ_{i∈B} ∇ l_i`` for one batch, through one backward of the mean per-sample loss."""
    loss = per_sample_losses(loss_fn, model(inputs), targets).mean()
    g = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(gi if gi is not None else torch.zeros_like(p)).reshape(-1)
                      for gi, p in zip(g, params, strict=True)]).detach()


def batch_grads(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Any,
    targets: Any,
    batch_size: int,
    generator: torch.Generator | int | None = None,
    ordering: Sequence[int] | Tensor | None = None,
    drop_last: bool = False,
) -> Tensor:
    """Batch gradients ``g_B = (1/|B|) Σ_{i∈B} ∇_θ l_i`` for every batch of one epoch.

    Batches come from :func:`batch_index` (``generator``/``ordering``/``drop_last`` as there);
    returns ``Tensor[n_batches, P]``, row ``b`` the gradient of batch ``b``. Each row is one
    backward of the batch's mean per-sample loss, so in eval mode it equals the mean of the
    batch's rows of :func:`per_sample_grads`.
    """
    n = _check_inputs(model, inputs, targets)
    params = [p for _, p in trainable_named_parameters(model)]
    rows = [_mean_grad(model, loss_fn, _take(inputs, idx), _take(targets, idx), params)
            for idx in batch_index(n, batch_size, generator, ordering, drop_last)]
    return torch.stack(rows)


def full_grad(model: nn.Module, loss_fn: LossFn, inputs: Any, targets: Any,
              chunk_size: int | None = None) -> Tensor:
    """The full-data gradient ``g_D = (1/N) Σ_{i∈D} ∇_θ l_i`` -> ``Tensor[P]``.

    Accumulated over chunks of ``chunk_size`` samples (default: all at once), each weighted by
    its share of the data, so the result does not depend on the chunking.
    """
    n = _check_inputs(model, inputs, targets)
    params = [p for _, p in trainable_named_parameters(model)]
    chunk = n if chunk_size is None else int(chunk_size)
    if chunk < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    total = None
    for start in range(0, n, chunk):
        sl = slice(start, min(n, start + chunk))
        g = _mean_grad(model, loss_fn, _take(inputs, sl), _take(targets, sl), params)
        g = g * ((sl.stop - sl.start) / n)
        total = g if total is None else total + g
    return total


def _sketch_block(seed: int, block: int, rows: int, k: int, dtype, device) -> Tensor:
    gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + block)
    r = torch.randn(rows, k, generator=gen, dtype=torch.float32) / math.sqrt(k)
    return r.to(dtype=dtype, device=device)


def sketch(G: Tensor, k: int | None, seed: int = 0) -> Tensor:
    """Random projection ``G R`` to ``k`` dimensions, ``R[P, k]`` i.i.d. ``N(0, 1) / sqrt(k)``.

    ``E[R Rᵀ] = I``, so inner products (and squared norms) are preserved in expectation:
    ``E[(G_i R)·(G_j R)] = G_i·G_j``, with relative spread about ``sqrt(2/k)``. ``R`` is
    generated in fixed blocks of rows from ``seed``: the same ``(seed, k)`` always gives the
    same ``R``, however ``G`` is chunked. ``k=None`` is the exact mode and returns ``G``.
    """
    if k is None:
        return G
    if int(k) < 1:
        raise ValueError(f"sketch dimension k must be a positive integer, got {k!r}")
    if G.dim() == 1:
        return sketch(G.unsqueeze(0), k, seed)[0]
    if G.dim() != 2:
        raise ValueError(f"G must be [N, P] (or [P]), got shape {tuple(G.shape)}")
    k = int(k)
    out = G.new_zeros(G.shape[0], k)
    for b, start in enumerate(range(0, G.shape[1], _SKETCH_BLOCK)):
        stop = min(G.shape[1], start + _SKETCH_BLOCK)
        out += G[:, start:stop] @ _sketch_block(seed, b, stop - start, k, G.dtype, G.device)
    return out


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Temporarily put ``model`` in eval mode (restores each module's own flag afterwards)."""
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags.items():
            m.training = flag
