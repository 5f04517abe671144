"""Figures of notebook 03: ordered cosine matrices and t-SNE maps of gradient directions."""

from __future__ import annotations

import numpy as np

from gradkit.grads.similarity import SimilarityMatrix

__all__ = ["draw_both", "draw_maps", "draw_similarities", "plot_similarity_matrix",
           "plot_similarity_trend", "plot_tsne"]

#: batch maps are coloured by epoch from this sequential palette, never the class colours
BATCH_CMAP = "viridis"


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


def _colours(values, palette: str):
    import matplotlib.pyplot as plt

    if palette == "class":
        cmap = plt.get_cmap("tab10")
        return {v: cmap(int(v) % 10) for v in values}
    cmap = plt.get_cmap(BATCH_CMAP)
    span = max(len(values) - 1, 1)
    return {v: cmap(0.1 + 0.8 * k / span) for k, v in enumerate(values)}


def plot_tsne(ax, emb: np.ndarray, labels, correct=None, class_names=None, title: str = "",
              palette: str = "class"):
    """Scatter the embedding: colour = label (``palette="class"``: tab10; ``"batch"``: a
    sequential palette distinct from the class colours), circle = predicted right, cross =
    wrong. ``class_names`` is indexed by label value."""
    y = np.asarray(labels)
    ok = np.ones(len(y), bool) if correct is None else np.asarray(correct, bool)
    colours = _colours(list(np.unique(y)), palette)
    marker = "o" if palette == "class" else "s"
    for c in np.unique(y):
        name = class_names[c] if class_names is not None else str(c)
        sel = y == c
        ax.scatter(*emb[sel & ok].T, color=colours[c], marker=marker, s=28, label=name)
        if (sel & ~ok).any():
            ax.scatter(*emb[sel & ~ok].T, color=colours[c], marker="x", s=40, linewidths=1.5)
    if correct is not None and (~ok).any():
        ax.scatter([], [], color="gray", marker="x", label="predicted wrong")
    ax.set_xlabel("t-SNE 1 (a.u.)")
    ax.set_ylabel("t-SNE 2 (a.u.)")
    ax.set_title(title or "t-SNE of gradient directions")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), markerscale=0.8)



def _panel_matrices(ax_s, ax_b, r, classes, epoch):
    s, b = r["sample_stats"], r["batch_stats"]
    w = r["batch_epoch"]
    img = plot_similarity_matrix(
        ax_s, r["sample_matrix"], classes,
        title=f"samples, epoch {epoch}: within class {s.within_class:.2f}, between "
              f"{s.between_class:.2f}\n{s.share_negative:.0%} of pairs negative")
    plot_similarity_matrix(
        ax_b, r["batch_matrix"], [f"ep {e}" for e in range(w.max() + 1)], group="epoch",
        title=f"batches of epochs {w.min()}-{w.max()}: mean cosine {b.mean_cosine:.2f}\n"
              f"{b.share_negative:.0%} of pairs negative")
    return img


def _panel_maps(ax_s, ax_b, r, y, classes, epoch, stability: str = ""):
    w = r["batch_epoch"]
    plot_tsne(ax_s, r["sample_map"], y, r["predicted"] == np.asarray(y), classes,
              title=f"t-SNE of sample gradient directions, epoch {epoch}\n(aligned to the "
                    f"previous epoch{'; ' + stability if stability else ''})")
    plot_tsne(ax_b, r["batch_map"], w, None, [f"epoch {e}" for e in range(w.max() + 1)],
              palette="batch", title=f"t-SNE of the {len(w)} batch gradient directions, "
                                     f"epochs {w.min()}-{w.max()}\n(few points: read with care)")


def draw_similarities(fig, r, classes, epoch):
    """Sample and batch cosine matrices of one checkpoint, side by side."""
    ax_s, ax_b = fig.subplots(1, 2)
    img = _panel_matrices(ax_s, ax_b, r, classes, epoch)
    fig.colorbar(img, ax=[ax_s, ax_b], shrink=0.8, label="cosine similarity")


def draw_maps(fig, r, y, classes, epoch, stability: str = ""):
    """Sample and batch t-SNE maps of one checkpoint, side by side."""
    _panel_maps(*fig.subplots(1, 2), r, y, classes, epoch, stability)


def draw_both(fig, r, y, classes, epoch, stability: str = ""):
    """Matrices (left) and maps (right), samples on top, batches below."""
    (a, b), (c, d) = fig.subplots(2, 2)
    img = _panel_matrices(a, c, r, classes, epoch)
    _panel_maps(b, d, r, y, classes, epoch, stability)
    fig.colorbar(img, ax=[a, c], shrink=0.6, label="cosine similarity")


_TREND = [  # (panel title, y label, [(column, marker, label)])
    ("sample level: mean cosine of gradient directions", "mean cosine",
     [("within_class", "o-", "same-class pairs"), ("between_class", "s-", "different-class"),
      ("mean_cosine", "^-", "all pairs")]),
    ("batch level: cosine between mini-batch gradients", "cosine",
     [("batch_mean_cosine", "o-", "mean over batch pairs"),
      ("batch_min_cosine", "v--", "most opposed batch pair")]),
    ("pairs whose gradients point against each other", "share of pairs with cos < 0",
     [("share_negative", "o-", "sample pairs"), ("baseline", "k:", "class means only (baseline)"),
      ("share_negative_within", "d-", "same-class pairs"),
      ("batch_share_negative", "s-", "batch pairs")]),
    ("class silhouette (cosine distance)", "silhouette (1 = separate classes)",
     [("silhouette", "o-", "gradients"), ("silhouette_classifier", "<-", "classifier part"),
      ("silhouette_trunk", ">-", "trunk part"), ("tsne_silhouette", "s-", "t-SNE map")]),
    ("accuracy of the checkpoint", "accuracy", [("accuracy", "^-", "all clips"),
                                                ("train_accuracy", "o--", "training clips")]),
    ("t-SNE map stability", "share of 5 nearest neighbours kept",
     [("knn_overlap", "o-", "overlap with the previous checkpoint's map")]),
    ("sample cosines between checkpoints", "mean |Δ cosine| since previous",
     [("matrix_change", "x-", "mean |Δ cosine| of all pairs")]),
]


def plot_similarity_trend(stats, phases: dict, n_classes: int, title: str = ""):
    """The statistics over training, one quantity per axis, phases shaded; a chance line
    (1 / classes) on the accuracy panel."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(22, 8.5), sharex=True, layout="constrained")
    axes[1, 3].remove()
    for ax, (head, ylabel, series) in zip(axes.flat, _TREND, strict=False):
        for k, (name, (lo, hi)) in enumerate(phases.items()):
            ax.axvspan(lo - 0.5, hi + 0.5, color=f"C{k}", alpha=0.06, lw=0)
            ax.text((lo + hi) / 2, 0.98, name, transform=ax.get_xaxis_transform(),
                    ha="center", va="top", fontsize=8, color="dimgray")
        for col, style, label in series:
            ax.plot(stats.epoch, stats[col], style, label=label)
        ax.set(ylabel=ylabel, title=head)
        ax.grid(alpha=0.3)
    axes[1, 0].axhline(1 / n_classes, color="grey", ls="--", lw=1,
                       label=f"chance (1/{n_classes})")
    for ax in fig.axes:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        ax.set_xlabel("epoch")
    fig.suptitle(title)
    return fig
