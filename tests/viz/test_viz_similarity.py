"""Smoke tests of notebook 03's figures: per-epoch panels and the trend with a chance line."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from gradkit.grads import similarity as sim  # noqa: E402
from gradkit.viz import similarity as vsim  # noqa: E402


def fake_result(n=12, p=20):
    gen = torch.Generator().manual_seed(0)
    G, y = torch.randn(n, p, generator=gen), torch.arange(n) % 3
    Gb, be = torch.randn(6, p, generator=gen), torch.tensor([1, 1, 2, 2, 3, 3])
    rng = np.random.default_rng(0)
    return {"sample_matrix": sim.similarity_matrix(G, y), "batch_epoch": be.numpy(),
            "batch_matrix": sim.similarity_matrix(Gb, be, level="batch"),
            "sample_stats": sim.similarity_stats(G, y), "batch_stats": sim.similarity_stats(Gb),
            "sample_map": rng.normal(size=(n, 2)), "batch_map": rng.normal(size=(6, 2)),
            "predicted": y.numpy()[::-1].copy()}, y.numpy()


def test_epoch_figures_draw_and_batches_use_another_palette():
    r, y = fake_result()
    fig = plt.figure()
    vsim.draw_both(fig, r, y, ["a", "b", "c"], 5, "overlap 0.9")
    batch_ax = fig.axes[3]
    class_ax = fig.axes[1]
    class_colours, batch_colours = (
        {tuple(c.get_facecolor()[0]) for c in ax.collections if len(c.get_offsets())}
        for ax in (class_ax, batch_ax))
    assert class_colours and batch_colours and not class_colours & batch_colours
    plt.close(fig)


def test_trend_has_one_quantity_per_axis_and_a_chance_line():
    cols = ["within_class", "between_class", "mean_cosine", "batch_mean_cosine",
            "batch_min_cosine", "share_negative", "baseline", "share_negative_within",
            "batch_share_negative", "silhouette", "silhouette_classifier", "silhouette_trunk",
            "tsne_silhouette", "accuracy", "train_accuracy", "knn_overlap", "matrix_change"]
    stats = pd.DataFrame({"epoch": [5, 10, 15], **{c: [0.1, 0.2, 0.3] for c in cols}})
    fig = vsim.plot_similarity_trend(stats, {"early": (5, 5), "late": (10, 15)}, 6)
    assert len(fig.axes) == 7
    acc = next(ax for ax in fig.axes if ax.get_ylabel() == "accuracy")
    assert "chance (1/6)" in acc.get_legend_handles_labels()[1]
    assert all(ax.get_xlabel() == "epoch" for ax in fig.axes)
    plt.close(fig)
