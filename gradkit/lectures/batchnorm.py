"""Batch normalisation: batch statistics, running averages and the eval-mode output."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gradkit.training import epoch_batches

__all__ = ["RunningStatsCheck", "batch_stats", "batchnorm_output", "batchnorm_running_stats",
           "moving_average", "output_spread", "probing", "running_stats_against_torch",
           "training_stream"]


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


def training_stream(x: Tensor, batch_size: int, epochs: int, seed: int = 0) -> list[Tensor]:
    """The mini-batches ``x[idx]`` a training of ``epochs`` epochs sees, in order
    (:func:`gradkit.training.epoch_batches`, epochs numbered from 1)."""
    return [x[idx] for e in range(1, epochs + 1)
            for idx in epoch_batches(len(x), batch_size, seed, e)]


@dataclass(frozen=True)
class RunningStatsCheck:
    """:func:`running_stats_against_torch`'s result: our running ``mean``/``var`` ``[T, C]``,
    the ``layer`` after the stream (evaluation mode), and the largest differences from it."""

    mean: Tensor
    var: Tensor
    layer: nn.Module
    mean_diff: float  # ours vs nn.BatchNorm's running_mean, over all T steps
    var_diff: float  # ours vs its running_var after each step
    output_diff: float  # training-mode output vs batchnorm_output(batch_stats)
    other_convention_diff: float  # ours with momentum read as p instead of 1 − p


def running_stats_against_torch(batches: Sequence[Tensor], p: float) -> RunningStatsCheck:
    """Feed ``batches`` ``[B, C, L]`` through ``nn.BatchNorm1d(C, momentum=1 − p)`` in training
    mode and compare each step with :func:`batchnorm_running_stats` and
    :func:`batchnorm_output`; also how far the other reading of momentum (``p``) would be."""
    bn = nn.BatchNorm1d(batches[0].shape[1], momentum=1 - p).to(batches[0].dtype)
    means, variances, out_diff = [], [], 0.0
    with torch.no_grad():
        for b in batches:
            out = bn(b)
            ref = batchnorm_output(b, *batch_stats(b), bn.weight, bn.bias, eps=bn.eps)
            out_diff = max(out_diff, float((out - ref).abs().max()))
            means.append(bn.running_mean.clone())
            variances.append(bn.running_var.clone())
    mean, var = batchnorm_running_stats(batches, p)
    other, _ = batchnorm_running_stats(batches, 1 - p)
    return RunningStatsCheck(mean, var, bn.eval(),
                             float((mean - torch.stack(means)).abs().max()),
                             float((var - torch.stack(variances)).abs().max()), out_diff,
                             float((other - mean).abs().max()))


def output_spread(bn: nn.modules.batchnorm._BatchNorm, x: Tensor, pool: Tensor, batch_size: int,
                  n_probes: int = 40, seed: int = 0) -> tuple[Tensor, Tensor, float]:
    """The output for the one sample ``x [1, C, *]`` in training mode, inside ``n_probes`` random
    batches of ``batch_size`` (it, then ``batch_size − 1`` rows of ``pool``), and in evaluation
    mode. Returns ``(train_outputs [n_probes, C, *], eval_output [C, *], eval_diff)`` with
    ``eval_diff`` the largest change of the evaluation output when ``x`` shares a batch (zero:
    evaluation mode treats each sample alone). ``bn``'s statistics are left as they were."""
    if not 1 <= batch_size - 1 <= len(pool):
        raise ValueError(f"batch_size must be in [2, len(pool) + 1 = {len(pool) + 1}], "
                         f"got {batch_size}")
    gen = torch.Generator().manual_seed(seed)
    was_training = bn.training
    bn.eval()
    try:
        with torch.no_grad():
            alone = bn(x)[0]
            in_batch = bn(torch.cat([x, pool[: batch_size - 1]]))[0]
    finally:
        bn.train(was_training)
    with probing(bn):
        outs = torch.stack([bn(torch.cat([x, pool[torch.randperm(len(pool), generator=gen)
                                                  [: batch_size - 1]]]))[0]
                            for _ in range(n_probes)])
    return outs, alone, float((alone - in_batch).abs().max())
