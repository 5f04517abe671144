"""The ``"layers"`` method: per-sample gradients from one forward and one backward.

Forward hooks keep each layer's input ``a`` and tensor hooks its output gradient
``δ = ∂(Σ_i l_i)/∂out``; because sample ``i`` only touches row ``i`` of every activation (eval
mode), the per-sample gradient of a layer is a per-sample contraction of ``a_i`` and ``δ_i``, one
small rule per layer type (BackPACK's design):

- Linear ``δ_iᵀ a_i`` (and ``Σ δ_i`` for the bias)
- Conv ``δ_i ⋆ a_i`` (:mod:`~gradkit.grads.convs`: the exact path the cost model picks for the
  layer's shape; 1x1 convs and unstrided convs with few input channels take their input
  gradient in the same step, :class:`FusedConv`)
- LayerNorm / BatchNorm (eval) ``Σ δ_i ⊙ x̂_i`` and ``Σ δ_i``
- the ranker's ``InputPrompt`` ``δ_i``
- by *replay* (the module's output computed by the rule, instead of its forward, so that the
  backward yields the per-sample gradients): ``GroupNorm`` (:class:`_GroupNorm`, one native
  backward for the input gradient and the per-sample ones), ``LSTM``, ``GRU`` and ``RNN``
  (:mod:`~gradkit.grads.recurrent`, :mod:`~gradkit.grads.gru`, :mod:`~gradkit.grads.rnn`: a
  hand-written backward through time) and
  ``MultiheadAttention`` (:mod:`~gradkit.grads.attention`, its projections as Linear rules)

The backward is taken with respect to the layer outputs only, so autograd never forms the summed
weight gradients it would throw away. More layer types: :func:`register_rule`. Why each rule has
the form it has (measurements): ``benchmarks/README.md``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradkit.grads.convs import conv_path, conv_weight, fused_backward

__all__ = ["any_sample_dim", "holds_free_parameters", "layers_supported", "register_replay",
           "register_rule", "replay_for", "rule_for", "unsupported_reason"]


def _normalised(m: nn.Module, a: Tensor) -> Tensor:
    """``x̂``: the layer's input normalised exactly as its forward does, before the affine map."""
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
    them on another dim, as a Linear on time-major ``[T, N, C]``, which the pass moves to 0).

    ``a`` is the layer's input, ``δ = ∂L/∂output`` its output gradient for the summed loss;
    the rule returns ``{parameter name: Tensor[n, *parameter shape]}`` for the names in
    ``params``. The pass checks how the layer is called (:mod:`~gradkit.grads.layerpass`), so a
    rule states only the math. Example, a learned per-channel scale ``y = x · w``, whose
    per-sample gradient is ``Σ_positions a · δ``:

    >>> import torch
    >>> from torch import nn
    >>> from gradkit.grads import per_sample_grads, register_rule
    >>> class Scale(nn.Module):
    ...     def __init__(self, n):
    ...         super().__init__()
    ...         self.weight = nn.Parameter(torch.linspace(0.5, 1.5, n))
    ...     def forward(self, x):
    ...         return x * self.weight
    >>> @register_rule(Scale, params=("weight",))
    ... def scale_rule(m, a, d):
    ...     return {"weight": (a * d).reshape(a.shape[0], -1, a.shape[-1]).sum(1)}
    >>> model = nn.Sequential(nn.Linear(3, 4), Scale(4)).eval()
    >>> x, y = torch.randn(6, 3), torch.randn(6, 4)
    >>> def mse(out, t):
    ...     return ((out - t) ** 2).mean()
    >>> G = per_sample_grads(model, mse, x, y, method="layers")  # raises if a rule is missing
    >>> G.shape
    torch.Size([6, 20])
    >>> loop = torch.stack([torch.cat([g.flatten() for g in torch.autograd.grad(
    ...     mse(model(x[i:i + 1]), y[i:i + 1]), list(model.parameters()))]) for i in range(6)])
    >>> bool(torch.allclose(G, loop, atol=1e-6))
    True
    """

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
    """Weight: :func:`~gradkit.grads.convs.conv_weight`; bias:
    ``∂l_n/∂b[o] = Σ_positions δ[n, o]``."""
    out = {}
    if weight and _wants(m.weight):
        out["weight"] = conv_weight(m, a, d)
    if _wants(m.bias):
        out["bias"] = d.reshape(d.shape[0], d.shape[1], -1).sum(2)
    return out


# Unstrided convolutions with at most this many input channels per group whose input needs a
# gradient take both gradients in one grouped call (FusedConv): faster up to 8 input channels,
# slower above (and with stride 2), so those stay separate (figures: benchmarks/README.md).
# 1x1 convs take their input gradient by one matmul (gradkit.grads.convs).
_FUSE_MAX_IN = 8


def fuses(m: nn.Module, a: Tensor) -> bool:
    """Whether conv ``m`` takes its input and per-sample weight gradients in one step
    (:func:`~gradkit.grads.convs.fused_backward`)."""
    if not (isinstance(m, nn.modules.conv._ConvNd) and _wants(m.weight) and a.requires_grad):
        return False
    path = conv_path(m, a.shape)
    return path == "bmm" or (path == "grouped" and m.weight.shape[1] <= _FUSE_MAX_IN
                             and all(s == 1 for s in m.stride))


class FusedConv(torch.autograd.Function):
    """A conv output (computed by the module, handed over in ``box``) whose backward computes
    ``∂L/∂a`` and the per-sample ``∂l_n/∂W`` in one step
    (:func:`~gradkit.grads.convs.fused_backward`), where autograd would run the input gradient
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
    if _wants(m.weight):
        prod = _normalised(m, a).mul_(d)  # in place: one temporary less, faster
        out["weight"] = prod.sum(dims) if dims else prod
    if _wants(getattr(m, "bias", None)):
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
        ctx.m, ctx.store, ctx.wants = m, store, (_wants(weight), _wants(bias))
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
    return y, [a] if a.requires_grad else [p for p in (m.weight, m.bias) if _wants(p)]


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
from gradkit.grads.gru import gru_replay  # noqa: E402
from gradkit.grads.recurrent import lstm_replay  # noqa: E402
from gradkit.grads.rnn import elman_replay  # noqa: E402

