"""Cosine similarity of gradient directions: matrices, their statistics, t-SNE.

Every function takes gradients as rows of a matrix ``G`` of shape ``[N, D]``: exact per-sample or
per-batch gradients (``D = P`` parameters) or random sketches of them (``D = k``, which keep
cosines approximately, Johnson-Lindenstrauss), or their Gram matrix
(:class:`~gradkit.grads.gram_matrix.Gram`: every statistic here is one of inner products).
Two levels of analysis use the same code:

- ``sample``: one row per sample (per-sample gradients of a data set or an analysis batch);
- ``batch``:  one row per mini-batch (the per-batch gradients of one epoch).

Notation: ``u_i = g_i / ||g_i||`` is the direction of row ``i`` (a zero row stays zero, so its
cosine with everything is 0); ``cos_ij = u_i . u_j``; ``S_c = sum_{i in c} u_i`` is the sum of
the directions of class ``c`` (``n_c`` rows) and ``S = sum_i u_i``.

Scale: the statistics never build ``N x N``. The means (over pairs, within / between class, per
sample to its class, the silhouette) have closed forms in the class sums ``S_c`` and cost
``O(N D)``; the share of negative pairs and the most conflicting pairs are scanned in row blocks
of ``block_size x N``. Memory is ``O(N D + block_size N)`` - for a sketch, bounded by the sketch
size, never by ``N x P``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from gradkit.grads.gram_matrix import as_rows

LEVELS = ("sample", "batch")


# -- directions and the matrix ---------------------------------------------------------------
def _as_rows(grads, name: str = "grads") -> torch.Tensor:
    g = as_rows(grads)
    if g.ndim != 2:
        raise ValueError(f"{name} must be a 2-D [N, D] matrix of gradients, got shape "
                         f"{tuple(g.shape)}")
    if g.shape[0] == 0 or g.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(g.shape)}")
    if not torch.isfinite(g).all():
        bad = (~torch.isfinite(g)).any(dim=1).nonzero().flatten()[:5].tolist()
        raise ValueError(f"{name} has non-finite entries (rows {bad}...)")
    return g.detach().to(device="cpu", dtype=torch.float64)


def _as_labels(labels, n: int) -> torch.Tensor:
    y = torch.as_tensor(np.asarray(labels)).long().flatten()
    if y.numel() != n:
        raise ValueError(f"labels has {y.numel()} entries but grads has {n} rows")
    return y


def unit_directions(grads) -> torch.Tensor:
    """Rows scaled to unit length: ``u_i = g_i / ||g_i||_2`` (float64; a zero row stays 0)."""
    g = _as_rows(grads)
    norms = g.norm(dim=1, keepdim=True)
    return torch.where(norms > 0, g / norms.clamp_min(torch.finfo(g.dtype).tiny), 0.0)


def cosine_matrix(grads) -> torch.Tensor:
    """``C_ij = cos(g_i, g_j) = u_i . u_j``, the dense ``[N, N]`` matrix (for small ``N``)."""
    u = unit_directions(grads)
    return (u @ u.T).clamp_(-1.0, 1.0)


def class_order(labels) -> torch.Tensor:
    """Permutation that sorts rows by class, stable (original order kept inside a class)."""
    y = torch.as_tensor(np.asarray(labels)).long().flatten()
    return torch.sort(y, stable=True).indices


@dataclass
class SimilarityMatrix:
    """A cosine matrix with its rows (and columns) in class order.

    ``matrix[a, b] = cos(g[order[a]], g[order[b]])``; ``labels`` are the labels in that order
    (``None`` at the batch level, where rows are batches in step order).
    """

    matrix: torch.Tensor
    order: torch.Tensor
    labels: torch.Tensor | None
    level: str


def similarity_matrix(grads, labels=None, level: str = "sample") -> SimilarityMatrix:
    """Cosine matrix of gradient directions, rows ordered by class so blocks show.

    ``level="sample"``: rows of ``grads`` are per-sample gradients, ``labels`` their classes.
    ``level="batch"``: rows are per-batch gradients; with ``labels`` (say, a batch's majority
    class, or its epoch) they are ordered by it, without, kept in step order.
    The matrix is dense ``N x N``: for pictures. Statistics of large ``N`` come from
    :func:`similarity_stats`, which never forms it.
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    g = _as_rows(grads)
    if labels is None:
        if level == "sample":
            raise ValueError("level='sample' needs labels to order the rows by class")
        order, ordered = torch.arange(g.shape[0]), None
    else:
        y = _as_labels(labels, g.shape[0])
        order = class_order(y)
        ordered = y[order]
    return SimilarityMatrix(cosine_matrix(g[order]), order, ordered, level)


