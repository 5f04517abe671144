"""Analysis of GHM training runs: per-epoch gradient-norm statistics, run comparisons, figures.

Inputs are what :mod:`gradkit.train` records:

- ``metrics``: a DataFrame with one row per epoch (``epoch``, ``train_raw_loss``,
  ``train_ghm_loss``, ``train_acc``, ``val_raw_loss``, ``val_ghm_loss``, ``val_acc``, ...);
- ``ghm_history``: one dict per epoch with ``g`` (the classification gradient norms
  ``g = 1 - p_true`` of every training sample, batch after batch), ``w`` (their GHM weights),
  ``batch_sizes``, and per batch (rows) the bin ``counts``, EMA counts ``acc`` and per-bin
  weights ``bin_weights``; the same for the ranking pairs under ``rank_*`` (``g = sigmoid(-z)``).

Bins are GHM's own (:func:`gradkit.losses.bin_edges`: ``[i/bins, (i+1)/bins)``, the last one
closed at 1), so a "bin" here is exactly the bin whose weight GHM computes.

Plotting functions draw onto a given (empty) matplotlib figure: the notebook saves them with
:func:`gradkit.plotting.save_figure` and a :class:`gradkit.widgets.Scrubber` can redraw them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from gradkit.losses import bin_edges, bin_index

__all__ = [
    "HEADS",
    "accuracy_gain_table",
    "batch_values",
    "best_epoch_summary",
    "bin_shares",
    "compare_runs",
    "density_table",
    "epoch_bin_weights",
    "g_statistics",
    "ghm_stats_table",
    "hard_easy_weights",
    "history_by_epoch",
    "loss_change",
    "plot_accuracy_trend",
    "plot_batch_distribution",
    "plot_density_epoch",
    "plot_ghm_stats",
    "plot_ghm_weights_comparison",
    "plot_gradient_density_evolution",
    "plot_loss_comparison_detailed",
    "plot_training_comparison",
    "stage_epochs",
]

#: The two harmonised quantities: key prefix in ``ghm_history`` -> readable name.
HEADS = {"": "classification (g = 1 - p_true)", "rank_": "ranking pairs (g = sigmoid(-z))"}


# -- statistics -----------------------------------------------------------------------------------
def _as_numpy(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64).reshape(-1)


def bin_shares(g: Any, bins: int = 10) -> np.ndarray:
    """Share of the values ``g`` in each GHM bin: ``count_i / len(g)`` (zeros if ``g`` is empty).

    Values outside ``[0, 1 + 1e-6)`` belong to no bin (as in GHM), so the shares then sum to < 1.
    """
    g = torch.as_tensor(_as_numpy(g), dtype=torch.float64)
    if g.numel() == 0:
        return np.zeros(bins)
    idx = bin_index(g, bin_edges(bins))
    idx = idx[(idx >= 0) & (idx < bins)]
    return torch.bincount(idx, minlength=bins).double().numpy() / g.numel()


def g_statistics(g: Any, bins: int = 10) -> dict[str, float]:
    """Summary of one set of gradient norms ``g``.

    ``count``; ``mean``, ``median``, ``min``, ``max``, ``std`` (population, ``ddof=0``) of ``g``;
    ``most_bin`` / ``most_share``: the most populated GHM bin (lowest index on ties) and its
    share of ``g``; ``least_bin`` / ``least_share`` likewise for the least populated bin (empty
    bins count, share 0); ``share_spread``: the standard deviation of the ``bins`` shares (0 when
    ``g`` is spread evenly over the bins, ``sqrt(bins - 1) / bins`` when all of it is in one).
    NaN statistics for an empty ``g``.
    """
    values = _as_numpy(g)
    shares = bin_shares(values, bins)
    if values.size == 0:
        nan = float("nan")
        return {"count": 0, "mean": nan, "median": nan, "min": nan, "max": nan, "std": nan,
                "most_bin": -1, "most_share": nan, "least_bin": -1, "least_share": nan,
                "share_spread": nan}
    return {
        "count": int(values.size),
        "mean": float(values.mean()),
        "median": float(np.median(values)),
        "min": float(values.min()),
        "max": float(values.max()),
        "std": float(values.std()),
        "most_bin": int(np.argmax(shares)),
        "most_share": float(shares.max()),
        "least_bin": int(np.argmin(shares)),
        "least_share": float(shares.min()),
        "share_spread": float(shares.std()),
    }


def history_by_epoch(history: Sequence[Mapping[str, Any]]) -> dict[int, Mapping[str, Any]]:
    """``{epoch: record}`` of a ``ghm_history`` list; checks each record names its epoch."""
    out = {}
    for k, record in enumerate(history):
        if "epoch" not in record or "g" not in record:
            raise ValueError(f"ghm_history[{k}] lacks 'epoch' or 'g': keys {sorted(record)}")
        out[int(record["epoch"])] = record
    return out


def ghm_stats_table(history: Sequence[Mapping[str, Any]], bins: int = 10,
                    head: str = "") -> pd.DataFrame:
    """:func:`g_statistics` of every epoch's ``<head>g`` (all batches), one row per epoch."""
    rows = {e: g_statistics(r[head + "g"], bins) for e, r in history_by_epoch(history).items()}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "epoch"
    return table


