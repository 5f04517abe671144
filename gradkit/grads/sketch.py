"""Random projections of gradient rows that keep inner products in expectation."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["kron_factors", "kron_split", "param_seed", "sketch"]

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


def param_seed(seed: int, index: int) -> int:
    """The seed of parameter tensor ``index`` (``named_parameters()`` order of the trainable ones)
    in a per-parameter sketch of seed ``seed``: each tensor gets its own independent projection."""
    return int(seed) * 1_000_003 + 7919 * (int(index) + 1)


def kron_split(k: int) -> tuple[int, int]:
    """``(k_out, k_in)`` with ``k_out · k_in = k`` and ``k_in`` the largest divisor ``≤ √k``."""
    k = int(k)
    k_in = max(i for i in range(1, math.isqrt(k) + 1) if k % i == 0)
    return k // k_in, k_in


def kron_factors(seed: int, d_out: int, d_in: int, k: int, dtype=torch.float32,
                 device=None) -> tuple[Tensor, Tensor]:
    """``(R_out [k_out, d_out], R_in [k_in, d_in])``, i.i.d. ``N(0, 1/k_out)`` and
    ``N(0, 1/k_in)`` (:func:`kron_split`), generated from ``seed``: ``R = R_out ⊗ R_in`` projects a
    ``d_out x d_in`` gradient ``g`` to ``R_out g R_inᵀ`` (``k`` numbers) with ``E[RᵀR] = I``, so
    inner products are kept in expectation (LoGra, Choe et al. 2024)."""
    if int(k) < 1:
        raise ValueError(f"sketch dimension k must be a positive integer, got {k!r}")
    k_out, k_in = kron_split(k)
    gen = torch.Generator().manual_seed(int(seed))
    r_out = torch.randn(k_out, d_out, generator=gen) / math.sqrt(k_out)
    r_in = torch.randn(k_in, d_in, generator=gen) / math.sqrt(k_in)
    return r_out.to(dtype=dtype, device=device), r_in.to(dtype=dtype, device=device)
