"""The per-sample gradient Gram matrix as a value the statistics accept in place of ``G[N, P]``.

Every statistic of notebooks 02 and 03 depends on the gradients only through their inner
products ``K[i, j] = <g_i, g_j>``: the noise scale (``tr Σ`` from ``diag K``, ``||g_D||² =
Σ K / N²``), cosines (``K`` normalised), batch gradients (``M K Mᵀ`` for an averaging matrix
``M``, block sums of ``K``), class means (row sums of ``K``), t-SNE distances
(``K_ii + K_jj - 2 K_ij``). :class:`Gram` carries ``K``; :meth:`Gram.rows` gives ``N`` rows with
exactly these inner products, so that each statistic keeps its one implementation on rows
(:func:`as_rows`) and costs ``N x N``, never ``N x P``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Gram", "as_rows"]


@dataclass(frozen=True, eq=False)
class Gram:
    """``K[i, j] = <g_i, g_j>`` of ``N`` gradients (float64 ``[N, N]``, symmetric).

    From :func:`~gradkit.grads.gradient_gram` (or :meth:`of_rows` of materialised rows); pass it
    wherever a statistic takes ``G`` (noise scale, similarity, conflicts, t-SNE, batch means).

    >>> import torch
    >>> G = torch.randn(4, 10)
    >>> K = Gram.of_rows(G)
    >>> R = K.rows()  # [4, 4] rows with the inner products of G's rows
    >>> bool(torch.allclose(R @ R.T, G.double() @ G.double().T))
    True
    """

    K: Tensor

    def __post_init__(self):
        K = self.K
        if not isinstance(K, Tensor) or K.dim() != 2 or K.shape[0] != K.shape[1]:
            raise ValueError(f"a Gram matrix must be a square Tensor[N, N], got "
                             f"{type(K).__name__} {tuple(getattr(K, 'shape', ()))}")
        if K.shape[0] == 0 or not torch.isfinite(K).all():
            raise ValueError("a Gram matrix must be non-empty and finite")
        K = K.detach().to(device="cpu", dtype=torch.float64)
        scale = float(K.diagonal().abs().max())
        if float((K - K.T).abs().max()) > 1e-6 * scale:
            raise ValueError("a Gram matrix must be symmetric (K[i, j] = K[j, i])")
        object.__setattr__(self, "K", (K + K.T) / 2)

    @classmethod
    def of_rows(cls, G: Tensor) -> Gram:
        """``G Gᵀ`` of materialised rows ``G[N, D]`` (in float64)."""
        g = torch.as_tensor(G).detach().to(device="cpu", dtype=torch.float64)
        if g.dim() != 2:
            raise ValueError(f"G must be [N, D], got shape {tuple(g.shape)}")
        return cls(g @ g.T)

    @classmethod
    def of_blocks(cls, blocks: dict[str, Tensor], names: Iterable[str] | None = None) -> Gram:
        """The Gram matrix of the parameters ``names`` (default: all) from the per-parameter
        blocks of ``gradient_gram(..., by_layer=True)``: blocks of disjoint parameters add."""
        names = list(blocks) if names is None else list(names)
        missing = [k for k in names if k not in blocks]
        if missing or not names:
            raise ValueError(f"no Gram block for parameters {missing or names}; blocks hold "
                             f"{list(blocks)[:8]}")
        return cls(sum(blocks[k].double() for k in names))

    @property
    def n(self) -> int:
        """The number of gradients ``N``."""
        return self.K.shape[0]

    def norms(self) -> Tensor:
        """``||g_i|| = √K_ii`` (float64 ``[N]``)."""
        return self.K.diagonal().clamp_min(0).sqrt()

    def __getitem__(self, index) -> Gram:
        """The Gram matrix of the rows ``index`` (a slice, indices or a boolean mask)."""
        idx = torch.arange(self.n)[index]
        return Gram(self.K[idx][:, idx])

    def rows(self) -> Tensor:
        """``R[N, N]`` with ``R Rᵀ = K``: the gradients in an orthonormal basis of their span.

        ``R = D U`` with ``D = diag ||g_i||`` and ``U Uᵀ = D⁻¹ K D⁻¹`` (the cosine matrix, from
        its eigendecomposition, negative rounding eigenvalues set to 0), so every row keeps its
        own norm to float64 precision however small it is against the others; a zero gradient
        is a zero row. Statistics of inner products, norms and means are those of ``G``.
        """
        norms = self.norms()
        inv = torch.where(norms > 0, 1 / norms.clamp_min(torch.finfo(torch.float64).tiny), 0.0)
        cos = (self.K * inv[:, None] * inv[None, :]).clamp(-1.0, 1.0)
        cos.diagonal().copy_((norms > 0).double())
        vals, vecs = torch.linalg.eigh(cos)
        u = vecs * vals.clamp_min(0).sqrt()
        # each unit row exactly unit again (the clamped eigenvalues shift it by ~1e-15)
        un = u.norm(dim=1, keepdim=True)
        u = torch.where(un > 0, u / un.clamp_min(torch.finfo(torch.float64).tiny), 0.0)
        return u * norms[:, None]


def as_rows(grads) -> Tensor:
    """``grads`` as rows with their inner products: a :class:`Gram`'s :meth:`~Gram.rows`, or
    the rows of a ``[N, D]`` tensor (or array) as they are."""
    return grads.rows() if isinstance(grads, Gram) else torch.as_tensor(grads)
