"""Figures of notebook 05, sections 1–3 and 6: the decision diagram, training curves, Hessian
spectra, mini-batch noise, batch sizes, classification targets, feature normalisation."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

__all__ = ["plot_batch_sizes", "plot_classification", "plot_decision_diagram",
           "plot_feature_norm", "plot_hessian_spectrum", "plot_minibatch_noise",
           "plot_training_losses"]

_BOX = dict(boxstyle="round,pad=0.5", fc="#f4f4f4", ec="k", lw=0.8)
_LEAF = dict(boxstyle="round,pad=0.5", fc="#e3ecf7", ec="C0", lw=1.0)


def _arrow(ax, a, b, text):
    ax.annotate("", xy=b, xytext=a, arrowprops=dict(arrowstyle="->", lw=1))
    ax.text((a[0] + b[0]) / 2, (a[1] + b[1]) / 2, text, fontsize=8, ha="center",
            va="center", bbox=dict(fc="white", ec="none", pad=1))


def plot_decision_diagram(leaves: dict[str, str]):
    """The notes' recipe as a diagram; ``leaves`` maps each outcome (``"under-trained"``,
    ``"model bias"``, ``"optimisation"``, ``"overfitting"``, ``"fine"``) to the models that
    got it here (text under the box)."""
    fig, ax = plt.subplots(figsize=(11, 6))
    ax.set(xlim=(0, 10), ylim=(0, 10))
    ax.axis("off")
    nodes = {"q0": (5, 9.2, "Training loss still falling?\n(plateau test)"),
             "q1": (6.5, 7.0, "Training loss high?"),
             "q2": (4, 4.8, "Does a deeper model reach a higher training loss\n"
                            "than a shallower one?"),
             "q3": (8.2, 4.8, "Validation loss much\nhigher than training?")}
    for x, y, text in nodes.values():
        ax.text(x, y, text, ha="center", va="center", fontsize=9, bbox=_BOX)
    spots = {"under-trained": (1.5, 7.0), "optimisation": (2.0, 2.0), "model bias": (5.2, 2.0),
             "overfitting": (7.6, 2.0), "fine": (9.4, 2.0)}
    for name, (x, y) in spots.items():
        ax.text(x, y, f"{name}\n{leaves.get(name, '') or '—'}", ha="center", va="top",
                fontsize=8, bbox=_LEAF, wrap=True)
    for a, b, t in [((5, 8.8), (1.5, 7.3), "yes: train longer"), ((5.4, 8.8), (6.5, 7.3), "no"),
                    ((6.2, 6.7), (4, 5.2), "yes"), ((6.8, 6.7), (8.2, 5.2), "no"),
                    ((3.6, 4.4), (2.0, 2.3), "yes"), ((4.4, 4.4), (5.2, 2.3), "no"),
                    ((7.9, 4.4), (7.6, 2.3), "yes"), ((8.5, 4.4), (9.4, 2.3), "no")]:
        _arrow(ax, a, b, t)
    ax.set_title("Problem in training: model bias, optimisation or overfitting?")
    return fig


def plot_training_losses(histories: dict, chance: float, n_classes: int):
    """Training cross-entropy per epoch of every candidate (dashed: plain CNNs)."""
    fig, ax = plt.subplots(figsize=(8, 3.8), layout="constrained")
    for name, h in histories.items():
        ax.plot(h.epoch, h.train_loss, ls="--" if "plain" in name else "-", label=name)
    ax.axhline(chance, color="grey", lw=0.8, ls=":", label=f"chance (ln {n_classes})")
    ax.set(xlabel="epoch", ylabel="training cross-entropy (nats)",
           title="Training loss of deeper vs shallower networks (same budget)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig


def _spectra(ax, spectra: dict, kinds: dict):
    for name, ev in spectra.items():
        ax.plot(np.arange(1, len(ev) + 1), np.asarray(ev), ".", ms=3,
                label=f"{name}: {kinds[name]}")
    ax.axhline(0, color="k", lw=0.6)
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set(xlabel="eigenvalue index (ascending)", ylabel="Hessian eigenvalue λ (symlog)",
           title="Tiny network: spectra at critical points")
    ax.legend(fontsize=7)


def _escape(ax, s, along_min, along_max, lam_min, lam_max, title):
    ax.plot(s, along_min, label=f"along u_min (λ = {lam_min:.3f})")
    ax.plot(s, 0.5 * lam_min * s**2, "--", label="½ λ_min s²")
    ax.plot(s, along_max, label=f"along u_max (λ = {lam_max:.3f})")
    ax.plot(s, 0.5 * lam_max * s**2, ":", label="½ λ_max s²")
    top = 0.5 * abs(lam_min) * float(np.max(np.abs(s))) ** 2
    ax.set_ylim(-1.6 * top, 0.8 * top)
    ax.set(xlabel="step s along the unit eigenvector", ylabel="L(θ' + s u) − L(θ') (nats)",
           title=title)
    ax.legend(fontsize=7)


def plot_hessian_spectrum(spectra, kinds, escape: dict, density: dict):
    """Three panels: tiny-network spectra, the escape from the saddle, and the SLQ density of
    the ResNet. ``density``: ``grid``, ``values`` ``[probes, grid]`` (one curve per probe),
    ``lam_min``, ``lam_max``, ``sigma``, ``title``. Densities below 1e-6 of the peak are left
    out (not drawn at an artificial floor)."""
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2), layout="constrained")
    _spectra(axes[0], spectra, kinds)
    _escape(axes[1], **escape)
    ax, d = axes[2], density
    raw = np.asarray(d["values"], dtype=float)
    floor = 1e-6 * raw.max()
    vals = np.where(raw > floor, raw, np.nan)
    mean = raw.mean(0)
    for k, v in enumerate(vals):
        ax.semilogy(d["grid"], v, lw=0.7, alpha=0.5, color="C0",
                    label=f"SLQ, one curve per probe ({len(vals)})" if k == 0 else None)
    ax.semilogy(d["grid"], np.where(mean > floor, mean, np.nan), color="k", lw=1.5,
                label="mean over probes")
    ax.axvline(d["lam_max"], color="C3", ls="--", label=f"Lanczos λ_max = {d['lam_max']:.2f}")
    ax.axvline(d["lam_min"], color="C2", ls="--", label=f"Lanczos λ_min = {d['lam_min']:.2f}")
    ax.set(xlabel="eigenvalue λ", ylabel=f"density (Gaussian σ = {d['sigma']:.2f})",
           title=d["title"])
    ax.legend(fontsize=7)
    return fig


def plot_minibatch_noise(noise, tr_sigma: float, n: int, n_draws: int):
    """Measured ``E‖g_B − g‖²`` (±2 s.e.) against ``tr Σ / B`` with and without the
    finite-population correction."""
    fig, ax = plt.subplots(figsize=(7, 3.8), layout="constrained")
    part = noise[noise.index < n]
    ax.errorbar(part.index, part.iloc[:, 0], yerr=2 * part.iloc[:, 1], fmt="o",
                label=f"sampled ({n_draws} random batches, ±2 s.e.)")
    bs = np.arange(1, n)
    ax.plot(bs, tr_sigma / bs, "--", label="tr Σ / B")
    ax.plot(bs, tr_sigma / bs * (n - bs) / (n - 1), label="tr Σ / B · (N−B)/(N−1)")
    ax.set(xscale="log", yscale="log", xlabel="batch size B (clips)",
           ylabel="E‖g_B − g‖² (squared gradient units)",
           title=f"Mini-batch gradient noise, ResNet, N = {n}")
    ax.legend(fontsize=8)
    return fig


def plot_batch_sizes(histories: dict, n_train: int):
    """Training loss per epoch and per optimiser update, one curve per batch size."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 3.8), layout="constrained")
    for b, h in sorted(histories.items()):
        steps = -(-n_train // b)
        a1.plot(h.epoch, h.train_loss, label=f"B = {b} ({steps} updates / epoch)")
        a2.plot(h.epoch * steps, h.train_loss, ".-", label=f"B = {b}")
    a1.set(xlabel="epoch", ylabel="training cross-entropy (nats)", title="per epoch")
    a2.set(xscale="log", xlabel="optimiser updates", ylabel="training cross-entropy (nats)",
           title="per update (equal numbers of steps line up)")
    for ax in (a1, a2):
        ax.legend(fontsize=8)
    return fig


def plot_classification(onehot, probs, class_names, clip_names):
    """One-hot targets next to the softmax outputs of the same clips (rows = clips)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.35 * len(clip_names) + 1.8),
                             layout="constrained", sharey=True)
    for ax, m, title in zip(axes, (onehot, probs), ("one-hot target ŷ", "softmax output y'"),
                            strict=True):
        img = ax.imshow(np.asarray(m), vmin=0, vmax=1, cmap="Blues", aspect="auto")
        ax.set_xticks(range(len(class_names)), class_names, rotation=45, fontsize=8)
        ax.set(xlabel="class", title=title)
    axes[0].set_yticks(range(len(clip_names)), clip_names, fontsize=7)
    axes[0].set_ylabel("clip")
    fig.colorbar(img, ax=axes, shrink=0.8, label="probability")
    return fig


def plot_feature_norm(raw, norm, surfaces: dict, names):
    """Feature scales before / after standardising, and the loss surface each gives.
    ``surfaces``: ``{"raw"|"standardised": (w1, w2, L, kappa)}``."""
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2), layout="constrained")
    for k, (X, label) in enumerate(((raw, "raw"), (norm, "standardised"))):
        axes[0].scatter(X[:, 0], X[:, 1], s=12, color=f"C{k}", label=label)
    axes[0].set(xlabel=f"{names[0]} (feature units)", ylabel=f"{names[1]} (feature units)",
                title="Feature scales")
    axes[0].legend(fontsize=8)
    for ax, (label, (w1, w2, L, kappa)) in zip(axes[1:], surfaces.items(), strict=True):
        ax.contour(w1, w2, L, levels=np.geomspace(L.min() + 1e-9, L.max(), 15), linewidths=0.8)
        ax.plot([], [], color="C0", label=f"condition number κ = {kappa:.3g}")
        ax.set(xlabel="w₁ (weight of feature 1)", ylabel="w₂ (weight of feature 2)",
               title=f"MSE loss surface, {label} features")
        ax.legend(fontsize=8, loc="upper right")
    return fig
