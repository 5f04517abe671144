"""Figures of notebook 03: ordered cosine matrices and t-SNE maps of gradient directions."""

from __future__ import annotations

import numpy as np

from gradkit.grads.similarity import SimilarityMatrix

__all__ = ["plot_similarity_matrix", "plot_tsne"]


def plot_similarity_matrix(ax, sim: SimilarityMatrix, class_names=None, title: str = "",
                           group: str = "class"):
    """Draw the ordered cosine matrix (blue -1 .. red +1) with lines between the groups
    (``group`` names what the labels are: ``"class"``, or ``"epoch"`` for batches)."""
    img = ax.imshow(sim.matrix.numpy(), cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    what = "sample" if sim.level == "sample" else "batch"
    if sim.labels is not None:
        y = sim.labels.numpy()
        edges = np.flatnonzero(np.diff(y)) + 0.5
        for e in edges:
            ax.axhline(e, color="k", lw=0.6)
            ax.axvline(e, color="k", lw=0.6)
        starts = np.concatenate([[0], np.flatnonzero(np.diff(y)) + 1])
        ends = np.concatenate([starts[1:], [len(y)]])
        centres = (starts + ends - 1) / 2
        names = [class_names[c] if class_names is not None else str(c) for c in y[starts]]
        ax.set_xticks(centres, names, rotation=90, fontsize=7)
        ax.set_yticks(centres, names, fontsize=7)
        ax.set_xlabel(f"{what} (grouped by {group})")
        ax.set_ylabel(f"{what} (grouped by {group})")
    else:
        ax.set_xlabel(f"{what} index (step order)")
        ax.set_ylabel(f"{what} index (step order)")
    ax.set_title(title or f"cosine similarity of {what} gradients")
    return img


def plot_tsne(ax, emb: np.ndarray, labels, correct=None, class_names=None, title: str = ""):
    """Scatter the embedding: colour = class, filled circle = predicted right, cross = wrong."""
    import matplotlib.pyplot as plt

    y = np.asarray(labels)
    ok = np.ones(len(y), bool) if correct is None else np.asarray(correct, bool)
    cmap = plt.get_cmap("tab10")
    for c in np.unique(y):
        name = class_names[c] if class_names is not None else str(c)
        sel = y == c
        ax.scatter(*emb[sel & ok].T, color=cmap(c % 10), marker="o", s=28, label=name)
        if (sel & ~ok).any():
            ax.scatter(*emb[sel & ~ok].T, color=cmap(c % 10), marker="x", s=40, linewidths=1.5)
    if correct is not None and (~ok).any():
        ax.scatter([], [], color="gray", marker="x", label="predicted wrong")
    ax.set_xlabel("t-SNE 1 (a.u.)")
    ax.set_ylabel("t-SNE 2 (a.u.)")
    ax.set_title(title or "t-SNE of gradient directions")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), markerscale=0.8)

