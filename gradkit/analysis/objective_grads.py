"""Per-sample gradients of the objective a run trained (GHM-C + GHM ranking, or CE + ranking).

The GHM losses are not sums of per-sample terms: their weights depend on the batch and on the
EMA state, and the ranking term on pairs. A *per-sample* gradient of them is defined here,
at a checkpoint of a run with parameters ``θ``:

- **Batches.** The run's batches of the *next* epoch (``epoch_order(N, seed, epoch + 1)``, cut
  into ``batch_size``): the objective exactly as the next training step would see it.
- **GHM weights frozen.** The checkpoint's EMA state ``acc_sum`` (saved under
  ``payload["ghm"]``, see :mod:`gradkit.training.runs`) is loaded and never updated; within a
  batch ``b`` each clip ``n`` gets the GHM-C weight ``w_n`` the module would give it
  (:func:`gradkit.losses.ghm_weights`), a constant (GHM detaches it too). Raw runs: ``w_n = 1``.
- **A clip's share of its pairs.** The ranking loss ``R_b(s)`` of a batch depends on the scores
  of its pairs. By the chain rule ``∇_θ R_b = Σ_{k∈b} (∂R_b/∂s_k) ∇_θ s_k``: clip ``k``'s share
  is the term with its own score, ``c_k ∇_θ s_k`` with ``c_k = |b| ∂R_b/∂s_k`` (a constant,
  the summed pull of all its pairs on its score).

The per-sample loss of clip ``k`` in batch ``b`` is therefore

    ``l_k(θ) = w_k CE_k(θ) + λ c_k s_k(θ)``,      ``λ = rank_weight``,

and ``(1/|b|) Σ_{k∈b} ∇l_k = ∇_θ [GHMC_b + λ GHMRanking_b]`` exactly: the mean of the rows of
a batch is that batch's training gradient, and their mean over the epoch is the epoch's mean
gradient at ``θ``. (The shares depend on who shares the batch, so for batches drawn afresh the
noise scale of these rows is an approximation; for the run's own batches it is exact.)

So per-sample quantities never take the pairwise ranking term of a batch: :func:`objective_loss`
is a mean of per-sample terms (``w`` and ``c`` frozen as constants) and passes
:func:`~gradkit.grads.per_sample_grads`'s loss-coupling check, where the raw batch objective
(CE + pairwise ranking over the batch's pairs) would raise
:class:`~gradkit.grads.CoupledLossError` (a pair of one sample is no pair: its rows would be
the CE rows alone). The ranking term itself is reported separately (the runs' logged losses).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from gradkit.grads import gradient_gram, per_sample_grads
from gradkit.losses import ghm_weights, pairwise_ranking_loss
from gradkit.training import epoch_order
from gradkit.training.objective import ghm_modules

__all__ = ["objective_coefficients", "objective_loss", "objective_sample_grads",
           "objective_sample_gram"]


def objective_loss(outputs, targets) -> Tensor:
    """``mean_k w_k CE_k + λ c_k s_k`` for ``targets = (y, w, λ c)`` (module docstring)."""
    logits, scores = outputs
    y, w, c = targets
    ce = F.cross_entropy(logits, y, reduction="none")
    return (w * ce + c * scores.reshape(-1)).mean()


def _frozen_modules(run, epoch: int):
    ghmc, rank = ghm_modules(run.config)
    state = run.load_checkpoint(epoch)["ghm"]
    ghmc.load_state_dict(state["ghmc"])
    rank.load_state_dict(state["ghm_ranking"])
    return ghmc.eval(), rank.eval()


def _batch_terms(cfg, ghmc, rank, logits, scores, y, angles) -> tuple[Tensor, Tensor]:
    """``(w, c)`` of one batch: frozen GHM-C weights and ``|b| ∂R_b/∂s``."""
    s = scores.detach().clone().requires_grad_(True)
    if cfg.objective == "ghm":
        g = 1.0 - torch.softmax(logits, 1).gather(1, y[:, None]).squeeze(1)
        valid = torch.ones_like(g, dtype=torch.bool)
        w = ghm_weights(g, valid, ghmc.edges, ghmc.acc_sum, ghmc.momentum)["weights"]
        r = rank(s, angles, update_state=False)
    else:
        w = torch.ones(len(y), dtype=logits.dtype)
        r = pairwise_ranking_loss(s, angles, cfg.margin)
    (ds,) = torch.autograd.grad(r, s, allow_unused=True)
    c = torch.zeros_like(s) if ds is None else ds * len(y)
    return w.detach(), c.detach()


def objective_coefficients(run, epoch: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(y, w, λ c)`` of every training clip at checkpoint ``epoch`` (module docstring)."""
    cfg, split = run.config, run.split
    x, y, angles = split.x_train, split.y_train, split.angles_train.float()
    ghmc, rank = _frozen_modules(run, epoch)
    with torch.no_grad():
        logits, scores = run.load_model(epoch)(x)
    w, c = torch.ones(len(y)), torch.zeros(len(y))
    for idx in epoch_order(len(y), cfg.seed, epoch + 1).split(cfg.batch_size):
        w[idx], c[idx] = _batch_terms(cfg, ghmc, rank, logits[idx], scores[idx], y[idx],
                                      angles[idx])
    return y, w, cfg.rank_weight * c


def objective_sample_grads(run, epoch: int) -> Tensor:
    """``G[N, P]``: rows ``∇_θ l_k`` of the run's trained objective (module docstring)."""
    targets = objective_coefficients(run, epoch)
    return per_sample_grads(run.load_model(epoch), objective_loss, run.split.x_train, targets)


def objective_sample_gram(run, epoch: int, by_layer: bool = False):
    """``K = G Gᵀ`` of :func:`objective_sample_grads`'s rows without ``G``
    (:func:`gradkit.grads.gradient_gram`; ``by_layer``: the per-parameter blocks)."""
    targets = objective_coefficients(run, epoch)
    return gradient_gram(run.load_model(epoch), objective_loss, run.split.x_train, targets,
                         by_layer=by_layer)
