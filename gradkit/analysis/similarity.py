"""Notebook 03's reading of similarity statistics over epochs: phases, trends and the words
that name a silhouette or a mean cosine.

- :func:`phases`      the checkpoints cut into up to three consecutive phases (early, middle,
  late), so the phases follow the run's length instead of fixed epochs;
- :func:`phase_table` the mean of every statistic per phase;
- :func:`trend_word`  ``"rose"`` / ``"fell"`` / ``"shows no detectable trend"`` over a series of
  checkpoints, from :func:`gradkit.stats.plateau_test` (OLS slope over all the points, two-sided
  at ``alpha``); ``"cannot be tested"`` with fewer than 3 points;
- :func:`structure`   the silhouette's usual reading (Kaufman & Rousseeuw 1990): above 0.70
  strong, 0.51–0.70 reasonable, 0.26–0.50 weak, otherwise no substantial structure;
- :func:`block_word`, :func:`sketch_agrees`  the other thresholds the notebook reads by;
- :func:`checkpoint_similarity`  everything computed at one checkpoint;
- :func:`agreement`   a mean cosine above 0.5 "mostly agree", above 0.2 "partly agree", above
  −0.2 "are nearly unrelated", else "mostly disagree".
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from gradkit.analysis import conflicts
from gradkit.core.params import param_slices
from gradkit.grads import Gram, batch_means, gradient_gram, tsne
from gradkit.grads import similarity as sim
from gradkit.stats import plateau_test
from gradkit.training import epoch_order, sample_loss

__all__ = ["agreement", "block_word", "checkpoint_similarity", "model_logits", "part_masks",
           "part_names",
           "phase_table",
           "phases", "sketch_agrees", "structure", "trend_word", "window_batches"]

PHASE_NAMES = ("early", "middle", "late")


def phases(epochs) -> dict[str, tuple[int, int]]:
    """Up to three phases of consecutive checkpoints, as equal in size as possible:
    ``{name: (first epoch, last epoch)}`` (one phase per checkpoint when there are fewer)."""
    e = sorted(int(v) for v in epochs)
    if not e:
        raise ValueError("phases needs at least one checkpoint epoch")
    parts = [p for p in np.array_split(np.array(e), min(3, len(e))) if len(p)]
    names = PHASE_NAMES if len(parts) == 3 else PHASE_NAMES[::2][:len(parts)]
    return {name: (int(p[0]), int(p[-1])) for name, p in zip(names, parts, strict=True)}


def trend_word(values, alpha: float = 0.05) -> str:
    """The direction of a series over checkpoints by the OLS slope test (module docstring)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size < 3:
        return "cannot be tested"
    verdict = plateau_test(v, last=v.size, higher_is_better=True, alpha=alpha).verdict
    return {"still improving": "rose", "getting worse": "fell"}.get(verdict,
                                                                     "shows no detectable trend")


def structure(s: float) -> str:
    """The silhouette's usual reading (module docstring)."""
    if math.isnan(s):
        return "undefined"
    return ("strong" if s > 0.70 else "reasonable" if s > 0.50 else "weak" if s > 0.25
            else "no substantial")


def agreement(c: float) -> str:
    """A mean cosine in words (module docstring)."""
    return ("mostly agree" if c > 0.5 else "partly agree" if c > 0.2 else
            "are nearly unrelated" if c > -0.2 else "mostly disagree")


def phase_table(stats: pd.DataFrame, phases: dict[str, tuple[int, int]],
                epoch_col: str = "epoch") -> pd.DataFrame:
    """Per phase (name -> inclusive epoch range): the mean of every numeric column over the
    phase's epochs, and how many epochs it holds. Raises if a phase holds no epoch."""
    rows = {}
    for name, (lo, hi) in phases.items():
        part = stats[(stats[epoch_col] >= lo) & (stats[epoch_col] <= hi)]
        if part.empty:
            raise ValueError(f"phase {name!r} ({lo}-{hi}) holds none of the epochs "
                             f"{sorted(stats[epoch_col].tolist())}")
        means = part.drop(columns=[epoch_col]).mean(numeric_only=True)
        rows[name] = {"epochs": f"{lo}-{hi}", "n_epochs": len(part), **means.to_dict()}
    return pd.DataFrame.from_dict(rows, orient="index")


def block_word(gap: float) -> str:
    """Within-minus-between mean cosine in words: above 0.5 "clear class blocks", above 0.15
    "faint class blocks", else "no class blocks"."""
    return ("clear class blocks" if gap > 0.5 else "faint class blocks" if gap > 0.15
            else "no class blocks")


