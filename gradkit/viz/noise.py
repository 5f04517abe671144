"""Figures of notebook 02: the noise scale over training, per condition, and gradient norms.

Interval bars are drawn as points with bars on log axes (a bar's length from zero means nothing
there); an infinite upper bound (the mean gradient cannot be told from zero) is drawn as a line
up to the top of the axis, ending in a triangle. Failed runs are drawn hollow and labelled.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

__all__ = ["kind_style", "plot_gns_by_condition", "plot_gns_trend", "plot_norms", "plot_run_noise"]

_KIND_STYLE = {"objective": ("-", "o", "trained objective"),
               "ce": ("--", "s", "cross-entropy only")}
_OTHER_STYLES = (("-.", "D"), (":", "v"), ((0, (5, 1, 1, 1)), "P"), ((0, (1, 2)), "X"))


def kind_style(kind: str, others: list[str]) -> tuple:
    """``(line style, marker, label)`` of a loss ``kind``: the workbook's two by name, any other
    (a user's loss, :func:`gradkit.analysis.noise.kind_label`) by its order in ``others`` and
    labelled with its own name."""
    if kind in _KIND_STYLE:
        return _KIND_STYLE[kind]
    ls, marker = _OTHER_STYLES[others.index(kind) % len(_OTHER_STYLES)]
    return ls, marker, f"loss {kind}"


def _cap(values) -> float:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    return 3 * float(v.max()) if v.size else 10.0


def _interval(ax, x, lo, hi, color, cap, band: bool):
    x, lo, hi = (np.asarray(t, dtype=float) for t in (x, lo, hi))
    inf = ~np.isfinite(hi)
    if band:
        ax.fill_between(x, lo, np.where(inf, np.nan, hi), color=color, alpha=0.15, lw=0)
    else:
        ax.vlines(x[~inf], lo[~inf], hi[~inf], color=color, lw=1.2)
    ax.vlines(x[inf], lo[inf], cap, color=color, lw=0.8, alpha=0.6)
    ax.plot(x[inf], np.full(inf.sum(), cap), "^", color=color, ms=5, alpha=0.8)


def _trend_panel(ax, trends, col, cap, failed=()):
    others = list(dict.fromkeys(k for kinds in trends.values() for k in kinds
                                if k not in _KIND_STYLE))
    for k, (name, kinds) in enumerate(trends.items()):
        tag = " (failed run)" if name in failed else ""
        for kind, t in kinds.items():
            ls, marker, what = kind_style(kind, others)
            ax.plot(t.epoch, t[col], ls=ls, marker=marker, ms=4, color=f"C{k}",
                    mfc="white" if tag else None, label=f"{name}{tag}: {what}")
            _interval(ax, t.epoch, t[f"{col}_lo"], t[f"{col}_hi"], f"C{k}", cap, band=True)
    ax.plot([], [], "^", color="grey", label="interval upper bound infinite")
    ax.set(yscale="log", xlabel="epoch")
    ax.grid(alpha=0.3, which="both")


def plot_gns_trend(trends, batch_size: int, n: int, study: dict | None = None, title: str = "",
                   failed=()):
    """GNS and ``B_simple`` (95 % bootstrap intervals) per checkpoint. ``trends``:
    ``{run name: {kind: table}}`` of :func:`gradkit.analysis.noise.checkpoint_noise_scales`
    (``kind``: ``"objective"``, ``"ce"`` or any loss's name, labelled as it is);
    runs named in ``failed`` are drawn hollow and labelled."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(15, 4.5), layout="constrained")
    frames = [t for kinds in trends.values() for t in kinds.values()]
    for ax, col in ((a1, "gns"), (a2, "b_simple")):
        cap = _cap(np.concatenate([f[c] for f in frames for c in (col, f"{col}_hi")]))
        _trend_panel(ax, trends, col, cap, failed)
    if study:
        a1.plot(list(study), list(study.values()), "x:", color="k", label="study's reported GNS")
    a1.axhline(1, color="k", lw=0.8, ls=":", label="noise = signal")
    a1.set(ylabel=f"GNS = E‖g_B − g_D‖² / ‖g_D‖²  (B = {batch_size})",
           title="Gradient noise scale (95 % bootstrap interval)")
    a2.axhline(batch_size, color="k", lw=0.8, ls="--", label=f"batch size used, B = {batch_size}")
    a2.axhline(n, color="k", lw=0.8, ls=":", label=f"training set, N = {n}")
    a2.set(ylabel="B_simple = tr Σ / ‖g_D‖²  (samples)", title="Simple critical batch size")
    for ax in (a1, a2):
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.suptitle(title)
    return fig


def _condition_points(ax, ends, col, cap):
    freqs = sorted(ends.freq_hz.unique())
    mats = list(dict.fromkeys(ends.material))
    width = 0.6 / max(len(freqs), 1)
    for k, f in enumerate(freqs):
        part = ends[ends.freq_hz == f]
        x = np.array([mats.index(m) for m in part.material]) + (k - (len(freqs) - 1) / 2) * width
        _interval(ax, x, part[f"{col}_lo"], part[f"{col}_hi"], f"C{k}", cap, band=False)
        ok = ~part.failed.to_numpy(bool)
        ax.plot(x[ok], part[col].to_numpy()[ok], "o", color=f"C{k}", label=f"{f} Hz")
        ax.plot(x[~ok], part[col].to_numpy()[~ok], "o", mfc="white", color=f"C{k}", ms=8)
        for xi, yi in zip(x[~ok], part[col].to_numpy()[~ok], strict=True):
            ax.annotate("failed", (xi, yi), textcoords="offset points", xytext=(4, -10),
                        fontsize=7, color="dimgray")
    ax.plot([], [], "o", mfc="white", color="grey", label="failed run (at chance)")
    ax.plot([], [], "^", color="grey", label="upper bound infinite")
    ax.set(xticks=range(len(mats)), xticklabels=mats, yscale="log", xlim=(-0.6, len(mats) - 0.4))
    ax.grid(alpha=0.3, axis="y", which="both")


def plot_gns_by_condition(ends, batch_size: int, n: int, kind_label: str = ""):
    """Last-checkpoint GNS and ``B_simple`` per condition: points with interval bars.

    ``ends``: one row per condition with ``material``, ``freq_hz``, ``failed``, ``gns``,
    ``b_simple`` and their ``*_lo`` / ``*_hi``, ``epoch``."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(14, 4.5), layout="constrained")
    for ax, col in ((a1, "gns"), (a2, "b_simple")):
        _condition_points(ax, ends, col, _cap(np.concatenate([ends[col], ends[f"{col}_hi"]])))
    a1.axhline(1, color="k", lw=0.8, ls=":", label="noise = signal")
    a1.set(ylabel=f"GNS at the last checkpoint (B = {batch_size})",
           title=f"Gradient noise scale per condition {kind_label}")
    a2.axhline(batch_size, color="k", lw=0.8, ls="--", label=f"batch size B = {batch_size}")
    a2.axhline(n, color="k", lw=0.8, ls=":", label=f"training set N = {n}")
    a2.set(ylabel="B_simple at the last checkpoint (samples)",
           title="Critical batch size per condition (95 % intervals)")
    for ax in (a1, a2):
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig


def plot_norms(ax, norms, grad_sq: float, bins, top: int, title: str = ""):
    """Histogram of per-sample gradient norms ``||G_i||`` and the mean gradient's norm."""
    ax.hist(np.asarray(norms), bins=bins, color="C0", alpha=0.8, label="per-sample ‖G_i‖")
    ax.axvline(np.sqrt(grad_sq), color="C3", lw=2, label="‖g_D‖ (mean gradient)")
    ax.set(xscale="log", xlabel="gradient norm (loss units per parameter unit)",
           ylabel="training clips", ylim=(0, top), title=title)
    ax.yaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)


def _positive(values) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    return np.where(np.isfinite(v) & (v > 0), v, np.nan)


def plot_run_noise(scalars, grams, epochs, batch_size: float, title: str = ""):
    """A tracked run's ``B_simple`` (the simple noise scale) over steps and over epochs.

    Left, per step: each batch's ``b_simple`` (grey), the run's ``b_simple_ema`` and each logged
    Gram matrix's value with its 95 % bootstrap interval (``grams``: :func:`gradkit.analysis.
    runs.gram_noise_scales`). Right, per epoch: the pooled value and interval of
    :func:`gradkit.analysis.runs.epoch_noise_scales` (``epochs``). The batch size is marked."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(15, 4.5), layout="constrained")
    a1.plot(scalars.step, _positive(scalars.b_simple), color="0.6", lw=0.8,
            label="each batch (b_simple)")
    a1.plot(scalars.step, _positive(scalars.b_simple_ema), color="C0", lw=1.5,
            label="EMA of the unbiased parts (b_simple_ema)")
    cap = _cap(np.concatenate([np.asarray(t, dtype=float) for t in (
        scalars.b_simple, grams.b_simple_hi if len(grams) else [], epochs.b_simple_hi
        if len(epochs) else [])]))
    if len(grams):
        a1.plot(grams.step, _positive(grams.b_simple), "o", color="C1", ms=5,
                label="logged Gram matrix, 95 % bootstrap interval")
        _interval(a1, grams.step, grams.b_simple_lo, grams.b_simple_hi, "C1", cap, band=False)
    a1.set(xlabel="step", title="B_simple per step")
    if len(epochs):
        a2.plot(epochs.epoch, _positive(epochs.b_simple), "o-", color="C2", ms=5,
                label="pooled over the epoch's steps, 95 % bootstrap interval")
        _interval(a2, epochs.epoch, epochs.b_simple_lo, epochs.b_simple_hi, "C2", cap,
                  band=False)
    a2.set(xlabel="epoch", title="B_simple per epoch")
    for ax in (a1, a2):
        ax.axhline(batch_size, color="k", lw=0.8, ls="--", label=f"batch size, B = {batch_size:g}")
        ax.plot([], [], "^", color="grey", label="interval upper bound infinite")
        ax.set(yscale="log", ylabel="B_simple = tr Σ / ‖G‖²  (samples)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.suptitle(title)
    return fig