register_replay(nn.GroupNorm)(group_norm_replay)
register_replay(nn.MultiheadAttention)(mha_replay)
register_replay(nn.LSTM)(lstm_replay)
register_replay(nn.GRU)(gru_replay)
register_replay(nn.RNN)(elman_replay)


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


def holds_free_parameters(m: nn.Module) -> bool:
    """Whether ``m`` is a container (it has children) with trainable parameters of its own and
    no rule: they are used in its ``forward`` (a learned positional embedding), where the pass
    takes them when additive (:mod:`~gradkit.grads.freeparams`)."""
    return (unsupported_reason(m) is not None and next(m.children(), None) is not None
            and not any(t in _RULES for t in type(m).__mro__))


def rule_for(m: nn.Module) -> tuple[Rule, type]:
    """``(rule, the registered class it was registered for)`` of a supported module."""
    t = next(t for t in type(m).__mro__ if t in _RULES or t in _REPLAYS)
    return _RULES[t][0] if t in _RULES else _REPLAYS[t], t


def layers_supported(model: nn.Module) -> bool:
    """True when every trainable parameter belongs to a layer the ``"layers"`` method handles.

    Built in: ``Linear``, ``Conv1d``/``2d``/``3d`` (zero padding given as numbers, any stride,
    dilation, groups), ``LayerNorm``, ``BatchNorm`` (eval mode) and the project's
    ``InputPrompt``, and by replay ``GroupNorm``, ``LSTM`` (:mod:`~gradkit.grads.recurrent`),
    ``GRU`` (:mod:`~gradkit.grads.gru`), ``RNN`` (tanh / relu, :mod:`~gradkit.grads.rnn`) and
    ``MultiheadAttention`` (:mod:`~gradkit.grads.attention`), whose calls are checked as they
    happen; more with :func:`register_rule` / :func:`register_replay`. A container's own
    parameters (:func:`holds_free_parameters`) count as supported: the pass takes them where
    they are added to the activations, and checks it.
    """
    return all(unsupported_reason(m) is None or holds_free_parameters(m)
               for m in model.modules())
