"""Exact per-sample gradients ``G[i] = ∇_θ l_i(θ)`` -> ``Tensor[N, P]``.

Notation (used throughout :mod:`gradkit.grads` and the notebooks): a data set ``D`` of ``N``
samples, the trainable parameters ``θ`` (:mod:`gradkit.core.params`: ``requires_grad``, in
``named_parameters()`` order, flattened to ``P`` numbers) and a per-sample loss
``l_i(θ) = loss_fn(model(x_i), y_i)`` (:mod:`gradkit.grads.samples`).

Three exact ways to get ``G`` (all agree with a per-sample autograd loop to 1e-5, see the tests):

``"vmap"``
    ``torch.func``: ``vmap(grad(l))`` over the samples with ``functional_call`` (buffers and frozen
    parameters passed through unchanged, trainable ones differentiated).
``"loop"``
    one ``torch.autograd.grad`` per sample (the reference).
``"layers"``
    one forward and one backward for the whole batch, per-layer rules on saved activations and
    output gradients (:mod:`gradkit.grads.layers`). Available when every trainable parameter
    lives in a supported layer.

``method="auto"``: ``"loop"`` below ``_LOOP_BELOW`` samples per chunk; else ``"layers"`` where
supported; else ``"loop"`` up to ``_LOOP_MAX`` samples and ``"vmap"`` above. The thresholds and
the rules' forms were chosen by measurement (``benchmarks/per_sample_grads.py``; the numbers are
in ``benchmarks/README.md``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from gradkit.core.params import flat_grad, num_trainable, trainable_named_parameters
from gradkit.grads.layers import layers_grads, layers_supported, unsupported_reason
from gradkit.grads.samples import LossFn, check_inputs, num_samples, take, unsqueeze
from gradkit.grads.sketch import sketch

__all__ = ["METHODS", "choose_method", "default_chunk_size", "per_sample_grads"]

METHODS = ("auto", "vmap", "loop", "layers")

# Target temporary memory of one chunk (activations, per-sample grads), as estimated by
# default_chunk_size; 32 MiB gives chunks of 68 for the ranker (measurements: benchmarks/README).
_CHUNK_BYTES = 32 * 2**20
_CHUNK_MIN = 8
# "auto": below this many samples the plain loop is fastest (measured, see the docstring) ...
_LOOP_BELOW = 4
# ... and without layer support the loop beats vmap up to this many samples.
_LOOP_MAX = 8


# ---------------------------------------------------------------------------------------------
# Method 1: torch.func (vmap of grad)
# ---------------------------------------------------------------------------------------------
def _vmap_grads(model, loss_fn, inputs, targets, chunk_size) -> Tensor:
    trainable = dict(trainable_named_parameters(model))
    params = {n: p.detach() for n, p in trainable.items()}
    frozen = {n: p.detach() for n, p in model.named_parameters() if n not in trainable}
    buffers = dict(model.named_buffers())

    def loss_one(p, x, y):
        out = functional_call(model, (p, frozen, buffers), (unsqueeze(x),))
        return loss_fn(out, unsqueeze(y)).reshape(())

    g = vmap(grad(loss_one), in_dims=(None, 0, 0), chunk_size=chunk_size)(params, inputs, targets)
    n = num_samples(inputs)
    return torch.cat([g[name].reshape(n, -1) for name in trainable], dim=1)


# ---------------------------------------------------------------------------------------------
# Method 2: the per-sample autograd loop (the reference)
# ---------------------------------------------------------------------------------------------
def _loop_grads(model, loss_fn, inputs, targets) -> Tensor:
    params = [p for _, p in trainable_named_parameters(model)]
    rows = []
    for i in range(num_samples(inputs)):
        sl = slice(i, i + 1)
        loss = loss_fn(model(take(inputs, sl)), take(targets, sl)).reshape(())
        rows.append(flat_grad(loss, params))
    return torch.stack(rows)


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
    n = check_inputs(model, inputs, targets)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if chunk_size is None:
        chunk_size = default_chunk_size(model, inputs, n)
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    chunk_size = int(chunk_size)
    if method == "layers":
        reasons = {name: r for name, m in model.named_modules() if (r := unsupported_reason(m))}
        if reasons:
            raise ValueError(f"method='layers' cannot handle {reasons}; use 'vmap' or 'loop'")
    supported = layers_supported(model) if method == "auto" else None
    rows = []
    for start in range(0, n, chunk_size):
        sl = slice(start, min(n, start + chunk_size))
        x, y = take(inputs, sl), take(targets, sl)
        how = (choose_method(model, sl.stop - sl.start, supported=supported)
               if method == "auto" else method)
        if how == "vmap":
            g = _vmap_grads(model, loss_fn, x, y, chunk_size=None)
        elif how == "loop":
            g = _loop_grads(model, loss_fn, x, y)
        else:
            g = layers_grads(model, loss_fn, x, y)
        g = g.detach()
        rows.append(sketch(g, sketch_dim, sketch_seed) if sketch_dim is not None else g)
    return torch.cat(rows) if len(rows) > 1 else rows[0]


