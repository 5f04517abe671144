"""The rules' registry: which rule computes a layer type's per-sample gradients.

A *rule* maps (layer, its input ``a``, its output gradient ``δ``) to the per-sample gradients
of the layer's own parameters; a *replay* runs instead of a module's forward (a recurrence,
attention, GroupNorm) and stores them as the backward reaches them. Each layer type registers
its rule or replay in its own file of :mod:`gradkit.grads.rules` (:func:`register_rule`,
:func:`register_replay`); the ``"layers"`` pass (:mod:`gradkit.grads.layerpass`) and the Gram
path (:mod:`gradkit.grads.gramsink`) look them up here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn

__all__ = ["Factored", "Replay", "Rule", "any_sample_dim", "factored_for", "holds_free_parameters",
           "layers_supported", "register_factored", "register_replay", "register_rule",
           "replay_for", "rule_for", "unsupported_reason", "wants"]


def wants(p: Tensor | None) -> bool:
    """Whether parameter ``p`` exists and needs its gradient."""
    return p is not None and p.requires_grad


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
    ``InputPrompt``, and by replay ``GroupNorm``, ``LSTM`` (:mod:`~gradkit.grads.rules.lstm`),
    ``GRU`` (:mod:`~gradkit.grads.rules.gru`), ``RNN`` (tanh / relu,
    :mod:`~gradkit.grads.rules.rnn`) and ``MultiheadAttention``
    (:mod:`~gradkit.grads.rules.attention`), whose calls are checked as they happen; more
    with :func:`register_rule` / :func:`register_replay`. A container's own parameters
    (:func:`holds_free_parameters`) count as supported: the pass takes them where they are
    added to the activations, and checks it.
    """
    return all(unsupported_reason(m) is None or holds_free_parameters(m)
               for m in model.modules())


@dataclass
class Factored:
    """A layer whose per-sample weight gradient is ``g_i = Σ_c B_{i,c}ᵀ A_{i,c}`` over ``groups``
    disjoint blocks (a Linear layer: one; a convolution: its groups, on unfolded patches), as
    the Gram path sees it (:class:`~gradkit.grads.gramsink.GramSink`): ``t`` positions,
    ``d_in`` / ``d_out`` per group; ``pairs()`` the factors ``[(A_c, B_c)]`` (None: none),
    ``pair_bytes`` what building them costs (``inf``: never); ``kron`` the one ``(A, B)`` pair
    already held when the Kronecker sketch applies (None: materialise for the sketch);
    ``rest()`` the materialised per-sample gradients of the layer's other parameters (a bias:
    ``N x d_out``)."""

    t: int
    d_in: int
    d_out: int
    groups: int
    pairs: Callable[[], list[tuple[Tensor, Tensor]] | None]
    pair_bytes: float = 0.0
    kron: tuple[Tensor, Tensor] | None = None
    rest: Callable[[], dict[str, Tensor]] = dict


Factor = Callable[[nn.Module, Tensor, Tensor], Factored]
_FACTORED: dict[type, Factor] = {}


def register_factored(*types: type):
    """Decorator: ``factored(module, a, δ) -> Factored`` for layers of ``types`` whose weight
    gradient is a product of factors (their Gram, norm and sketch forms without ``g_i``)."""

    def wrap(fn: Factor) -> Factor:
        for t in types:
            _FACTORED[t] = fn
        return fn

    return wrap


def factored_for(m: nn.Module) -> Factor | None:
    """The factored form registered for ``m``'s class (None: the Gram path materialises)."""
    return next((_FACTORED[t] for t in type(m).__mro__ if t in _FACTORED), None)

