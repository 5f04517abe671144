"""Smoke tests: every figure of notebooks 01 (verdicts) and 04 draws with labelled axes."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from gradkit.data.events import CLASSES, make_event_data  # noqa: E402
from gradkit.stats import compare_paired  # noqa: E402
from gradkit.viz import multitask as mv  # noqa: E402
from gradkit.viz.verdicts import plot_paired_differences, stamp_unit  # noqa: E402

METHODS = ["equal", "gradnorm", "two_backbones"]
LABELS = {m: m.upper() for m in METHODS}
COLORS = dict(zip(METHODS, plt.get_cmap("tab10").colors, strict=False))


def _labelled(fig):
    axes = [ax for ax in fig.axes if ax.has_data()]
    assert axes, "nothing drawn"
    for ax in axes:
        assert ax.get_ylabel(), f"unlabelled y axis in {ax.get_title()!r}"
    plt.close(fig)


def _steps():
    rows = []
    gen = np.random.default_rng(0)
    for m in METHODS:
        for seed in (0, 1):
            for step in range(12):
                rows.append({"method": m, "seed": seed, "step": step, "epoch": step // 4,
                             "w_det": 1.0 + 0.01 * step, "w_cls": 1.0 - 0.01 * step,
                             "loss_det": 2 - 0.1 * step, "loss_cls": 1.5 - 0.05 * step,
                             "cosine": gen.uniform(-1, 1), "magsim": gen.uniform(0, 1)})
    return pd.DataFrame(rows)


def test_paired_differences_figure():
    a, b = np.array([0.5, 0.6, 0.55, 0.7]), np.array([0.6, 0.65, 0.6, 0.72])
    result = compare_paired(a, b, label_a="GHM", label_b="raw", unit="pp", what="pairs")
    fig = plt.figure()
    plot_paired_differences(fig, [{"diffs": (a - b) * 100, "groups": ["s0", "s0", "s1", "s1"],
                                   "result": result, "scale": 100, "ylabel": "diff [pp]"}])
    assert "GHM" in fig.axes[0].get_title() and fig.axes[0].get_xlabel()
    _labelled(fig)
    with pytest.raises(ValueError, match="at least one panel"):
        plot_paired_differences(plt.figure(), [])


def test_multitask_figures_draw_with_labels():
    steps = _steps()
    for draw in (lambda f: mv.plot_task_weights(f, steps, METHODS, LABELS, COLORS,
                                                study=steps[steps.method == "gradnorm"]
                                                .query("seed == 0"), study_seed=0),
                 lambda f: mv.plot_task_losses(f, steps, METHODS, LABELS, COLORS, smooth=2),
                 lambda f: mv.plot_task_gradient_cosine(f, steps, METHODS[:2], LABELS, COLORS),
                 lambda f: mv.plot_event_examples(f, make_event_data(8, seed=0), CLASSES)):
        fig = plt.figure(figsize=(10, 4))
        draw(fig)
        _labelled(fig)


def test_heldout_comparison_has_a_chance_line():
    per_run = pd.DataFrame([{"method": m, "seed": s, "accuracy": 0.5 + 0.1 * s, "mean_iou": 0.4}
                            for m in METHODS for s in (0, 1)])
    fig = plt.figure()
    mv.plot_heldout_comparison(fig, per_run, [("mean_iou", "IoU"), ("accuracy", "acc")],
                               METHODS, LABELS, COLORS, chance=0.25)
    acc_ax = fig.axes[1]
    assert any(np.allclose(line.get_ydata(), 0.25) for line in acc_ax.get_lines())
    _labelled(fig)


def test_gradient_step_picture():
    n = 3
    history = pd.DataFrame({"step": range(n), "w_det": [1.0] * n, "w_cls": [1.0] * n,
                            "cosine": [0.1, -0.2, 0.3], "magsim": [0.5] * n,
                            **{k: [1.0, 0.5, 0.2] for k in ("g1_x", "g1_y", "g2_x", "g2_y",
                                                            "u_x", "u_y")}})
    layers = pd.DataFrame([{"step": s, "tensor": t, "det": 1.0, "cls": 0.5}
                           for s in range(n) for t in ("backbone.0.weight", "backbone.3.weight")])
    fig = plt.figure(figsize=(12, 4))
    mv.plot_gradient_step(fig, history, layers, step=1, smooth=2)
    assert "step 1" in fig.axes[0].get_title()
    _labelled(fig)


def test_stamp_unit_writes_the_unit_on_the_figure():
    fig = plt.figure()
    fig.subplots().plot([0, 1], [0, 1])
    stamp_unit(fig, "seed 42, fold 0")
    assert [t.get_text() for t in fig.texts] == ["seed 42, fold 0"]
    with pytest.raises(ValueError):
        stamp_unit(fig, "")
    plt.close(fig)
