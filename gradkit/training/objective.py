"""The training objective of a run: raw (CE + ranking) or GHM (GHM-C + GHM ranking).

On a batch with logits ``z``, labels ``y``, scores ``s`` and angles ``a`` (``λ = rank_weight``):
``"raw"`` is ``CE(z, y) + λ R(s, a)`` and ``"ghm"`` is ``GHMC(z, y) + λ GHMRanking(s, a)``. A raw
run also moves a pair of *shadow* GHM modules (outside the graph): they see the raw run's
detached outputs at every step and move their EMA exactly as the GHM run's modules do, but never
enter the gradient, so that its GHM loss and diagnostics are the same quantities as a GHM run's,
evaluated along the raw run's trajectory. (A GHM module that never updated would keep its EMA at
zero and inflate every weight by ``1 / (1 - momentum)``.)
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor

from gradkit.losses.ghm import GHMC, GHMRanking, bin_index
from gradkit.losses.ranking import pairwise_ranking_loss, ranking_pairs
from gradkit.training.config import TrainConfig

__all__ = ["combine_terms", "ghm_context", "ghm_inputs", "ghm_modules", "ghm_diagnostics",
           "objective_losses", "objective_terms", "pair_accuracy", "sample_loss"]


def sample_loss(outputs: Tensor | tuple[Tensor, Tensor], targets: Tensor) -> Tensor:
    """Cross-entropy of the class logits, mean over the batch: ``mean_n -log p_n[y_n]``.

    ``outputs`` is the model's ``(logits, score)`` tuple (or the logits alone). With mean
    reduction, the gradient of a batch is the mean of its per-sample gradients, which is what
    :mod:`gradkit.grads` relies on.
    """
    logits = outputs[0] if isinstance(outputs, tuple | list) else outputs
    return F.cross_entropy(logits, targets)


def ghm_modules(config: TrainConfig) -> tuple[GHMC, GHMRanking]:
    return (GHMC(bins=config.bins, momentum=config.momentum),
            GHMRanking(bins=config.bins, momentum=config.momentum, margin=config.margin))


def pair_accuracy(scores: Tensor, angles: Tensor) -> float:
    """Share of pairs ``angle_i < angle_j`` ordered correctly, ``s_i < s_j`` (nan if none)."""
    i, j = ranking_pairs(angles)
    if i.numel() == 0:
        return float("nan")
    return float((scores[i] < scores[j]).float().mean())


def objective_terms(state, logits: Tensor, scores: Tensor, y: Tensor, angles: Tensor,
                     update_state: bool) -> tuple[Tensor, dict[str, Tensor]]:
    """The loss to minimise and the detached raw / GHM terms of one batch.

    ``state`` carries ``config`` and the run's two GHM modules ``ghmc`` and ``ghm_rank``.
    """
    cfg = state.config
    ce = sample_loss(logits, y)
    rank = pairwise_ranking_loss(scores, angles, cfg.margin)
    # An explicit all-ones label weight (same result: every sample counts) keeps GHMC's sample
    # mask on the batch's device; its default mask is created on the CPU.
    ones = torch.ones_like(y, dtype=torch.float32)
    with ghm_context(cfg):  # a raw run's shadow GHM modules: same EMA, outside the graph
        logits, scores = ghm_inputs(cfg, logits, scores)
        ghmc = state.ghmc(logits, y, ones, update_state=update_state)
        ghm_rank = state.ghm_rank(scores, angles, update_state=update_state)
    return combine_terms(cfg, ce, rank, ghmc, ghm_rank)


def ghm_context(cfg: TrainConfig):
    """``torch.no_grad()`` for a raw run, whose GHM terms are shadows outside the graph (every
    other objective trains through at least one GHM term)."""
    return contextlib.nullcontext() if cfg.objective != "raw" else torch.no_grad()


def ghm_inputs(cfg: TrainConfig, logits: Tensor, scores: Tensor) -> tuple[Tensor, Tensor]:
    """The outputs the GHM terms see: as they are for a GHM run, detached for a raw run."""
    if cfg.objective != "raw":
        return logits, scores
    return logits.detach(), scores.detach()


def combine_terms(cfg: TrainConfig, ce: Tensor, rank: Tensor, ghmc: Tensor,
                  ghm_rank: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """``raw = CE + λ R``, ``ghm = GHMC + λ GHMRanking`` (``λ = rank_weight``) and the loss of
    ``cfg.objective`` (also the ablation's halves ``ghmc_rank = GHMC + λ R`` and ``ce_ghmrank =
    CE + λ GHMRanking``); the terms detached. Elementwise: a single run's 0-d terms or an
    ensemble's ``[members]`` (:mod:`gradkit.training.ensemble`) alike."""
    losses = objective_losses(cfg.rank_weight, ce, rank, ghmc, ghm_rank)
    loss = losses[cfg.objective]
    terms = {"loss": loss, "raw": losses["raw"], "ghm": losses["ghm"], "ce": ce, "rank": rank,
             "ghmc": ghmc, "ghm_rank": ghm_rank}
    return loss, {k: v.detach() for k, v in terms.items()}


def objective_losses(rank_weight, ce, rank, ghmc, ghm_rank) -> dict:
    """Every objective of :data:`~gradkit.training.config.OBJECTIVES` from its four terms at
    ranking weight ``λ = rank_weight``: ``raw = CE + λ R``, ``ghm = GHMC + λ GHMRanking``,
    ``ghmc_rank = GHMC + λ R``, ``ce_ghmrank = CE + λ GHMRanking``. Elementwise, so tensors,
    floats and pandas columns alike: notebook 01 recomputes a run's raw loss at a common
    reference weight from its logged terms, so that runs trained at different weights compare
    on the same quantity."""
    return {"raw": ce + rank_weight * rank, "ghm": ghmc + rank_weight * ghm_rank,
            "ghmc_rank": ghmc + rank_weight * rank, "ce_ghmrank": ce + rank_weight * ghm_rank}


def ghm_diagnostics(module: GHMC | GHMRanking) -> dict[str, Tensor]:
    d = module.diagnostics()
    g = d["g"].float().cpu()
    weights = d["bin_weights"].float().cpu()
    idx = bin_index(g, module.edges.cpu()).clamp(0, module.bins - 1)
    return {"g": g, "w": weights[idx] if g.numel() else g.clone(),
            "counts": d["counts"].float().cpu(), "acc": d["acc"].float().cpu(),
            "bin_weights": weights}
