"""``nn.Linear``'s Gram, norm and sketch forms, from the layer's input and output gradient.

The per-sample weight gradient of ``y = a Wᵀ + b`` is ``g_i = B_iᵀ A_i`` (``A_i`` the ``T x d_in``
inputs of sample ``i`` at its ``T`` positions, ``B_i`` the ``T x d_out`` output gradients; ``T = 1``
for a plain batch of vectors). Its materialised rule is :func:`linear_rule`; the other forms here
never build ``g_i``:

All in float64 (the products of float32 numbers are exact there).

- **Gram** (the "ghost" inner product; Goodfellow 2015, Li et al. 2021 for sequences):
  ``<g_i, g_j> = <A_i A_jᵀ, B_i B_jᵀ>_F``, cost ``O(N² T² (d_in + d_out))``, memory ``N² T²``
  (computed in blocks of rows within the budget);
- **norms**: its diagonal, ``||g_i||² = <A_i A_iᵀ, B_i B_iᵀ>_F``, cost ``O(N T² (d_in + d_out))``;
- **sketch** (LoGra, Choe et al. 2024): with ``R = R_out ⊗ R_in``, the projected gradient
  ``R_out g_i R_inᵀ = (B_i R_outᵀ)ᵀ (A_i R_inᵀ)``, cost ``O(N T (d_in k_in + d_out k_out))``.

A convolution is this layer on unfolded patches (:mod:`gradkit.grads.rules.conv`), with one
``(A, B)`` pair per group. The bias gradient ``Σ_t B_i`` is ``N x d_out`` and is materialised.
:func:`ghost_cheaper` is the cost model that picks between these forms and materialising ``g``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from gradkit.grads.rules.registry import Factored, register_factored, register_rule, wants

__all__ = ["affine_factored", "factors", "ghost_cheaper", "ghost_gram", "ghost_norms",
           "kron_project", "linear_bias", "linear_factored", "linear_rule"]


def factors(a: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
    """``(A [n, T, d_in], B [n, T, d_out])``: every dim between the samples (dim 0) and the
    features (last) is a position (``T`` their product)."""
    n = a.shape[0]
    return a.reshape(n, -1, a.shape[-1]), d.reshape(n, -1, d.shape[-1]).to(a.dtype)


def ghost_cheaper(n: int, t: int, d_in: int, d_out: int, mode: str, fits: bool) -> bool:
    """The cost model: whether the ghost form costs fewer flops than materialising ``g``.

    Materialising costs ``N T d_in d_out`` (the per-sample products) plus the reduction of the
    ``N x d_in d_out`` rows: ``N² d_in d_out`` for the Gram, ``N d_in d_out`` for the norms.
    The ghost form costs ``N² T² (d_in + d_out + 1)`` for the Gram and ``N T² (d_in + d_out + 1)``
    for the norms. ``fits``: whether materialising stays within the memory budget; if not, the
    ghost form is taken whatever it costs (its memory is blocked to the budget).
    """
    if not fits:
        return True
    p, pairs = d_in * d_out, (n * n if mode == "gram" else n)
    return pairs * t * t * (d_in + d_out + 1) <= n * t * p + pairs * p


def _row_block(n: int, t: int, itemsize: int, budget: int) -> int:
    """Samples per block so that a block's two ``[rows·T, N·T]`` products fit ``budget``."""
    return max(1, min(n, budget // max(1, 2 * n * t * t * itemsize)))


def ghost_gram(A: Tensor, B: Tensor, budget: int) -> Tensor:
    """``K[i, j] = <A_i A_jᵀ, B_i B_jᵀ>_F`` -> ``[n, n]`` (``A [n, T, d_in]``, ``B [n, T, d_out]``),
    computed in blocks of rows whose temporaries stay within ``budget`` bytes."""
    n, t = A.shape[:2]
    af, bf = A.reshape(n * t, -1).double(), B.reshape(n * t, -1).double()
    K = af.new_empty(n, n)
    rows = _row_block(n, t, 8, budget)
    for i0 in range(0, n, rows):
        i1 = min(n, i0 + rows)
        aa = af[i0 * t : i1 * t] @ af.T
        aa.mul_(bf[i0 * t : i1 * t] @ bf.T)
        K[i0:i1] = aa.view(i1 - i0, t, n, t).sum((1, 3))
    return K


def ghost_norms(A: Tensor, B: Tensor, budget: int) -> Tensor:
    """``||g_i||² = <A_i A_iᵀ, B_i B_iᵀ>_F`` -> ``[n]``, in blocks of samples within ``budget``."""
    n, t = A.shape[:2]
    out = A.new_empty(n, dtype=torch.float64)
    rows = max(1, min(n, budget // max(1, 2 * t * t * 8)))
    for i0 in range(0, n, rows):
        a, b = A[i0 : i0 + rows].double(), B[i0 : i0 + rows].double()
        if t == 1:  # ||a||² ||b||²
            out[i0 : i0 + rows] = a.square().sum((1, 2)) * b.square().sum((1, 2))
            continue
        aa = torch.bmm(a, a.transpose(1, 2))
        out[i0 : i0 + rows] = aa.mul_(torch.bmm(b, b.transpose(1, 2))).sum((1, 2))
    return out


def kron_project(A: Tensor, B: Tensor, r_out: Tensor, r_in: Tensor) -> Tensor:
    """``R_out g_i R_inᵀ = (B_i R_outᵀ)ᵀ (A_i R_inᵀ)`` flattened -> ``[n, k_out · k_in]``
    (``r_out [k_out, d_out]``, ``r_in [k_in, d_in]``, :func:`gradkit.grads.sketch.kron_factors`)."""
    pa = A @ r_in.T.to(A.dtype)  # [n, T, k_in]
    pb = B @ r_out.T.to(A.dtype)  # [n, T, k_out]
    return torch.bmm(pb.transpose(1, 2), pa).flatten(1)


def matrix_view(g: Tensor) -> Tensor:
    """A materialised per-sample gradient ``[n, d0, ...]`` as ``[n, d0, rest]`` (the matrix the
    Kronecker sketch projects on both sides; a weight's output channels are ``d0``)."""
    return g.reshape(g.shape[0], g.shape[1], math.prod(g.shape[2:]))


def linear_bias(d: Tensor) -> Tensor:
    """``∂l_n/∂b = Σ_t δ[n, t]`` -> ``[n, d_out]`` (``t``: every dim between the first and last)."""
    return d.reshape(d.shape[0], -1, d.shape[-1]).sum(1)


@register_rule(nn.Linear, any_dim=True)
def linear_rule(m: nn.Linear, a: Tensor, d: Tensor, weight: bool = True) -> dict[str, Tensor]:
    """``∂l_n/∂W = Σ_t δ[n, t]ᵀ a[n, t]``, ``∂l_n/∂b = Σ_t δ[n, t]`` (``t``: any extra dims;
    ``weight=False``: the bias only)."""
    n = a.shape[0]
    out = {}
    if weight and wants(m.weight):
        a3, d3 = a.reshape(n, -1, a.shape[-1]), d.reshape(n, -1, d.shape[-1])
        out["weight"] = (d3[:, 0, :, None] * a3[:, 0, None, :] if a3.shape[1] == 1
                         else torch.bmm(d3.transpose(1, 2), a3))
    if wants(m.bias):
        out["bias"] = linear_bias(d)
    return out


def affine_factored(x: Tensor, d: Tensor) -> Factored:
    """The weight of an affine map ``x Wᵀ + b`` (input ``x``, output gradient ``d``) in factored
    form: ``g_i = B_iᵀ A_i`` with ``(A, B)`` = :func:`factors` (held: the Kronecker sketch
    applies). A replay hands its projections' factors this way (attention's)."""
    A, B = factors(x, d)
    return Factored(A.shape[1], A.shape[2], B.shape[2], 1, lambda: [(A, B)], kron=(A, B))


@register_factored(nn.Linear)
def linear_factored(m: nn.Linear, a: Tensor, d: Tensor) -> Factored:
    """:func:`affine_factored`, with the bias materialised (``N x d_out``)."""
    f = affine_factored(a, d)
    f.rest = lambda: linear_rule(m, a, d, weight=False)
    return f


def examples() -> list[tuple[nn.Module, tuple[int, ...]]]:
    """Layers and per-sample input shapes for the shared test grid (``tests/grads/test_rules.py``):
    vectors, and a sequence (positions on dim 1)."""
    return [(nn.Linear(4, 3), (4,)), (nn.Linear(4, 3), (5, 4))]
