"""The smooth pairwise ranking loss of the ranker's score head: higher angle, higher score."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["pairwise_ranking_loss", "ranking_margins", "ranking_pairs"]


def ranking_pairs(angles: Tensor) -> tuple[Tensor, Tensor]:
    """Index pairs ``(i, j)`` with ``angle_i < angle_j`` (each unordered pair of distinct angles
    once; equal angles form no pair), in row-major order."""
    if angles.dim() != 1:
        raise ValueError(f"angles must be 1-D, got shape {tuple(angles.shape)}")
    i, j = torch.nonzero(angles[:, None] < angles[None, :], as_tuple=True)
    return i, j


def ranking_margins(scores: Tensor, angles: Tensor, margin: float = 10.0) -> Tensor:
    """``z_ij = s_j - s_i - margin`` for every pair with ``angle_i < angle_j`` (1-D)."""
    if scores.dim() != 1 or scores.shape != angles.shape:
        raise ValueError(
            f"scores and angles must be 1-D of equal length, got {tuple(scores.shape)} "
            f"and {tuple(angles.shape)}"
        )
    i, j = ranking_pairs(angles)
    return scores[j] - scores[i] - margin


def pairwise_ranking_loss(scores: Tensor, angles: Tensor, margin: float = 10.0) -> Tensor:
    """Smooth pairwise ranking loss ``mean_{angle_i < angle_j} softplus(-z_ij)``,
    ``z_ij = s_j - s_i - margin``: the higher angle should score at least ``margin`` more.

    ``d softplus(-z) / dz = -sigmoid(-z)``, so each pair's gradient norm is ``sigmoid(-z)`` in
    ``(0, 1)`` (a hinge's would be only 0 or 1). With no valid pair the loss is
    ``0 * sum(scores)``: zero, and still connected to the graph.
    """
    z = ranking_margins(scores, angles, margin)
    if z.numel() == 0:
        return scores.sum() * 0.0
    return F.softplus(-z).mean()


