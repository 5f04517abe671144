"""The exact fallbacks of :func:`~gradkit.grads.per_sample_grads`, for all trainable parameters
or only some (``names``): ``vmap(grad(l))`` over the samples (``torch.func``, buffers and
frozen parameters passed through unchanged) and the per-sample autograd loop (the reference).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.func import functional_call, grad, vmap

from gradkit.core.params import flat_grad, trainable_named_parameters
from gradkit.grads.hessian import double_backward_sdpa
from gradkit.grads.samples import num_samples, take, unsqueeze

__all__ = ["loop_grads", "vmap_grads"]


def vmap_grads(model, loss_fn, inputs, targets, chunk_size=None, names=None,
               randomness: str = "error") -> Tensor:
    """``G`` of ``names`` (all trainable: None) by ``vmap(grad(l))``, chunked by ``chunk_size``;
    ``randomness="different"`` lets random ops (dropout) draw per sample."""
    trainable = dict(trainable_named_parameters(model))
    names = list(trainable) if names is None else names
    params = {k: trainable[k].detach() for k in names}
    frozen = {k: p.detach() for k, p in model.named_parameters() if k not in params}
    buffers = dict(model.named_buffers())

    def loss_one(p, x, y):
        out = functional_call(model, (p, frozen, buffers), (unsqueeze(x),))
        return loss_fn(out, unsqueeze(y)).reshape(())

    with double_backward_sdpa():  # the math attention kernel has batching rules; fused ones not
        g = vmap(grad(loss_one), in_dims=(None, 0, 0), chunk_size=chunk_size,
                 randomness=randomness)(params, inputs, targets)
    n = num_samples(inputs)
    return torch.cat([g[k].reshape(n, -1) for k in names], dim=1)


def loop_grads(model, loss_fn, inputs, targets, names=None) -> Tensor:
    """``G`` of ``names`` (all trainable: None) by one autograd call per sample."""
    trainable = dict(trainable_named_parameters(model))
    params = [trainable[k] for k in (trainable if names is None else names)]
    rows = []
    for i in range(num_samples(inputs)):
        sl = slice(i, i + 1)
        loss = loss_fn(model(take(inputs, sl)), take(targets, sl)).reshape(())
        rows.append(flat_grad(loss, params))
    return torch.stack(rows)