def density_table(history: Sequence[Mapping[str, Any]], bins: int = 10,
                  head: str = "") -> pd.DataFrame:
    """Bin shares of ``<head>g`` per epoch: rows epochs, columns the bins' ``[lo, hi)`` labels."""
    edges = bin_edges(bins).tolist()
    columns = [f"[{edges[i]:.1f}, {min(edges[i + 1], 1.0):.1f})" for i in range(bins)]
    rows = {e: bin_shares(r[head + "g"], bins) for e, r in history_by_epoch(history).items()}
    table = pd.DataFrame.from_dict(rows, orient="index", columns=columns)
    table.index.name = "epoch"
    return table


def batch_values(record: Mapping[str, Any], batch: int = 0, head: str = "") -> dict[str, Any]:
    """One batch of an epoch record: its ``g`` and ``w`` (sliced by the batch sizes) and its
    ``counts``, ``acc`` and ``bin_weights`` rows."""
    sizes = list(record[head + "batch_sizes"])
    if not -len(sizes) <= batch < len(sizes):
        raise IndexError(f"batch {batch} out of range: the epoch has {len(sizes)} batches")
    batch %= len(sizes)
    start = int(sum(sizes[:batch]))
    stop = start + int(sizes[batch])
    return {
        "g": _as_numpy(record[head + "g"])[start:stop],
        "w": _as_numpy(record[head + "w"])[start:stop],
        "counts": _as_numpy(record[head + "counts"][batch]),
        "acc": _as_numpy(record[head + "acc"][batch]),
        "bin_weights": _as_numpy(record[head + "bin_weights"][batch]),
    }


def epoch_bin_weights(record: Mapping[str, Any], head: str = "") -> np.ndarray:
    """GHM weight per bin over one epoch: the mean of ``bin_weights`` over the batches in which
    the bin was non-empty (NaN for a bin empty in every batch)."""
    weights = np.asarray(record[head + "bin_weights"], dtype=np.float64)
    counts = np.asarray(record[head + "counts"], dtype=np.float64)
    used = counts > 0
    total = np.where(used, weights, 0.0).sum(axis=0)
    n = used.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def hard_easy_weights(record: Mapping[str, Any], threshold: float = 0.5,
                      head: str = "") -> dict[str, float]:
    """Mean GHM weight of the hard (``g >= threshold``) and easy (``g < threshold``) terms of an
    epoch, and how many of each there were (NaN mean when a group is empty)."""
    g, w = _as_numpy(record[head + "g"]), _as_numpy(record[head + "w"])
    hard = g >= threshold
    mean = lambda a: float(a.mean()) if a.size else float("nan")  # noqa: E731
    return {"hard_mean_w": mean(w[hard]), "easy_mean_w": mean(w[~hard]),
            "n_hard": int(hard.sum()), "n_easy": int((~hard).sum())}


