"""Figures of notebook 01: training curves of raw vs GHM runs and GHM's gradient-norm statistics.

Every function draws onto a given (empty) matplotlib figure: the notebook publishes it with
:func:`gradkit.viz.figures.publish` and a :class:`gradkit.viz.scrubber.Scrubber` can redraw it.
Inputs are what :mod:`gradkit.training` records (see :mod:`gradkit.analysis.ghm`): metrics
DataFrames and :class:`~gradkit.training.records.GHMRecord` histories.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from gradkit.analysis.ghm import (
    HEADS,
    as_numpy,
    as_record,
    batch_values,
    best_epoch_summary,
    bin_shares,
    density_table,
    epoch_bin_weights,
    g_statistics,
    history_by_epoch,
    stage_epochs,
)

__all__ = [
    "RUN_COLORS",
    "plot_accuracy_trend",
    "plot_batch_distribution",
    "plot_density_epoch",
    "plot_ghm_stats",
    "plot_ghm_weights_comparison",
    "plot_gradient_density_evolution",
    "plot_loss_comparison_detailed",
    "plot_training_comparison",
]


RUN_COLORS = {"raw": "tab:blue", "ghm": "tab:orange"}


def _color(name: str) -> str:
    return RUN_COLORS.get(name, "tab:green")


def plot_training_comparison(fig: plt.Figure, runs: Mapping[str, pd.DataFrame],
                             title: str = "") -> None:
    """Three panels over epochs for every run: raw loss (CE + ranking), GHM loss (GHM-C + GHM
    ranking), accuracy; train solid, validation dashed."""
    axes = fig.subplots(1, 3)
    panels = [("raw_loss", "raw loss (CE + ranking)"), ("ghm_loss", "GHM loss (GHM-C + GHM rank)"),
              ("acc", "classification accuracy")]
    for ax, (key, label) in zip(axes, panels, strict=True):
        for name, m in runs.items():
            ax.plot(m["epoch"], m[f"train_{key}"], color=_color(name), label=f"{name} run, train")
            ax.plot(m["epoch"], m[f"val_{key}"], color=_color(name), ls="--",
                    label=f"{name} run, validation")
        ax.set(xlabel="epoch", ylabel=label + (" (fraction)" if key == "acc" else " (nats)"),
               title=label)
        ax.grid(alpha=0.3)
    axes[1].set_yscale("log")
    axes[0].set_yscale("log")
    axes[2].legend(fontsize=8)
    fig.suptitle(title or "Raw vs GHM objective: losses and accuracies")
    fig.tight_layout()


def plot_loss_comparison_detailed(fig: plt.Figure, metrics: pd.DataFrame, run_name: str = "ghm"
                                  ) -> None:
    """Top: train / validation raw loss and GHM loss of one run; bottom: the ratio GHM / raw."""
    top, bottom = fig.subplots(2, 1, sharex=True)
    e = metrics["epoch"]
    for split, ls in (("train", "-"), ("val", "--")):
        name = "train" if split == "train" else "validation"
        top.plot(e, metrics[f"{split}_raw_loss"], "tab:blue", ls=ls, label=f"{name} raw loss")
        top.plot(e, metrics[f"{split}_ghm_loss"], "tab:orange", ls=ls, label=f"{name} GHM loss")
        ratio = metrics[f"{split}_ghm_loss"] / metrics[f"{split}_raw_loss"]
        bottom.plot(e, ratio, "tab:purple", ls=ls, label=f"{name}: GHM / raw")
    top.set(ylabel="loss (nats)", title=f"{run_name} run: raw vs GHM loss", yscale="log")
    bottom.axhline(1.0, color="grey", lw=0.8)
    bottom.set(xlabel="epoch", ylabel="GHM loss / raw loss (ratio)",
               title="ratio of the GHM loss to the raw loss")
    for ax in (top, bottom):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()


def plot_accuracy_trend(fig: plt.Figure, runs: Mapping[str, pd.DataFrame]) -> None:
    """Train (solid) and validation (dashed) accuracy of every run, best validation epoch marked."""
    ax = fig.subplots()
    for name, m in runs.items():
        ax.plot(m["epoch"], m["train_acc"], color=_color(name), label=f"{name} run, train")
        ax.plot(m["epoch"], m["val_acc"], color=_color(name), ls="--",
                label=f"{name} run, validation")
        best = best_epoch_summary(m)
        ax.plot(best["epoch"], best["best_val_acc"], "o", color=_color(name),
                label=f"{name} best validation ({best['best_val_acc']:.1%}, epoch {best['epoch']})")
    ax.set(xlabel="epoch", ylabel="accuracy (fraction of clips)", ylim=(-0.02, 1.02),
           title="Accuracy trend")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()


def plot_gradient_density_evolution(fig: plt.Figure, history: Sequence[Mapping[str, Any]],
                                    bins: int = 10, run_name: str = "ghm") -> None:
    """Heat maps of the share of ``g`` in each GHM bin (rows) per epoch (columns), for the
    classification samples and for the ranking pairs."""
    axes = fig.subplots(1, 2)
    for ax, (head, label) in zip(axes, HEADS.items(), strict=True):
        table = density_table(history, bins, head)
        image = ax.imshow(table.to_numpy().T, origin="lower", aspect="auto", cmap="viridis",
                          vmin=0, vmax=1, interpolation="nearest",
                          extent=(table.index.min() - 0.5, table.index.max() + 0.5, 0, 1))
        ax.set(xlabel="epoch", ylabel="gradient norm g (bin edges)", title=label)
        ax.set_yticks(np.linspace(0, 1, bins + 1))
        fig.colorbar(image, ax=ax, label="share of the epoch's terms in the bin")
    fig.suptitle(f"{run_name} run: gradient-norm density across epochs")
    fig.tight_layout()


def plot_density_epoch(fig: plt.Figure, histories: Mapping[str, Sequence[Mapping[str, Any]]],
                       epoch: int, bins: int = 10) -> None:
    """Bin shares of ``g`` at one epoch for every run, classification and ranking side by side
    (fixed axes, so that frames of a scrubber compare)."""
    axes = fig.subplots(1, 2)
    width = 0.8 / max(len(histories), 1)
    centers = (np.arange(bins) + 0.5) / bins
    for ax, (head, label) in zip(axes, HEADS.items(), strict=True):
        for k, (name, history) in enumerate(histories.items()):
            record = history_by_epoch(history)[epoch]
            shares = bin_shares(record.head(head).g, bins)
            offset = (k - (len(histories) - 1) / 2) * width / bins
            ax.bar(centers + offset, shares, width=width / bins, color=_color(name),
                   label=f"{name} run")
        ax.set(xlabel="gradient norm g", ylabel="share of the epoch's terms", title=label,
               xlim=(0, 1), ylim=(0, 1))
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle(f"gradient-norm density, epoch {epoch}")
    # Fixed spacing instead of tight_layout (a scrubber draws this once per epoch), unless the
    # figure already has a layout engine (a Scrubber's constrained layout): matplotlib ignores
    # subplots_adjust there and warns.
    if fig.get_layout_engine() is None:
        fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.84, wspace=0.25)


def plot_ghm_weights_comparison(fig: plt.Figure, history: Sequence[Mapping[str, Any]],
                                bins: int = 10, run_name: str = "ghm") -> None:
    """GHM weight per bin (:func:`epoch_bin_weights`) at the early, middle and late epoch, for
    classification and ranking; a missing bar is a bin that was empty all epoch."""
    records = history_by_epoch(history)
    stages = stage_epochs(list(records))
    axes = fig.subplots(1, 2)
    centers = np.arange(bins)
    for ax, (head, label) in zip(axes, HEADS.items(), strict=True):
        for k, (stage, epoch) in enumerate(stages.items()):
            weights = epoch_bin_weights(records[epoch], head)
            ax.bar(centers + (k - 1) * 0.27, np.nan_to_num(weights), width=0.27,
                   label=f"{stage} (epoch {epoch})")
        ax.axhline(1.0, color="grey", lw=0.8, ls=":")
        ax.set_xticks(centers, [f"{i / bins:.1f}" for i in range(bins)])
        ax.set(xlabel="GHM bin (lower edge of g)", ylabel="GHM weight per term (mean over batches)",
               title=label, yscale="log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{run_name} run: GHM weights per bin, early / middle / late")
    fig.tight_layout()


def plot_batch_distribution(fig: plt.Figure, record: Mapping[str, Any], bins: int = 10,
                            batch: int = 0, title: str = "") -> None:
    """One batch: histogram of ``g`` over GHM's bins (bars) and the GHM weight each bin got
    (points, right axis), classification and ranking side by side."""
    record = as_record(record)
    axes = fig.subplots(1, 2)
    centers = (np.arange(bins) + 0.5) / bins
    for ax, (head, label) in zip(axes, HEADS.items(), strict=True):
        b = batch_values(record, batch, head)
        ax.bar(centers, b["counts"], width=0.9 / bins, color="tab:blue", alpha=0.7,
               label="terms per bin")
        ax.set(xlabel="gradient norm g", ylabel="terms in the bin (count)", xlim=(0, 1),
               title=f"{label}\n{len(b['g'])} terms")
        twin = ax.twinx()
        used = b["counts"] > 0
        twin.plot(centers[used], b["bin_weights"][used], "o", color="tab:red",
                  label="GHM weight of the bin")
        twin.set_ylabel("GHM weight per term", color="tab:red")
        twin.set_ylim(bottom=0)
        handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
        ax.legend(handles=handles, fontsize=8, loc="upper center", ncol=2,
                  bbox_to_anchor=(0.5, -0.2))
        ax.grid(alpha=0.3)
    fig.suptitle(title or f"epoch {record.epoch}, batch {batch}")
    fig.tight_layout()


def plot_ghm_stats(fig: plt.Figure, record: Mapping[str, Any], bins: int = 10,
                   title: str = "") -> None:
    """One epoch (classification ``g``): the bin shares with mean and median, a panel listing
    :func:`g_statistics`, and the EMA counts after the last batch with the epoch's per-bin
    weights (:func:`epoch_bin_weights`)."""
    record = as_record(record)
    left, panel, right = fig.subplots(1, 3, width_ratios=(3, 1.1, 3))
    stats = g_statistics(record.cls.g, bins)
    centers = (np.arange(bins) + 0.5) / bins
    left.bar(centers, bin_shares(record.cls.g, bins), width=0.9 / bins, color="tab:blue")
    left.axvline(stats["mean"], color="tab:red", label=f"mean {stats['mean']:.3f}")
    left.axvline(stats["median"], color="tab:green", ls="--",
                 label=f"median {stats['median']:.3f}")
    text = (f"count {stats['count']}\nmean {stats['mean']:.3f}\nmedian {stats['median']:.3f}\n"
            f"min {stats['min']:.3f}\nmax {stats['max']:.3f}\nstd {stats['std']:.3f}\n\n"
            f"most populated:\n  bin {stats['most_bin']} ({stats['most_share']:.1%})\n"
            f"least populated:\n  bin {stats['least_bin']} ({stats['least_share']:.1%})\n"
            f"spread of shares:\n  {stats['share_spread']:.3f}")
    panel.axis("off")
    panel.text(0.0, 1.0, text, transform=panel.transAxes, ha="left", va="top", fontsize=9,
               family="monospace")
    panel.set_title("statistics of g")
    left.set(xlabel="gradient norm g = 1 - p_true", ylabel="share of the epoch's samples",
             xlim=(0, 1), ylim=(0, 1), title="gradient-norm distribution")
    left.legend(fontsize=8, loc="upper left")
    acc = as_numpy(record.cls.acc[-1])
    right.bar(centers, acc, width=0.9 / bins, color="tab:gray", label="EMA count after the epoch")
    right.set(xlabel="gradient norm g", ylabel="EMA count (samples)", xlim=(0, 1),
              title="EMA counts and GHM weights")
    twin = right.twinx()
    weights = epoch_bin_weights(record)
    twin.plot(centers, weights, "o", color="tab:red", label="GHM weight (epoch mean)")
    twin.set_ylabel("GHM weight per sample", color="tab:red")
    twin.set_ylim(bottom=0)
    handles = right.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    right.legend(handles=handles, fontsize=8, loc="upper center", ncol=2,
                 bbox_to_anchor=(0.5, -0.2))
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.suptitle(title or f"GHM statistics, epoch {record.epoch}")
    fig.tight_layout()

