"""Figures of paired comparisons: the per-unit differences behind a verdict of gradkit.stats."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np

from gradkit.stats import PairedComparison

__all__ = ["plot_paired_differences", "stamp_unit"]


def plot_paired_differences(fig: plt.Figure, panels: Sequence[dict], title: str = "") -> None:
    """One panel per comparison: each unit's difference ``a − b`` (dots, coloured by ``group``),
    their mean with its confidence interval (bar) and zero (no difference).

    Each panel is a dict with ``diffs`` (the differences, in display units), ``groups`` (a label
    per unit, e.g. the seed), ``result`` (the :class:`~gradkit.stats.PairedComparison`),
    ``scale`` (display units per result unit) and ``ylabel`` (with its unit).
    """
    if not panels:
        raise ValueError("plot_paired_differences needs at least one panel")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, panel in zip(axes, panels, strict=True):
        diffs = np.asarray(panel["diffs"], dtype=float)
        groups = list(panel["groups"])
        result: PairedComparison = panel["result"]
        scale = float(panel.get("scale", 1.0))
        names = list(dict.fromkeys(groups))
        cmap = plt.get_cmap("tab10")
        jitter = np.linspace(-0.15, 0.15, max(len(diffs), 1))
        for k, name in enumerate(names):
            pick = [i for i, g in enumerate(groups) if g == name]
            ax.scatter(jitter[pick], diffs[pick], color=cmap(k % 10), s=22, zorder=3,
                       label=str(name))
        lo, hi = (c * scale for c in result.ci)
        if np.isfinite(lo) and np.isfinite(hi):
            ax.errorbar([0.4], [result.diff * scale], yerr=[[result.diff * scale - lo],
                                                            [hi - result.diff * scale]],
                        fmt="s", color="k", capsize=5,
                        label=f"mean, {100 * (1 - result.alpha):.0f} % CI")
        else:
            ax.scatter([0.4], [result.diff * scale], marker="s", color="k", label="mean")
        ax.axhline(0.0, color="0.4", lw=0.8, ls="--", label="no difference")
        ax.set_xlim(-0.5, 0.9)
        ax.set_xticks([0.0, 0.4], ["units", "mean"])
        ax.set_xlabel(f"{result.n} {result.what}")
        ax.set_ylabel(panel["ylabel"])
        ax.set_title(f"{result.label_a} \u2212 {result.label_b}: {result.verdict}", fontsize=10)
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), title="group")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()


def stamp_unit(fig: plt.Figure, text: str) -> None:
    """Write which unit of a multi-run study a single-run figure shows (e.g. ``"seed 42,
    fold 0: one of 15 pairs"``) in the figure's bottom-right corner, off the axes."""
    if not text:
        raise ValueError("stamp_unit needs a text")
    fig.text(0.995, 0.005, text, ha="right", va="bottom", fontsize=8, color="0.35")