# -- statistics in closed form (O(N D), no N x N) --------------------------------------------
# Each public function normalises its input once and calls a private twin working on the unit
# directions ``u``; :func:`similarity_stats` normalises once and calls the twins directly.
def _class_sums(u: torch.Tensor, y: torch.Tensor):
    """``S_c`` [C, D], ``n_c`` [C], and each row's class position in ``torch.unique(y)``."""
    classes, index = torch.unique(y, return_inverse=True)
    sums = torch.zeros(len(classes), u.shape[1], dtype=u.dtype).index_add_(0, index, u)
    counts = torch.bincount(index, minlength=len(classes)).to(u.dtype)
    return sums, counts, index


def mean_offdiag_cosine(grads) -> float:
    """Mean cosine over ordered pairs ``i != j``: ``(||S||^2 - sum_i ||u_i||^2) / (N (N-1))``."""
    return _mean_offdiag(unit_directions(grads))


def _mean_offdiag(u: torch.Tensor) -> float:
    n = u.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 gradients for a pair, got {n}")
    s = u.sum(dim=0)
    return float((s @ s - (u * u).sum()) / (n * (n - 1)))


def within_between_cosine(grads, labels) -> tuple[float, float]:
    """Mean cosine over pairs of the same class and over pairs of different classes.

    within  = sum_c (||S_c||^2 - sum_{i in c} ||u_i||^2) / sum_c n_c (n_c - 1)
    between = (||S||^2 - sum_c ||S_c||^2) / (N^2 - sum_c n_c^2)
    Either is NaN when no such pair exists (every class a singleton; a single class).
    """
    u = unit_directions(grads)
    return _within_between(u, _as_labels(labels, u.shape[0]))


