"""Smoke tests of notebook 05's figures (gradkit.viz.lectures, gradkit.viz.optim)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from gradkit.lectures import optimizers as opt  # noqa: E402
from gradkit.viz import lectures as vlec  # noqa: E402
from gradkit.viz import optim as vopt  # noqa: E402


def hist(n=5):
    return pd.DataFrame({"epoch": range(1, n + 1), "train_loss": np.linspace(2, 1, n),
                         "val_loss": np.linspace(2.1, 1.2, n)})


def test_decision_diagram_names_every_outcome():
    fig = vlec.plot_decision_diagram({"under-trained": "ResNet, 3 blocks"})
    texts = " ".join(t.get_text() for t in fig.axes[0].texts)
    for word in ("under-trained", "model bias", "optimisation", "overfitting", "fine",
                 "ResNet, 3 blocks"):
        assert word in texts
    plt.close(fig)


def test_hessian_spectrum_has_one_curve_per_probe_and_no_floor():
    grid = np.linspace(-1, 5, 50)
    values = np.vstack([np.exp(-((grid - k) ** 2)) for k in range(3)])
    fig = vlec.plot_hessian_spectrum(
        {"a": np.array([-1.0, 0.0, 2.0])}, {"a": "saddle point"},
        {"s": np.linspace(-1, 1, 5), "along_min": -np.ones(5), "along_max": np.ones(5),
         "lam_min": -1.0, "lam_max": 2.0, "title": "t"},
        {"grid": grid, "values": values, "lam_min": -1.0, "lam_max": 4.0, "sigma": 0.1,
         "title": "d"})
    lines = fig.axes[2].get_lines()
    assert len(lines) >= 4  # three probes and their mean (plus the two eigenvalue lines)
    floor = min(np.nanmin(line.get_ydata()) for line in lines[:4])
    assert floor > 1e-6 * values.max()  # nothing drawn at an artificial floor
    plt.close(fig)


def test_rmsprop_figure_keeps_exact_zeros_out_and_has_legends_everywhere():
    path = torch.tensor([[0.01, 1.0], [1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    sq = torch.ones(2, 2, dtype=torch.float64)
    fig = vopt.plot_rmsprop({"RMSProp": path}, "t", 0.04, sq)
    assert all(ax.get_legend() is not None for ax in fig.axes)
    labels = fig.axes[1].get_legend_handles_labels()[1]
    assert any("L = 0 not drawn" in label for label in labels)
    assert float(opt.saddle_valley(path)[-1]) == 0.0
    plt.close(fig)


def test_other_lecture_figures_draw():
    surface = (np.arange(3.0), np.arange(3.0), np.arange(9.0).reshape(3, 3) + 1, 10.0)
    figs = [vlec.plot_training_losses({"a": hist()}, 1.8, 6),
            vlec.plot_batch_sizes({4: hist(), 12: hist()}, 12),
            vlec.plot_classification(np.eye(3), np.full((3, 3), 1 / 3), ["a", "b", "c"],
                                     ["x", "y", "z"]),
            vlec.plot_feature_norm(np.random.default_rng(0).normal(size=(10, 2)),
                                   np.zeros((10, 2)), {k: surface for k in ("raw", "std")},
                                   ("f1", "f2")),
            vopt.plot_schedule_runs({(1e-3, "constant"): hist(),
                                     (1e-3, "warm-up + cosine"): hist()}, (1e-3,))]
    for fig in figs:
        assert all(ax.get_xlabel() for ax in fig.axes if ax.get_label() != "<colorbar>")
        plt.close(fig)