def sketch_agrees(deviation: float, tol: float = 0.05) -> bool:
    """A sketch reproduces the statistics when its largest deviation is below ``tol``."""
    return bool(deviation < tol)


_PARTS = {"classifier": lambda name: name.startswith("classifier."),
          "trunk": lambda name: not name.startswith(("classifier.", "score_head."))}


def part_masks(model) -> dict[str, torch.Tensor]:
    """Boolean masks over a gradient row: ``"classifier"`` (the class head) and ``"trunk"``
    (everything but the two heads)."""
    slices = param_slices(model)
    n = max(s.stop for s in slices.values())
    masks = {part: torch.zeros(n, dtype=torch.bool) for part in _PARTS}
    for name, sl in slices.items():
        for part, member in _PARTS.items():
            masks[part][sl] = member(name)
    return masks


def part_names(model) -> dict[str, list[str]]:
    """The trainable parameters' names in each part of :func:`part_masks` (for the per-parameter
    blocks of ``gradient_gram(..., by_layer=True)``)."""
    names = list(param_slices(model))
    return {part: [k for k in names if member(k)] for part, member in _PARTS.items()}


def window_batches(run, epoch: int, n_train: int) -> tuple[list, torch.Tensor]:
    """The batches of the ``save_every`` epochs up to ``epoch``, in training order, and the
    epoch of each (``epoch_order``)."""
    cfg = run.config
    window = range(max(1, epoch - cfg.save_every + 1), epoch + 1)
    batches = [(e, idx) for e in window
               for idx in epoch_order(n_train, cfg.seed, e).split(cfg.batch_size)]
    return [idx for _, idx in batches], torch.tensor([e for e, _ in batches])


def model_logits(outputs) -> torch.Tensor:
    """The class logits of a model's output: the first element of a ``(logits, ...)`` tuple or
    list (the workbook's ``(logits, score)``), else the output itself (a plain classifier)."""
    logits = outputs[0] if isinstance(outputs, tuple | list) else outputs
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise ValueError(f"expected [N, classes] logits from the model (or a (logits, ...) "
                         f"tuple), got {getattr(logits, 'shape', type(logits).__name__)}; pass "
                         f"logits=<function of the model's output> to name them")
    return logits


def checkpoint_similarity(run, epoch: int, x, y, n_train: int, init=None, logits=None,
                          loss_fn=None) -> dict:
    """Everything notebook 03 measures at one checkpoint (per-sample CE gradients of all clips,
    batch gradients of the window's batches, matrices, statistics, maps, conflicts), from the
    per-sample gradients' Gram matrix (``"gram"``, :func:`gradkit.grads.gradient_gram`; its
    per-parameter blocks give the parts' silhouettes): no ``[N, P]``.

    Any classifier: ``logits(model(x))`` gives the class logits (default :func:`model_logits`:
    a ``(logits, ...)`` tuple's first element or plain logits); ``loss_fn(outputs, y)`` the
    per-sample loss (default :func:`gradkit.training.sample_loss`, the cross-entropy of those
    logits). A part of :func:`part_masks` with no parameter in the model (a plain model has no
    ``classifier.``) has a NaN silhouette."""
    model = run.load_model(epoch)
    logits = logits or model_logits
    with torch.no_grad():
        predicted = logits(model(x)).argmax(dim=1).numpy()
    if loss_fn is None:
        loss_fn = sample_loss if logits is model_logits else (
            lambda outputs, target: torch.nn.functional.cross_entropy(logits(outputs), target))
    blocks = gradient_gram(model, loss_fn, x, y, by_layer=True)
    G = Gram.of_blocks(blocks)
    batches, batch_epoch = window_batches(run, epoch, n_train)
    G_batch = batch_means(G[:n_train], batches)
    return {
        "gram": G, "predicted": predicted, "batch_epoch": batch_epoch.numpy(),
        "sample_matrix": sim.similarity_matrix(G, y, level="sample"),
        "batch_matrix": sim.similarity_matrix(G_batch, batch_epoch, level="batch"),
        "sample_stats": sim.similarity_stats(G, y, top_k=10),
        "batch_stats": sim.similarity_stats(G_batch, top_k=3),
        "sample_map": tsne.tsne_directions(G, init=init, seed=0),
        "batch_map": tsne.tsne_directions(G_batch, seed=0),
        "conflict": conflicts.conflict_cosines(G, y, np.arange(len(y)) < n_train),
        "baseline": conflicts.class_mean_baseline(G, y),
        **{f"silhouette_{k}": sim.class_silhouette(Gram.of_blocks(blocks, names), y)
           if names else math.nan for k, names in part_names(model).items()},
    }