def _within_between(u: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    sums, counts, _ = _class_sums(u, y)
    own = (sums * sums).sum(dim=1)  # ||S_c||^2
    within_pairs = float((counts * (counts - 1)).sum())
    between_pairs = float(u.shape[0] ** 2 - (counts**2).sum())
    total = u.sum(dim=0)
    within = float(own.sum() - (u * u).sum()) / within_pairs if within_pairs else float("nan")
    between = (float(total @ total - own.sum()) / between_pairs if between_pairs
               else float("nan"))
    return within, between


def mean_cosine_to_class(grads, labels) -> torch.Tensor:
    """Per sample, mean cosine to the other members of its class.

    ``m_i = u_i . (S_c - u_i) / (n_c - 1)`` for ``i`` in class ``c`` (NaN for a singleton).
    The most negative are the samples whose gradient pulls against their own class.
    """
    u = unit_directions(grads)
    return _mean_to_class(u, _as_labels(labels, u.shape[0]))


def _mean_to_class(u: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    sums, counts, index = _class_sums(u, y)
    dots = (u * sums[index]).sum(dim=1) - (u * u).sum(dim=1)
    others = counts[index] - 1
    return torch.where(others > 0, dots / others.clamp_min(1), float("nan"))


def class_silhouette_samples(grads, labels) -> torch.Tensor:
    """Per-sample silhouette of the classes under cosine distance ``d_ij = 1 - cos_ij``.

    ``a_i = 1 - m_i`` (mean distance to its own class, see :func:`mean_cosine_to_class`),
    ``b_i = min_{d != c} (1 - u_i . S_d / n_d)`` (nearest other class),
    ``s_i = (b_i - a_i) / max(a_i, b_i)``; 0 for a singleton class (as scikit-learn).
    """
    u = unit_directions(grads)
    return _silhouette_samples(u, _as_labels(labels, u.shape[0]))


def _silhouette_samples(u: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    sums, counts, index = _class_sums(u, y)
    if not 2 <= len(counts) <= u.shape[0] - 1:
        raise ValueError(f"silhouette needs 2 <= number of classes <= N - 1, got "
                         f"{len(counts)} classes for N = {u.shape[0]}")
    to_class = 1.0 - (u @ sums.T) / counts  # [N, C] mean distance to each class
    a = 1.0 - _mean_to_class(u, y)
    to_class[torch.arange(u.shape[0]), index] = float("inf")
    b = to_class.min(dim=1).values
    s = (b - a) / torch.maximum(a, b)
    singleton = counts[index] == 1
    return torch.nan_to_num(torch.where(singleton, 0.0, s), nan=0.0)


def class_silhouette(grads, labels) -> float:
    """Mean silhouette by class under cosine distance: 1 = tight separate classes, ~0 = mixed,
    < 0 = samples closer to another class than to their own."""
    return float(class_silhouette_samples(grads, labels).mean())


# -- blockwise pair scan -----------------------------------------------------------------------
@dataclass
class PairScan:
    """Result of :func:`pair_scan` over the ``N (N-1) / 2`` unordered pairs ``i < j``."""

    n_pairs: int
    n_negative: int
    pairs: torch.Tensor  # [top_k, 2] (i, j) with the most negative cosines, most negative first
    cosines: torch.Tensor  # [top_k]
    n_pairs_within: int = 0  # same-class pairs (0 without labels)
    n_negative_within: int = 0

    @property
    def share_negative(self) -> float:
        """Share of pairs pointing against each other: ``#{i < j : cos_ij < 0} / #pairs``."""
        return self.n_negative / self.n_pairs

    @property
    def share_negative_within(self) -> float:
        """The same among same-class pairs (NaN without labels or without such pairs)."""
        return self.n_negative_within / self.n_pairs_within if self.n_pairs_within else math.nan


def pair_scan(grads, top_k: int = 10, block_size: int = 1024, labels=None) -> PairScan:
    """Count negative pairs and find the ``top_k`` most negative ones, one row block at a time.

    With ``labels`` it also counts the negative same-class pairs, and the ``top_k`` are searched
    among same-class pairs only: those that should pull together but pull apart (different
    classes pulling apart is what a classifier's gradients do). Row block ``[s, e)`` meets
    columns ``[s, N)`` only (the upper triangle), so peak memory is a few ``block_size x N``
    arrays on top of the ``[N, D]`` directions.
    """
    u = unit_directions(grads)
    y = None if labels is None else _as_labels(labels, u.shape[0])
    return _pair_scan(u, top_k, block_size, y)


def _pair_scan(u: torch.Tensor, top_k: int, block_size: int,
               y: torch.Tensor | None = None) -> PairScan:
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    n = u.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 gradients for a pair, got {n}")
    best_v = torch.empty(0, dtype=u.dtype)
    best_ij = torch.empty(0, 2, dtype=torch.long)
    negatives = negatives_within = 0
    for s in range(0, n, block_size):
        e = min(s + block_size, n)
        block = u[s:e] @ u[s:].T  # [e-s, n-s]: rows i in [s, e), columns j in [s, n)
        # only the leading square holds pairs with j <= i; +inf there is neither < 0 nor a top-k
        square = block[:, : e - s]
        square.masked_fill_(torch.ones_like(square, dtype=torch.bool).tril(), float("inf"))
        negative = block < 0
        negatives += int(torch.count_nonzero(negative))
        if y is not None:
            other = y[s:e, None] != y[None, s:]
            negatives_within += int(torch.count_nonzero(negative & ~other))
            block = block.masked_fill_(other, float("inf"))
        # the k most negative of the block are among the k most negative of its rows
        k_row = min(top_k, block.shape[1])
        v, col = torch.topk(block, k_row, dim=1, largest=False)
        ij = torch.stack([torch.arange(s, e).unsqueeze(1).expand_as(col), col + s], dim=-1)
        v, ij = torch.cat([best_v, v.flatten()]), torch.cat([best_ij, ij.reshape(-1, 2)])
        keep = torch.topk(v, min(top_k, v.numel()), largest=False).indices
        best_v, best_ij = v[keep], ij[keep]
    valid = torch.isfinite(best_v)  # fewer than top_k pairs in all: drop the +inf fillers
    best_v, best_ij = best_v[valid], best_ij[valid]
    order = torch.argsort(best_v, stable=True)
    within = 0 if y is None else sum(c * (c - 1) // 2
                                     for c in torch.unique(y, return_counts=True)[1].tolist())
    return PairScan(n * (n - 1) // 2, negatives, best_ij[order],
                    best_v[order].clamp(-1.0, 1.0), within, negatives_within)


# -- one epoch's summary -----------------------------------------------------------------------
@dataclass
class SimilarityStats:
    """The summary of one set of gradients (one epoch, one level)."""

    n: int
    mean_cosine: float  # mean off-diagonal cosine
    share_negative: float  # share of pairs with cos < 0
    share_negative_within: float  # share of same-class pairs with cos < 0 (NaN without labels)
    within_class: float  # mean cosine of same-class pairs (NaN without labels)
    between_class: float  # mean cosine of different-class pairs (NaN without labels)
    silhouette: float  # class silhouette under cosine distance (NaN without labels)
    conflicting_pairs: pd.DataFrame = field(repr=False)
    conflicting_samples: pd.DataFrame = field(repr=False)

    def row(self) -> dict[str, float]:
        """The scalar statistics as one table row."""
        return {"n": self.n, "mean_cosine": self.mean_cosine,
                "share_negative": self.share_negative,
                "share_negative_within": self.share_negative_within,
                "within_class": self.within_class,
                "between_class": self.between_class, "silhouette": self.silhouette}


def similarity_stats(grads, labels=None, paths=None, class_names=None, top_k: int = 10,
                     block_size: int = 1024) -> SimilarityStats:
    """Mean off-diagonal cosine, share of negative pairs (all, same-class), within / between
    class cosine, silhouette, the ``top_k`` most conflicting pairs and samples - without N x N.

    Conflicting pairs: the most negative same-class pairs when ``labels`` are given (see
    :func:`pair_scan`), else the most negative pairs. Conflicting samples: the lowest mean
    cosine to their own class (:func:`mean_cosine_to_class`). ``paths`` (one per row) name the
    recordings so a user can listen to the conflicts; ``class_names[label]`` names the classes.
    Without ``labels`` (batch level) the class statistics are NaN and ``conflicting_samples``
    is empty.
    """
    u = unit_directions(grads)
    n = u.shape[0]
    if paths is not None and len(paths) != n:
        raise ValueError(f"paths has {len(paths)} entries but grads has {n} rows")
    y = None if labels is None else _as_labels(labels, n)

    def name(i: int) -> dict:
        out = {}
        if y is not None:
            c = int(y[i])
            out["class"] = class_names[c] if class_names is not None else c
        if paths is not None:
            out["path"] = str(paths[i])
        return out

    scan = _pair_scan(u, top_k, block_size, y)
    pairs = pd.DataFrame(columns=["i", "j", "cosine"]) if not len(scan.pairs) else pd.DataFrame([
        {"i": int(i), "j": int(j), "cosine": float(c),
         **{f"{k}_i": v for k, v in name(int(i)).items()},
         **{f"{k}_j": v for k, v in name(int(j)).items()}}
        for (i, j), c in zip(scan.pairs.tolist(), scan.cosines.tolist(), strict=True)
    ])
    if y is None:
        within = between = silhouette = float("nan")
        samples = pd.DataFrame(columns=["index", "mean_cos_own_class"])
    else:
        within, between = _within_between(u, y)
        n_classes = len(torch.unique(y))
        silhouette = (float(_silhouette_samples(u, y).mean()) if 2 <= n_classes <= n - 1
                      else float("nan"))
        m = _mean_to_class(u, y)
        ranked = [i for i in torch.argsort(m, stable=True).tolist() if not torch.isnan(m[i])]
        samples = pd.DataFrame([
            {"index": i, **name(i), "mean_cos_own_class": float(m[i])} for i in ranked[:top_k]
        ])
    return SimilarityStats(n, _mean_offdiag(u), scan.share_negative, scan.share_negative_within,
                           within, between, silhouette, pairs, samples)


# -- over epochs ------------------------------------------------------------------------------
def matrix_change(before: torch.Tensor, after: torch.Tensor) -> float:
    """How much a cosine matrix moved between two epochs (same rows in the same order):
    the mean of ``|C'_ij - C_ij|`` over the off-diagonal entries (0 = unchanged, at most 2)."""
    a, b = torch.as_tensor(before), torch.as_tensor(after)
    if a.shape != b.shape or a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] < 2:
        raise ValueError(f"need two square matrices of one shape (N >= 2), got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    off = ~torch.eye(a.shape[0], dtype=torch.bool)
    return float((b.double() - a.double()).abs()[off].mean())



def cosine(g1: Tensor, g2: Tensor) -> float:
    """``cos(g1, g2) = g1 . g2 / (|g1| |g2|)``; negative means the tasks conflict."""
    return float(g1 @ g2 / (g1.norm() * g2.norm()).clamp(min=1e-30))


def magnitude_similarity(g1: Tensor, g2: Tensor) -> float:
    """``2 |g1| |g2| / (|g1|^2 + |g2|^2)``: 1 for equal norms, -> 0 as one dominates (Yu 2020)."""
    a, b = float(g1.norm()), float(g2.norm())
    return 2 * a * b / max(a * a + b * b, 1e-30)