def stage_epochs(epochs: Sequence[int]) -> dict[str, int]:
    """Early / middle / late: the first, the middle (``epochs[len // 2]``) and the last epoch."""
    epochs = sorted(int(e) for e in epochs)
    if not epochs:
        raise ValueError("stage_epochs needs at least one epoch")
    return {"early": epochs[0], "middle": epochs[len(epochs) // 2], "late": epochs[-1]}


# -- run comparisons ------------------------------------------------------------------------------
def best_epoch_summary(metrics: pd.DataFrame) -> dict[str, float]:
    """The epoch of best validation accuracy (the first one on ties) and, at that epoch, the
    train accuracy and the raw / GHM validation losses."""
    row = metrics.loc[metrics["val_acc"].idxmax()]
    return {"best_val_acc": float(row["val_acc"]), "epoch": int(row["epoch"]),
            "train_acc": float(row["train_acc"]), "val_raw_loss": float(row["val_raw_loss"]),
            "val_ghm_loss": float(row["val_ghm_loss"])}


def accuracy_gain_table(runs: Mapping[str, pd.DataFrame], column: str = "val_acc"
                        ) -> pd.DataFrame:
    """Per run: ``initial`` (first logged epoch), ``final`` (last epoch) and ``gain`` = final -
    initial of ``column``."""
    rows = {}
    for name, m in runs.items():
        m = m.sort_values("epoch")
        first, last = float(m[column].iloc[0]), float(m[column].iloc[-1])
        rows[name] = {"initial": first, "final": last, "gain": last - first,
                      "initial_epoch": int(m["epoch"].iloc[0]),
                      "final_epoch": int(m["epoch"].iloc[-1])}
    return pd.DataFrame.from_dict(rows, orient="index")


def loss_change(metrics: pd.DataFrame) -> dict[str, float]:
    """First-epoch minus last-epoch training raw and GHM loss (positive = the loss went down)."""
    m = metrics.sort_values("epoch")
    return {k: float(m[f"train_{k}_loss"].iloc[0] - m[f"train_{k}_loss"].iloc[-1])
            for k in ("raw", "ghm")}


def compare_runs(raw: pd.DataFrame, ghm: pd.DataFrame, n_val: int, last: int = 10
                 ) -> dict[str, Any]:
    """Did GHM help? The criterion, stated and computed:

    ``delta`` = mean validation accuracy of the GHM run over its last ``last`` epochs minus the
    raw run's. One validation clip is worth ``1 / n_val`` of accuracy, so a difference smaller
    than that is not a measurable effect. ``helped = delta >= 1 / n_val``;
    ``hurt = delta <= -1 / n_val``; otherwise neither (no measurable difference).
    """
    if n_val < 1:
        raise ValueError(f"n_val must be >= 1, got {n_val}")
    tail = lambda m: float(m.sort_values("epoch")["val_acc"].iloc[-last:].mean())  # noqa: E731
    raw_tail, ghm_tail = tail(raw), tail(ghm)
    delta = ghm_tail - raw_tail
    resolution = 1.0 / n_val
    return {"raw_tail_acc": raw_tail, "ghm_tail_acc": ghm_tail, "delta": delta,
            "resolution": resolution, "last": int(min(last, len(raw), len(ghm))),
            "helped": delta >= resolution, "hurt": delta <= -resolution}


# -- figures --------------------------------------------------------------------------------------
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
            shares = bin_shares(record[head + "g"], bins)
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
    fig.suptitle(title or f"epoch {record['epoch']}, batch {batch}")
    fig.tight_layout()


def plot_ghm_stats(fig: plt.Figure, record: Mapping[str, Any], bins: int = 10,
                   title: str = "") -> None:
    """One epoch (classification ``g``): the bin shares with mean and median, a panel listing
    :func:`g_statistics`, and the EMA counts after the last batch with the epoch's per-bin
    weights (:func:`epoch_bin_weights`)."""
    left, panel, right = fig.subplots(1, 3, width_ratios=(3, 1.1, 3))
    stats = g_statistics(record["g"], bins)
    centers = (np.arange(bins) + 0.5) / bins
    left.bar(centers, bin_shares(record["g"], bins), width=0.9 / bins, color="tab:blue")
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
    acc = _as_numpy(record["acc"][-1])
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
    fig.suptitle(title or f"GHM statistics, epoch {record['epoch']}")
    fig.tight_layout()
