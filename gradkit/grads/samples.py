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

from gradkit.core.params import trainable_named_parameters

__all__ = ["LossFn", "check_inputs", "num_samples", "per_sample_losses", "take", "unsqueeze"]

LossFn = Callable[[Any, Any], Tensor]


def num_samples(inputs: Any) -> int:
    leaves = [t for t in torch.utils._pytree.tree_leaves(inputs) if isinstance(t, Tensor)]
    if not leaves:
        raise ValueError("inputs must be a tensor (or a tuple of tensors) with a batch dimension")
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
    nt = num_samples(targets)
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
        return loss_fn(unsqueeze(out), unsqueeze(tgt)).reshape(())

    try:
        return vmap(one)(outputs, targets)
    except Exception:  # noqa: BLE001 - any tracing failure: the loop is always correct
        n = num_samples(targets)
        return torch.stack([one(take(outputs, i), take(targets, i)) for i in range(n)])


