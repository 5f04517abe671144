"""Notebook 03's checkable definitions: which clips conflict, which classes fail, and what share of
opposed pairs the class structure alone gives.

**Conflict.** At a checkpoint, clip ``i`` of class ``c`` *conflicts* when its gradient opposes

- the rest of its class: ``cos(G_i, m_{c,-i}) < 0`` with ``m_{c,-i}`` the mean gradient of the
  other clips of class ``c`` (leave-one-out), or
- the full-data gradient: ``cos(G_i, g_{D,-i}) < 0`` with ``g_{D,-i}`` the mean gradient of the
  training clips other than ``i``.

A clip is ranked by the share of checkpoints it conflicts at (:func:`conflict_table`).

**Class-structure baseline.** Replacing every clip's gradient by its class's mean gradient keeps
only the class structure; the share of opposed pairs (``cos < 0``) among those rows is what the
class structure alone gives (:func:`class_mean_baseline`).

Every function takes the gradients ``G`` as rows or as their Gram matrix
(:class:`~gradkit.grads.gram_matrix.Gram`): a conflict is a cosine, and the leave-one-out means'
inner products are row sums of ``K``.

**Failing class.** A class is flagged when most of its clips are predicted wrong (class accuracy
below 1/2) at more than half of the checkpoints (:func:`class_table`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from gradkit.grads.gram_matrix import as_rows
from gradkit.grads.similarity import cosine_matrix, unit_directions

__all__ = ["class_mean_baseline", "class_table", "conflict_cosines", "conflict_table",
           "share_opposed", "within_class_cosines"]


def _cos_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (unit_directions(a) * unit_directions(b)).sum(1)


def conflict_cosines(G, labels, train_mask) -> tuple[np.ndarray, np.ndarray]:
    """``(cos to the leave-one-out class mean, cos to the leave-one-out training mean)`` per row.

    ``train_mask[i]`` says whether row ``i`` is a training clip (only those enter ``g_D``).
    A class of one clip has no rest: its first cosine is NaN.
    """
    G = as_rows(G).to(torch.float64)
    y = torch.as_tensor(labels)
    t = torch.as_tensor(np.asarray(train_mask, bool))
    sums = torch.zeros(int(y.max()) + 1, G.shape[1], dtype=G.dtype).index_add_(0, y, G)
    counts = torch.bincount(y).to(G.dtype)
    rest = counts[y] - 1
    loo_class = (sums[y] - G) / rest.clamp_min(1)[:, None]
    cos_class = torch.where(rest > 0, _cos_rows(G, loo_class), torch.nan)
    total, n_t = G[t].sum(0), int(t.sum())
    loo_full = (total - G * t[:, None].to(G.dtype)) / (n_t - t.to(G.dtype))[:, None]
    return cos_class.numpy(), _cos_rows(G, loo_full).numpy()


def conflict_table(per_epoch: dict, names, classes) -> pd.DataFrame:
    """One row per clip, most conflicting first. ``per_epoch``: ``{epoch: (cos_class,
    cos_full)}`` of :func:`conflict_cosines`; ``names``/``classes`` label the rows."""
    cc = np.stack([v[0] for v in per_epoch.values()], 1)
    cf = np.stack([v[1] for v in per_epoch.values()], 1)
    conflict = (cc < 0) | (cf < 0)
    table = pd.DataFrame({
        "path": list(names), "class": list(classes), "conflict share": conflict.mean(axis=1),
        "opposes its class": (cc < 0).mean(axis=1), "opposes g_D": (cf < 0).mean(axis=1),
        "mean cos to class (LOO)": np.nanmean(cc, 1), "mean cos to g_D (LOO)": cf.mean(axis=1)})
    return table.sort_values(["conflict share", "mean cos to class (LOO)"],
                             ascending=[False, True], kind="stable").reset_index(drop=True)


def share_opposed(G) -> float:
    """Share of distinct pairs ``i < j`` with ``cos(G_i, G_j) < 0``."""
    c = cosine_matrix(as_rows(G).to(torch.float64))
    iu = torch.triu_indices(len(c), len(c), 1)
    return float((c[iu[0], iu[1]] < 0).double().mean())


def class_mean_baseline(G, labels) -> float:
    """:func:`share_opposed` of the rows replaced by their class's mean gradient."""
    G = as_rows(G).to(torch.float64)
    y = torch.as_tensor(labels)
    sums = torch.zeros(int(y.max()) + 1, G.shape[1], dtype=G.dtype).index_add_(0, y, G)
    means = sums / torch.bincount(y).to(G.dtype).clamp_min(1)[:, None]
    return share_opposed(means[y])


def class_table(correct: dict, within: dict, conflict: dict, class_names) -> pd.DataFrame:
    """Per class: accuracy at every checkpoint, mean within-class cosine, conflict share,
    and the *failing* flag (module docstring). Each argument is ``{epoch: per-class array}``."""
    acc = pd.DataFrame({f"acc @{e}": v for e, v in correct.items()}, index=list(class_names))
    wrong_at = (acc < 0.5).mean(axis=1)
    return acc.assign(**{
        "mean within-class cos": pd.DataFrame(within, index=acc.index).mean(axis=1),
        "conflict share": pd.DataFrame(conflict, index=acc.index).mean(axis=1),
        "share of checkpoints mostly wrong": wrong_at, "failing": wrong_at > 0.5})


def within_class_cosines(G, labels, n_classes: int | None = None) -> np.ndarray:
    """Per class ``c``: the mean cosine of its distinct same-class pairs (NaN for one clip)."""
    c = cosine_matrix(as_rows(G).to(torch.float64)).numpy()
    y = np.asarray(labels)
    out = np.full(int(n_classes if n_classes is not None else y.max() + 1), np.nan)
    for k in np.unique(y):
        idx = np.flatnonzero(y == k)
        if len(idx) > 1:
            block = c[np.ix_(idx, idx)]
            out[k] = (block.sum() - np.trace(block)) / (len(idx) * (len(idx) - 1))
    return out
