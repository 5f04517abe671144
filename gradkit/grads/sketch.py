"""Random projections of gradient rows that keep inner products in expectation."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["sketch"]

# Rows of a sketch matrix generated from one seed: any chunking of N or P gives the same sketch.
_SKETCH_BLOCK = 8192


def _sketch_block(seed: int, block: int, rows: int, k: int, dtype, device) -> Tensor:
    gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + block)
    r = torch.randn(rows, k, generator=gen, dtype=torch.float32) / math.sqrt(k)
    return r.to(dtype=dtype, device=device)


def sketch(G: Tensor, k: int | None, seed: int = 0) -> Tensor:
    """Random projection ``G R`` to ``k`` dimensions, ``R[P, k]`` i.i.d. ``N(0, 1) / sqrt(k)``.

    ``E[R Rᵀ] = I``, so inner products (and squared norms) are preserved in expectation:
    ``E[(G_i R)·(G_j R)] = G_i·G_j``, with relative spread about ``sqrt(2/k)``. ``R`` is
    generated in fixed blocks of rows from ``seed``: the same ``(seed, k)`` always gives the
    same ``R``, however ``G`` is chunked. ``k=None`` is the exact mode and returns ``G``.
    """
    if k is None:
        return G
    if int(k) < 1:
        raise ValueError(f"sketch dimension k must be a positive integer, got {k!r}")
    if G.dim() == 1:
        return sketch(G.unsqueeze(0), k, seed)[0]
    if G.dim() != 2:
        raise ValueError(f"G must be [N, P] (or [P]), got shape {tuple(G.shape)}")
    k = int(k)
    out = G.new_zeros(G.shape[0], k)
    for b, start in enumerate(range(0, G.shape[1], _SKETCH_BLOCK)):
        stop = min(G.shape[1], start + _SKETCH_BLOCK)
        out += G[:, start:stop] @ _sketch_block(seed, b, stop - start, k, G.dtype, G.device)
    return out


