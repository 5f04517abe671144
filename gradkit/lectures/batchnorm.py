"""Batch normalisation: batch statistics, running averages and the eval-mode output."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

__all__ = ["batch_stats", "batchnorm_output", "batchnorm_running_stats", "moving_average",
           "probing"]


@contextlib.contextmanager
def probing(bn: nn.modules.batchnorm._BatchNorm) -> Iterator[nn.Module]:
    """Within the block ``bn`` is in training mode (normalises with each batch's statistics)
    and no gradient is recorded; on leaving — also after an exception — its running
    statistics, batch counter and mode are what they were before: the batches were a probe."""
    saved = {k: v.clone() for k, v in bn.named_buffers()}
    was_training = bn.training
    bn.train()
    try:
        with torch.no_grad():
            yield bn
    finally:
        with torch.no_grad():
            for k, v in bn.named_buffers():
                v.copy_(saved[k])
        bn.train(was_training)


def moving_average(values: Tensor, p: float, init: float | Tensor = 0.0) -> Tensor:
    """``μ̄_t = p μ̄_{t−1} + (1 − p) μ_t`` for each row μ_t of ``values``; μ̄_{−1} = ``init``.

    Returns ``[T, ...]``: μ̄ after each step. PyTorch's BatchNorm ``momentum`` is ``1 − p``.
    """
    if not 0 <= p <= 1:
        raise ValueError(f"p must be in [0, 1], got {p}")
    avg = torch.as_tensor(init, dtype=values.dtype).expand_as(values[0]).clone()
    out = []
    for v in values:
        avg = p * avg + (1 - p) * v
        out.append(avg)
    return torch.stack(out)


def batchnorm_running_stats(batches: Sequence[Tensor], p: float) -> tuple[Tensor, Tensor]:
    """Running mean and variance ``[T, C]`` after each batch ``[B, C, *]`` of a stream, as
    ``nn.BatchNorm(momentum=1 − p)`` keeps them (mean from 0, variance from 1, and the batch
    variance is the *unbiased* one, ``B·L/(B·L − 1)`` times the one used to normalise)."""
    means, variances = [], []
    for b in batches:
        flat = b.transpose(0, 1).reshape(b.shape[1], -1)  # [C, B·L]
        means.append(flat.mean(1))
        variances.append(flat.var(1, unbiased=True))
    return (moving_average(torch.stack(means), p, 0.0),
            moving_average(torch.stack(variances), p, 1.0))


def batchnorm_output(x: Tensor, mean: Tensor, var: Tensor, weight: Tensor, bias: Tensor,
                     eps: float = 1e-5) -> Tensor:
    """``γ (x − μ)/√(σ² + ε) + β`` per channel (axis 1) of ``x [B, C, *]``."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return ((x - mean.view(shape)) / torch.sqrt(var.view(shape) + eps) * weight.view(shape)
            + bias.view(shape))


def batch_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and *biased* variance of ``x [B, C, *]`` (what training mode uses)."""
    flat = x.transpose(0, 1).reshape(x.shape[1], -1)
    return flat.mean(1), flat.var(1, unbiased=False)
