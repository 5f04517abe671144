"""Batch and full-data gradients, the one home of both.

- batch gradient      ``g_B = (1/|B|) Σ_{i∈B} ∇_θ l_i(θ)``  -> one row per batch
- full-data gradient  ``g_D = (1/N) Σ_{i∈D} ∇_θ l_i(θ)``    -> ``Tensor[P]``

:func:`batch_grads` takes one backward per batch; :func:`batch_means` forms the same rows from
per-sample gradients already at hand (exact for a model without batch coupling: GroupNorm, or
BatchNorm in eval mode). :func:`batch_index` makes the batches of one epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from gradkit.core.params import flat_grad, trainable_parameters
from gradkit.grads.gram_matrix import Gram
from gradkit.grads.samples import LossFn, check_inputs, per_sample_losses, take

__all__ = ["batch_grads", "batch_index", "batch_means", "full_grad"]


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
    return flat_grad(loss, params).detach()


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
    n = check_inputs(model, inputs, targets)
    params = trainable_parameters(model)
    rows = [_mean_grad(model, loss_fn, take(inputs, idx), take(targets, idx), params)
            for idx in batch_index(n, batch_size, generator, ordering, drop_last)]
    return torch.stack(rows)


def full_grad(model: nn.Module, loss_fn: LossFn, inputs: Any, targets: Any,
              chunk_size: int | None = None) -> Tensor:
    """The full-data gradient ``g_D = (1/N) Σ_{i∈D} ∇_θ l_i`` -> ``Tensor[P]``.

    Accumulated over chunks of ``chunk_size`` samples (default: all at once), each weighted by
    its share of the data, so the result does not depend on the chunking.
    """
    n = check_inputs(model, inputs, targets)
    params = trainable_parameters(model)
    chunk = n if chunk_size is None else int(chunk_size)
    if chunk < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    total = None
    for start in range(0, n, chunk):
        sl = slice(start, min(n, start + chunk))
        g = _mean_grad(model, loss_fn, take(inputs, sl), take(targets, sl), params)
        g = g * ((sl.stop - sl.start) / n)
        total = g if total is None else total + g
    return total




def batch_means(grads, batches) -> Tensor:
    """Batch gradients from per-sample ones: ``g_B = (1/|B|) sum_{i in B} g_i`` -> ``[B, D]``.

    Exact for a loss that is a mean of per-sample losses and a model without batch coupling
    (GroupNorm, BatchNorm in eval mode): the same rows as :func:`batch_grads`
    without another backward pass. ``batches`` is a list of index tensors (one per batch).
    A :class:`~gradkit.grads.gram_matrix.Gram` of the samples gives the batches' Gram matrix.
    """
    if isinstance(grads, Gram):  # M K Mᵀ, M the averaging matrix: block means of K
        return Gram.of_rows(batch_means(grads.rows(), batches))
    g = torch.as_tensor(grads)
    if g.ndim != 2:
        raise ValueError(f"grads must be a 2-D [N, P] matrix of gradients, got {tuple(g.shape)}")
    g = g.detach().to(device="cpu", dtype=torch.float64)
    rows = []
    for b, idx in enumerate(batches):
        idx = torch.as_tensor(idx, dtype=torch.long).flatten()
        if idx.numel() == 0:
            raise ValueError(f"batch {b} is empty")
        if idx.min() < 0 or idx.max() >= g.shape[0]:
            raise ValueError(f"batch {b} has indices outside [0, {g.shape[0]})")
        rows.append(g[idx].mean(dim=0))
    if not rows:
        raise ValueError("batches is empty")
    return torch.stack(rows)


