"""The smooth pairwise ranking loss of the ranker's score head: higher angle, higher score.

Every function takes an optional leading member dimension (``scores``, ``angles``:
``[..., N]``), so that an ensemble of runs (:mod:`gradkit.training.ensemble`) computes its loss
through the same definitions as a single run; :func:`ranking_pairs` and
:func:`ranking_margins` list the pairs of one 1-D batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["pairwise_ranking_loss", "ranking_margin_matrix", "ranking_margins", "ranking_pairs"]


def ranking_pairs(angles: Tensor) -> tuple[Tensor, Tensor]:
    """Index pairs ``(i, j)`` with ``angle_i < angle_j`` (each unordered pair of distinct angles
    once; equal angles form no pair), in row-major order."""
    if angles.dim() != 1:
        raise ValueError(f"angles must be 1-D, got shape {tuple(angles.shape)}")
    i, j = torch.nonzero(_pair_mask(angles), as_tuple=True)
    return i, j


def _pair_mask(angles: Tensor) -> Tensor:
    """``[..., N, N]``: ``True`` at ``(i, j)`` where ``angle_i < angle_j``."""
    return angles[..., :, None] < angles[..., None, :]


def ranking_margin_matrix(scores: Tensor, angles: Tensor,
                          margin: float = 10.0) -> tuple[Tensor, Tensor]:
    """``z [..., N, N]`` with ``z_ij = s_j - s_i - margin`` and the mask of the pairs,
    ``angle_i < angle_j`` (``z`` is computed for every ``(i, j)``; only the pairs count)."""
    if scores.dim() < 1 or scores.shape != angles.shape:
        raise ValueError(
            f"scores and angles must be [..., N] of equal shape, got {tuple(scores.shape)} "
            f"and {tuple(angles.shape)}"
        )
    z = scores[..., None, :] - scores[..., :, None] - margin
    return z, _pair_mask(angles)


def ranking_margins(scores: Tensor, angles: Tensor, margin: float = 10.0) -> Tensor:
    """``z_ij = s_j - s_i - margin`` for every pair with ``angle_i < angle_j`` (1-D)."""
    if scores.dim() != 1 or scores.shape != angles.shape:
        raise ValueError(
            f"scores and angles must be 1-D of equal length, got {tuple(scores.shape)} "
            f"and {tuple(angles.shape)}"
        )
    if scores.dim() != 1:
        raise ValueError(f"scores and angles must be 1-D, got shape {tuple(scores.shape)}")
    z, pairs = ranking_margin_matrix(scores, angles, margin)
    return z[pairs]


def pairwise_ranking_loss(scores: Tensor, angles: Tensor, margin: float = 10.0) -> Tensor:
    """Smooth pairwise ranking loss ``mean_{angle_i < angle_j} softplus(-z_ij)``,
    ``z_ij = s_j - s_i - margin``: the higher angle should score at least ``margin`` more.

    ``d softplus(-z) / dz = -sigmoid(-z)``, so each pair's gradient norm is ``sigmoid(-z)`` in
    ``(0, 1)`` (a hinge's would be only 0 or 1). With no valid pair the loss is zero, and still
    connected to the graph. ``scores``, ``angles``: ``[N]`` (a 0-d loss) or ``[..., N]`` (one
    loss per leading index, e.g. per ensemble member).
    """
    z, pairs = ranking_margin_matrix(scores, angles, margin)
    soft = torch.where(pairs, F.softplus(-z), 0.0)
    return soft.sum((-2, -1)) / pairs.sum((-2, -1)).clamp_min(1)


