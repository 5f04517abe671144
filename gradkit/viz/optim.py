"""Figures of notebook 05, sections 4–8: optimiser paths, schedules, softmax, Hoeffding,
BatchNorm. Losses that reach exactly 0 are never clamped silently: log axes leave them out and
say so in the legend."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from gradkit.lectures import optimizers as opt

__all__ = ["draw_beta_frame", "draw_lr_frame", "draw_paths", "plot_batchnorm", "plot_hoeffding",
           "plot_rmsprop", "plot_schedule_runs", "plot_schedules", "plot_softmax", "rule_colour"]

RULES = tuple(opt.RULES)


def rule_colour(name: str) -> str:
    """One colour per update rule in every figure."""
    return f"C{RULES.index(name)}" if name in RULES else "k"


def _log_loss(ax, loss, **kw):
    """``loss`` on a log axis; exact zeros (not drawable there) are left out and counted."""
    v = np.asarray(loss, dtype=float)
    zeros = int((v <= 0).sum())
    label = kw.pop("label", "")
    ax.semilogy(np.where(v > 0, v, np.nan), label=label + (f" ({zeros} steps at L = 0 not "
                                                           f"drawn)" if zeros else ""), **kw)


def draw_paths(ax_map, ax_loss, paths: dict, title: str, grid=(-1.6, 1.6, -1.3, 1.3)):
    """Trajectories on the 2-D surface (contours) and their loss per step (log axis)."""
    xs, ys = torch.meshgrid(torch.linspace(grid[0], grid[1], 200),
                            torch.linspace(grid[2], grid[3], 200), indexing="xy")
    surface = opt.saddle_valley(torch.stack([xs, ys], -1).double())
    ax_map.contour(xs, ys, surface, levels=np.geomspace(1e-3, 40, 14), cmap="viridis",
                   linewidths=0.7, alpha=0.6)
    for name, path in paths.items():
        inside = torch.isfinite(path).all(1) & (path.abs() < 10).all(1)
        ax_map.plot(path[inside, 0], path[inside, 1], ".-", ms=2, lw=0.8,
                    color=rule_colour(name), label=name)
        _log_loss(ax_loss, opt.saddle_valley(path).numpy(), color=rule_colour(name), label=name)
    ax_map.plot([0], [0], "kx", ms=8, label="saddle")
    ax_map.plot([-1, 1], [0, 0], "k*", ms=8, label="minima")
    ax_map.set(xlim=grid[:2], ylim=grid[2:], xlabel="x", ylabel="y", title=title)
    ax_loss.set(xlabel="step", ylabel="L(x, y) (log)", title="loss per step")
    ax_map.legend(fontsize=7, loc="lower left")
    ax_loss.legend(fontsize=7, loc="lower left")


def draw_lr_frame(fig, lr: float, beta: float = 0.9, steps: int = 100):
    """A :class:`~gradkit.viz.scrubber.Scrubber` frame: every rule on the 2-D surface from
    (0.01, 1) at learning rate ``lr`` (:func:`gradkit.lectures.optimizers.run_rules`)."""
    paths = opt.run_rules(opt.saddle_valley_grad, opt.SADDLE_VALLEY_START, steps, lr, beta)
    draw_paths(*fig.subplots(1, 2), paths, f"η = {lr}, β = {beta}")


def draw_beta_frame(fig, beta: float, lr: float = 0.02, steps: int = 100):
    """A :class:`~gradkit.viz.scrubber.Scrubber` frame: the rules that have a β (momentum μ,
    RMSProp α, Adam β₁) on the 2-D surface from (0.01, 1) with that ``beta``."""
    paths = opt.run_rules(opt.saddle_valley_grad, opt.SADDLE_VALLEY_START, steps, lr, beta,
                          names=("momentum", "RMSProp", "Adam"))
    draw_paths(*fig.subplots(1, 2), paths, f"η = {lr}, β = {beta}")


def plot_rmsprop(paths, title: str, lr: float, sq):
    """``RMSProp.png``: paths, loss per step, RMSProp's effective learning rate per coordinate
    (``sq``: its running mean of squared gradients ``[steps, 2]``)."""
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2), layout="constrained")
    draw_paths(axes[0], axes[1], paths, title)
    for k, what in enumerate(("x (flat floor)", "y (steep walls)")):
        axes[2].semilogy(lr / (sq[:, k].sqrt() + 1e-8), label=f"η/σ for {what}")
    axes[2].set(xlabel="step", ylabel="effective learning rate η/σ_i",
                title="RMSProp: one learning rate per coordinate")
    axes[2].legend(fontsize=8)
    return fig


def plot_schedules(ours, theirs, hist, rms_const, rms_decay, lr0: float, warmup: int):
    """Warm-up + cosine against PyTorch's, Adam's combined factor, RMSProp with decay."""
    fig, axes = plt.subplots(1, 3, figsize=(17, 3.8), layout="constrained")
    axes[0].plot(ours, label="ours: warmup_cosine")
    axes[0].plot(theirs, "--", label="torch SequentialLR(LinearLR, CosineAnnealingLR)")
    axes[0].set(xlabel="optimiser step", ylabel="schedule factor s(t)",
                title=f"Warm-up ({warmup} steps) + cosine decay over {len(ours)} steps")
    lr, adaptive = np.array(hist["lr"]), torch.stack(hist["adaptive"]).numpy()
    axes[1].semilogy(lr, "k", label="η·s(t) (global)")
    for k, c in enumerate("xy"):
        axes[1].semilogy(lr * adaptive[:, k], label=f"η·s(t)/(√v̂+ε), {c}")
    axes[1].set(xlabel="step", ylabel="factor multiplying m̂",
                title="Adam on the 2-D surface: combined update factor")
    _log_loss(axes[2], rms_const, label=f"constant η = {lr0}")
    _log_loss(axes[2], rms_decay, label=f"η = {lr0} × warm-up (10) + cosine")
    axes[2].set(xlabel="step", ylabel="L(x, y) (log)", title="RMSProp with decay")
    for ax in axes:
        ax.legend(fontsize=8)
    return fig


def plot_schedule_runs(runs: dict, peaks):
    """Constant vs warm-up + cosine on the audio task, train and validation loss per epoch."""
    fig, axes = plt.subplots(1, len(peaks), figsize=(6 * len(peaks), 3.6), sharey=True,
                             layout="constrained")
    for ax, peak in zip(np.atleast_1d(axes), peaks, strict=True):
        for kind in ("constant", "warm-up + cosine"):
            h = runs[(peak, kind)]
            ax.plot(h.epoch, h.train_loss, label=f"{kind}: train")
            ax.plot(h.epoch, h.val_loss, "--", label=f"{kind}: validation")
        ax.set(xlabel="epoch", ylabel="cross-entropy (nats)", title=f"ResNet, peak η = {peak}")
        ax.legend(fontsize=8)
    return fig


def plot_softmax(m, probs, g_ce, g_mse, curves: dict):
    """``Softmax.png``: softmax vs margin, gradient norms (log; exact zeros left out), and CE
    of a linear classifier trained with CE or MSE from a saturated wrong start."""
    fig, axes = plt.subplots(1, 3, figsize=(16, 4), layout="constrained")
    for k in range(probs.shape[1]):
        axes[0].plot(m, probs[:, k], label=f"y'_{k}" + (" (target)" if k == 0 else ""))
    axes[0].set(xlabel="margin m = z₁ − z₀ of a wrong class (logits (−m/2, m/2, 0))",
                ylabel="softmax probability", title="Softmax")
    for g, label in ((g_ce, "cross-entropy: ‖y' − ŷ‖"), (g_mse, "MSE: ‖Jᵀ 2(y' − ŷ)‖")):
        v = np.asarray(g, dtype=float)
        axes[1].semilogy(m, np.where(v > 0, v, np.nan), label=label)
    axes[1].set(xlabel="margin m (right: confidently wrong)", ylabel="‖∂e/∂z‖",
                title="Gradient w.r.t. the logits")
    for name, curve in curves.items():
        axes[2].plot(curve, label=f"trained with {name}")
    axes[2].set(xlabel="SGD step (η = 0.5, full batch)",
                ylabel="cross-entropy on training set (nats)",
                title="Linear classifier from a saturated wrong start")
    for ax in axes:
        ax.legend(fontsize=8)
    return fig


def plot_hoeffding(table, eps: float, n_trials: int):
    """Simulated P(bad training set) against the union bound, per |H| (zeros left out)."""
    fig, ax = plt.subplots(figsize=(8, 4), layout="constrained")
    for k, size in enumerate(sorted(table["|H|"].unique())):
        part = table[table["|H|"] == size]
        sim = part["simulated P(bad)"].to_numpy(dtype=float)
        ax.semilogy(part.N, np.where(sim > 0, sim, np.nan), "o-", color=f"C{k}",
                    label=f"simulated, |H| = {size} (0 not drawn)")
        ax.semilogy(part.N, part.bound, "--", color=f"C{k}", label=f"bound, |H| = {size}")
    ax.set(xlabel="training set size N", ylabel="P(training set is bad)",
           title=f"Bad training sets, ε = {eps} ({n_trials} simulated sets per point)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig


def plot_batchnorm(batch_means, running: dict, true_mean: float, errors: dict, decay_ref,
                   probe, eval_value: float, band: int, frame: int):
    """``BatchNorm.png``: running means, their error, train- vs eval-mode output of one clip."""
    fig, axes = plt.subplots(1, 3, figsize=(16, 4), layout="constrained")
    steps = np.arange(1, len(batch_means) + 1)
    axes[0].plot(steps, batch_means, ".", color="grey", label="batch mean μ_t")
    for p, r in running.items():
        axes[0].plot(steps, r, label=f"μ̄, p = {p} (torch momentum {1 - p:.2f})")
        axes[1].semilogy(steps, errors[p], label=f"p = {p}")
    axes[0].axhline(true_mean, color="k", ls=":", label="training-set mean")
    axes[0].set(xlabel="training step", ylabel=f"mean of band {band} (normalised log-mel)",
                title="Moving average of the batch means")
    axes[1].semilogy(steps, decay_ref, "k:", label="0.99^t × initial error")
    axes[1].set(xlabel="training step", ylabel="mean |μ̄ − training-set mean| over bands",
                title="How fast the running mean forgets its start (0)")
    axes[2].hist(probe, bins=15, alpha=0.7, label=f"training mode, {len(probe)} random batches")
    axes[2].axvline(eval_value, color="C3", lw=2, label="evaluation mode (any batch)")
    axes[2].set(xlabel=f"BatchNorm output, clip 0, band {band}, frame {frame}",
                ylabel="count", title="Same clip: train mode depends on its batch")
    for ax in axes:
        ax.legend(fontsize=7)
    return fig
