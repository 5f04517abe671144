"""Trainable parameters and flat gradient vectors: the one home of both.

Every gradient row in gradkit is over the *trainable* parameters ``θ`` of a model (those with
``requires_grad``), in ``named_parameters()`` order, flattened to ``P`` numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

__all__ = [
    "count_parameters",
    "flat_grad",
    "flatten",
    "num_trainable",
    "param_slices",
    "trainable_named_parameters",
    "trainable_parameters",
]


def trainable_named_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The parameters that get gradients (``requires_grad``), in ``named_parameters()`` order."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def trainable_parameters(model: nn.Module, require: bool = False) -> list[nn.Parameter]:
    """The trainable parameters alone; ``require=True`` raises if there are none."""
    params = [p for _, p in trainable_named_parameters(model)]
    if require and not params:
        raise ValueError(f"model {type(model).__name__} has no parameters with requires_grad=True")
    return params


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters (``sum p.numel()``), optionally only ``requires_grad`` ones."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def num_trainable(model: nn.Module) -> int:
    """``P``: the number of trainable scalars, i.e. the width of every gradient row here."""
    return count_parameters(model, trainable_only=True)


def param_slices(model: nn.Module) -> dict[str, slice]:
    """Where each trainable parameter lives in a flattened gradient row: ``name -> slice``."""
    out, start = {}, 0
    for name, p in trainable_named_parameters(model):
        out[name] = slice(start, start + p.numel())
        start += p.numel()
    return out


def flatten(tensors: Iterable[Tensor]) -> Tensor:
    """Concatenate tensors into one flat vector (the layout of :func:`param_slices`)."""
    return torch.cat([t.reshape(-1) for t in tensors])


def flat_grad(loss: Tensor, params: Sequence[Tensor], retain_graph: bool = False,
              create_graph: bool = False) -> Tensor:
    """``∇_params loss`` as one flat vector, zeros for parameters the loss does not reach.

    ``create_graph=True`` keeps the graph of the gradient itself (for Hessian-vector products).
    """
    params = list(params)
    grads = torch.autograd.grad(loss, params, retain_graph=retain_graph or create_graph,
                                create_graph=create_graph, allow_unused=True)
    return flatten(torch.zeros_like(p) if g is None else g
                   for p, g in zip(params, grads, strict=True))
