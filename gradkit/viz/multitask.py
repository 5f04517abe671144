"""Figures of notebook 04: task weights, losses, gradient interference, held-out results, and the
per-step picture of the task gradients.

Every function draws onto a given (empty) matplotlib figure. ``steps`` is the long per-step table
of :func:`gradkit.training.multitask.step_table` (columns ``method``, ``seed``, ``step``,
``epoch`` and the recorded quantities); ``labels`` and ``colors`` map a method to its legend
label and colour.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

__all__ = ["mean_over_seeds", "plot_event_examples", "plot_gradient_step",
           "plot_heldout_comparison", "plot_task_gradient_cosine", "plot_task_losses",
           "plot_task_weights"]

TASKS = ("detection", "classification")


def mean_over_seeds(steps: pd.DataFrame, column: str, method: str, smooth: int = 1):
    """``(step, mean, min, max)`` over seeds of one column of one method, ``smooth``-step
    running means (per seed) first."""
    table = steps[steps.method == method].pivot(index="step", columns="seed", values=column)
    table = table.rolling(smooth, min_periods=1).mean()
    return (table.index.values, table.mean(axis=1).values, table.min(axis=1).values,
            table.max(axis=1).values)


def plot_event_examples(fig: plt.Figure, data, classes: Sequence[str], n: int = 8,
                        n_test: int | None = None) -> None:
    """The first ``n`` clips of ``data`` (:class:`gradkit.data.EventData`) with their boxes."""
    axes = fig.subplots(2, -(-n // 2))
    for ax, i in zip(axes.flat, range(n), strict=False):
        t0, f0, t1, f1 = data.boxes[i].tolist()
        size = data.x.shape[-1]
        ax.imshow(np.asarray(data.x[i, 0]), origin="lower", cmap="magma", extent=(0, size, 0, size))
        ax.add_patch(plt.Rectangle((t0, f0), t1 - t0, f1 - f0, fill=False, ec="cyan", lw=1.5))
        ax.set_title(f"{classes[int(data.labels[i])]}: box t {t0:.0f}-{t1:.0f}, "
                     f"f {f0:.0f}-{f1:.0f}", fontsize=9)
        ax.set_xlabel("time frame")
        ax.set_ylabel("frequency bin")
    held = f", {n_test} held-out" if n_test is not None else ""
    fig.suptitle(f"{n} training clips and their boxes ({len(data)} train{held} clips, "
                 f"{len(classes)} balanced classes)")
    fig.tight_layout()


def plot_task_weights(fig: plt.Figure, steps: pd.DataFrame, methods: Sequence[str],
                      labels: Mapping[str, str], colors: Mapping[str, tuple],
                      study: pd.DataFrame | None = None, study_seed: int | None = None) -> None:
    """Per task, the weight per step (mean over seeds, band min..max); a third panel with
    GradNorm from the study's start ``study`` (one run's history) if given."""
    axes = fig.subplots(1, 3 if study is not None else 2)
    n_seeds = steps.seed.nunique()
    for ax, column, task in zip(axes[:2], ("w_det", "w_cls"), TASKS, strict=True):
        for m in methods:
            x, mean, low, high = mean_over_seeds(steps, column, m)
            ax.plot(x, mean, color=colors[m], label=labels[m])
            ax.fill_between(x, low, high, color=colors[m], alpha=0.15)
        ax.set(yscale="log", xlabel="training step", ylabel=f"{task} weight (log scale)",
               title=f"{task} weight: mean over {n_seeds} seeds, band = min..max")
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    if study is not None:
        for column, task, style in (("w_det", "detection", "-"), ("w_cls", "classification",
                                                                   "--")):
            axes[2].plot(study.step, study[column], style, color=colors.get("gradnorm", "C2"),
                         label=f"{task} weight")
        axes[2].set(yscale="log", xlabel="training step", ylabel="weight (log scale)",
                    title=f"GradNorm from the study's start 1.0 / 0.01 (seed {study_seed})")
        axes[2].legend(fontsize=8)
    fig.tight_layout()


def plot_task_losses(fig: plt.Figure, steps: pd.DataFrame, methods: Sequence[str],
                     labels: Mapping[str, str], colors: Mapping[str, tuple], smooth: int = 8
                     ) -> None:
    """Per task, the unweighted training-batch loss per step (running mean, band min..max)."""
    axes = fig.subplots(1, 2)
    for ax, column, task in zip(axes, ("loss_det", "loss_cls"), TASKS, strict=True):
        for m in methods:
            x, mean, low, high = mean_over_seeds(steps, column, m, smooth)
            ax.plot(x, mean, color=colors[m], label=labels[m])
            ax.fill_between(x, low, high, color=colors[m], alpha=0.12)
        ax.set(xlabel="training step", ylabel=f"{task} loss (unweighted, training batch)",
               title=f"{task} loss ({smooth}-step running mean; band: seed min..max)")
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()


def plot_task_gradient_cosine(fig: plt.Figure, steps: pd.DataFrame, methods: Sequence[str],
                              labels: Mapping[str, str], colors: Mapping[str, tuple],
                              smooth: int = 8) -> None:
    """Cosine of the task gradients, share of conflicting steps per epoch, magnitude similarity
    (methods with a shared backbone only)."""
    axes = fig.subplots(1, 3)
    for k, m in enumerate(methods):
        x, mean, _, _ = mean_over_seeds(steps, "cosine", m, smooth)
        axes[0].plot(x, mean, color=colors[m], label=labels[m])
        conflict = (steps[steps.method == m].assign(conflict=lambda d: d.cosine < 0)
                    .groupby(["epoch", "seed"]).conflict.mean().groupby("epoch")
                    .agg(["mean", "std"]))
        axes[1].errorbar(conflict.index + 0.05 * k, conflict["mean"], yerr=conflict["std"],
                         color=colors[m], marker="o", ms=3, capsize=2, label=labels[m])
        x, mean, _, _ = mean_over_seeds(steps, "magsim", m, smooth)
        axes[2].plot(x, mean, color=colors[m], label=labels[m])
    axes[0].axhline(0, color="k", lw=0.8)
    axes[0].set(xlabel="training step", ylabel="cos(g_det, g_cls)",
                title=f"cosine of the task gradients ({smooth}-step running mean)")
    axes[1].set(xlabel="epoch", ylabel="share of steps with cosine < 0",
                title="conflict share per epoch (mean ± std over seeds)", ylim=(-0.02, 1.02))
    axes[2].set(xlabel="training step", ylabel="2|g1||g2| / (|g1|² + |g2|²)",
                title=f"magnitude similarity ({smooth}-step running mean)", ylim=(0, 1.02))
    axes[2].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()


def plot_heldout_comparison(fig: plt.Figure, per_run: pd.DataFrame,
                            metrics: Sequence[tuple[str, str]], methods: Sequence[str],
                            labels: Mapping[str, str], colors: Mapping[str, tuple],
                            chance: float | None = None) -> None:
    """Per metric ``(column, title)``: mean ± std over seeds per method, the seeds as dots; a
    chance line on the accuracy panel (``column == "accuracy"``)."""
    axes = fig.subplots(1, len(metrics))
    for ax, (column, title) in zip(np.atleast_1d(axes), metrics, strict=True):
        for k, m in enumerate(methods):
            values = per_run[per_run.method == m][column]
            ax.bar(k, values.mean(), yerr=values.std(), color=colors[m], capsize=4, alpha=0.8)
            ax.scatter(np.full(len(values), k), values, color="k", s=10, zorder=3)
        ax.set_xticks(range(len(methods)), [labels[m] for m in methods], rotation=30,
                      ha="right")
        ax.set(ylabel=f"{title} (held-out, fraction)", ylim=(0, 1),
               title=f"{title}: mean ± std, dots = {per_run.seed.nunique()} seeds")
        if column == "accuracy" and chance is not None:
            ax.axhline(chance, color="k", ls=":", lw=1, label="chance")
            ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()


def plot_gradient_step(fig: plt.Figure, history: pd.DataFrame, layer_norms: pd.DataFrame,
                       step: int, smooth: int = 8) -> None:
    """One step of one run: the task gradients in their plane (raw, weighted) and the update;
    each task's gradient norm per shared tensor; weights and cosine over training."""
    h = history.set_index("step")
    row = h.loc[step]
    ax1, ax2, ax3 = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1.2, 1.2]})
    arrows = [((row.g1_x, row.g1_y), "C0", 0.8, "g_det"),
              ((row.g2_x, row.g2_y), "C1", 0.8, "g_cls"),
              ((row.w_det * row.g1_x, row.w_det * row.g1_y), "C0", 2.5, f"{row.w_det:.2f} g_det"),
              ((row.w_cls * row.g2_x, row.w_cls * row.g2_y), "C1", 2.5, f"{row.w_cls:.2f} g_cls"),
              ((row.u_x, row.u_y), "k", 2.0, "applied update")]
    for (x, y), color, lw, label in arrows:
        ax1.annotate("", xy=(x, y), xytext=(0, 0),
                     arrowprops={"arrowstyle": "->", "color": color, "lw": lw})
        ax1.plot([], [], color=color, lw=lw, label=label)
    reach = max(np.hypot(*a[0]) for a in arrows) * 1.15
    ax1.set(xlim=(-reach, reach), ylim=(-reach, reach), aspect="equal",
            xlabel="along g_det (gradient units)", ylabel="orthogonal, towards g_cls",
            title=f"step {step}: cos {row.cosine:+.2f}, mag. sim. {row.magsim:.2f}")
    ax1.legend(fontsize=7, loc="lower left")
    layers = layer_norms[layer_norms.step == step]
    k = np.arange(len(layers))
    ax2.bar(k - 0.2, layers.det, 0.4, color="C0", label="detection")
    ax2.bar(k + 0.2, layers.cls, 0.4, color="C1", label="classification")
    names = layers.tensor.str.replace("backbone.0", "conv1").str.replace("backbone.3",
                                                                         "conv2 (W)")
    ax2.set_xticks(k, names.str.replace(".", " "), rotation=20, fontsize=7)
    ax2.set(yscale="log", xlabel="shared tensor", ylabel="raw gradient norm (log)",
            title="per shared tensor")
    ax2.legend(fontsize=7)
    ax3.plot(h.index, h.w_det, color="C0", label="detection weight")
    ax3.plot(h.index, h.w_cls, color="C1", label="classification weight")
    ax3.set(xlabel="training step", ylabel="weight", title="weights and cosine over training")
    ax3b = ax3.twinx()
    ax3b.plot(h.index, h.cosine.rolling(smooth, min_periods=1).mean(), color="0.5", lw=1,
              label=f"cosine ({smooth}-step mean)")
    ax3b.axhline(0, color="0.5", lw=0.5)
    ax3b.set_ylabel("cosine of the task gradients")
    ax3b.legend(fontsize=7, loc="upper right")
    ax3.axvline(step, color="k", ls=":")
    ax3.legend(fontsize=7, loc="upper left")
