"""Samples on dim 0: taking rows of (nested) inputs and targets, and per-sample losses.

``inputs`` and ``targets`` are a tensor or a (nested) tuple / dict of tensors, every tensor
carrying the ``N`` samples on its dim 0. ``loss_fn(outputs, targets)`` receives the model's output
for a batch and the matching targets; for one sample it is called on a batch of one, so its
reduction (mean or sum) does not matter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import vmap
from torch.utils._pytree import tree_map

from gradkit.core.params import num_trainable

__all__ = ["LossFn", "active_dropout", "check_inputs", "default_chunk_size", "num_samples",
           "per_sample_losses", "take", "unsqueeze"]

# Target temporary memory of one chunk (activations, per-sample grads), as estimated by
# default_chunk_size; 64 MiB holds the ranker's N = 128 in one chunk: fewer chunks, less
# per-chunk overhead (figures: benchmarks/README.md).
_CHUNK_BYTES = 64 * 2**20
_CHUNK_MIN = 8

LossFn = Callable[[Any, Any], Tensor]


def num_samples(inputs: Any, what: str = "inputs") -> int:
    """N: the length of dim 0, which every tensor in ``inputs`` must share."""
    leaves = [t for t in torch.utils._pytree.tree_leaves(inputs) if isinstance(t, Tensor)]
    if not leaves or any(t.dim() == 0 for t in leaves):
        raise ValueError(f"{what} must be a tensor (or a tuple / dict of tensors), each with the "
                         "samples on dim 0")
    sizes = {t.shape[0] for t in leaves}
    if len(sizes) > 1:
        raise ValueError(f"the tensors in {what} disagree on the number of samples (dim 0 "
                         f"sizes {sorted(sizes)}): every tensor must carry the N samples on dim 0")
    return leaves[0].shape[0]


def take(tree: Any, index) -> Any:
    """Rows ``index`` of every tensor in a (possibly nested) tuple of tensors."""
    return tree_map(lambda t: t[index] if isinstance(t, Tensor) else t, tree)


def unsqueeze(tree: Any) -> Any:
    return tree_map(lambda t: t.unsqueeze(0) if isinstance(t, Tensor) else t, tree)


def check_inputs(model: nn.Module, inputs: Any, targets: Any) -> int:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    n = num_samples(inputs)
    nt = num_samples(targets, "targets")
    if n != nt:
        raise ValueError(f"inputs have {n} samples but targets have {nt}")
    if n == 0:
        raise ValueError("inputs hold no samples (N = 0)")
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("model has no trainable parameters (none with requires_grad=True)")
    for name, m in model.named_modules():
        if not isinstance(m, nn.modules.batchnorm._BatchNorm):
            continue
        if m.running_mean is None:
            raise ValueError(
                f"module {name!r} is a BatchNorm without running statistics "
                "(track_running_stats=False): it always normalises with the batch's statistics, "
                "in eval mode too, so a sample's output depends on the whole batch and "
                "per-sample gradients are not defined; use GroupNorm / LayerNorm, or a BatchNorm "
                "with track_running_stats=True in eval mode")
        if m.training:
            raise ValueError(
                f"module {name!r} is a BatchNorm in training mode: it normalises with the "
                "batch's statistics, so a sample's output depends on the whole batch and "
                "per-sample gradients are not defined; call model.eval() first (its running "
                "statistics are then used, as at evaluation)")
    return n


def active_dropout(model: nn.Module) -> list[str]:
    """Names of the modules that drop at random in this call: dropout layers, and recurrent or
    attention layers with a ``dropout`` rate, in training mode with a rate above 0."""
    out = []
    for name, m in model.named_modules():
        rate = m.p if isinstance(m, nn.modules.dropout._DropoutNd) else getattr(m, "dropout", 0)
        if isinstance(m, nn.RNNBase) and m.num_layers == 1:
            rate = 0  # a recurrent layer drops only between its layers
        if m.training and isinstance(rate, float | int) and rate > 0 and (
                isinstance(m, nn.modules.dropout._DropoutNd | nn.RNNBase | nn.MultiheadAttention)):
            out.append(name or type(m).__name__)
    return out


def per_sample_losses(loss_fn: LossFn, outputs: Any, targets: Any) -> Tensor:
    """``l_i = loss_fn(outputs[i:i+1], targets[i:i+1])`` for every ``i`` -> ``Tensor[N]``.

    Vectorised with ``torch.func.vmap`` over ``loss_fn``; a loss that vmap cannot trace (data-
    dependent Python control flow, ``.item()``) falls back to a Python loop over the samples.
    """

    def one(out, tgt):
        return loss_fn(unsqueeze(out), unsqueeze(tgt)).reshape(())

    try:
        return vmap(one)(outputs, targets)
    except Exception:  # noqa: BLE001 - any tracing failure: the loop is always correct
        n = num_samples(targets)
        return torch.stack([one(take(outputs, i), take(targets, i)) for i in range(n)])


def default_chunk_size(model: nn.Module, inputs: Any, n: int, *, params: int | None = None
                       ) -> int:
    """Samples per chunk so that one chunk's temporaries stay near ``_CHUNK_BYTES`` (64 MiB).

    Estimate per sample: its gradient row (``4 P`` bytes) plus 80 times its input, a rough
    stand-in for the activations a small conv net keeps for its backward. Never fewer than
    ``_CHUNK_MIN`` samples (vectorisation would be lost). Each chunk costs a fixed overhead
    (hooks, checks, per-call kernel set-up), so fewer, larger chunks are
    faster until memory runs short (see ``_CHUNK_BYTES``). ``params``: ``P`` if known.
    """
    leaves = [t for t in torch.utils._pytree.tree_leaves(inputs) if isinstance(t, Tensor)]
    per_input = sum(t[0].numel() * t.element_size() for t in leaves)
    per_sample = 4 * (num_trainable(model) if params is None else params) + 80 * per_input
    return max(min(n, _CHUNK_MIN), min(n, _CHUNK_BYTES // max(per_sample, 1)))
