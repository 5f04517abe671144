# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: -all
#     formats: ipynb,py:percent
#     notebook_metadata_filter: kernelspec,jupytext,-jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python (gradkit)
#     language: python
#     name: gradkit
# ---

# %% [markdown]
# # Which samples pull together, which pull apart
#
# Cosine-similarity matrices and t-SNE of gradient directions, at the sample and the batch level, epoch by epoch — with the statistics that say what the pictures show and the recordings behind the conflicts.

# %%
# Set-up: every path resolves from the project root, so this runs from any working directory.
import matplotlib.pyplot as plt
import torch

import gradkit
from gradkit.core.device import pick_device
from gradkit.core.paths import figures_dir

torch.manual_seed(0)
device = pick_device()
print(f"gradkit {gradkit.__version__}, torch {torch.__version__}, device {device}")
print(f"figures go to {figures_dir()}")

# %% [markdown]
# ## What is measured
#
# For every checkpoint of the GHM run (plastic, 3000 Hz; one every few epochs, listed below) we take the model of that checkpoint and compute **exact per-sample gradients** of the per-sample loss `gradkit.training.sample_loss` (cross-entropy of the class logits) for every clip — the training clips and the held-out ones (counts in the table below) — with respect to all trainable parameters. The GHM weights shape training, but the direction in which one clip pulls the weights is this gradient.
#
# - **Sample level**: the clips' gradient directions `u_i = g_i / ||g_i||`, cosine `cos_ij = u_i · u_j`, rows ordered by class.
# - **Batch level**: the gradients of the mini-batches the run trained on in the epochs since the previous checkpoint (the same shuffles, `gradkit.training.epoch_order`; batches per epoch in the table below), each the mean of its members' per-sample gradients — exact, because the model has no batch coupling (GroupNorm).
#
# Statistics per checkpoint (definitions in `gradkit.grads.similarity`): mean cosine over all pairs, the share of pairs pointing against each other (`cos < 0`), the mean cosine of same-class and of different-class pairs, the **class silhouette** under cosine distance `1 − cos` (1: tight, separate clusters per class; 0: mixed; < 0: a sample is closer to another class than to its own), and per sample its mean cosine to the rest of its class — the most negative are the *conflicting* samples. The t-SNE maps are warm-started from the previous checkpoint's map, so scrubbing does not jump.

# %%
import time
from pathlib import Path

import numpy as np
import pandas as pd
from IPython.display import Markdown, display
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from gradkit.analysis import similarity as asim
from gradkit.core.params import num_trainable, param_slices
from gradkit.core.paths import project_root
from gradkit.grads import batch_means, per_sample_grads, tsne
from gradkit.grads import similarity as sim
from gradkit.training import TrainConfig, epoch_order, get_run, sample_loss
from gradkit.viz import similarity as vsim
from gradkit.viz.figures import publish, save_figure
from gradkit.viz.scrubber import Scrubber

# The machine is shared: with several threads competing for two cores, the many small kernels
# here slow down by an order of magnitude, so everything below runs on one thread.
torch.set_num_threads(1)
_blas = threadpool_limits(1)
t_start = time.perf_counter()
pd.set_option("display.precision", 3)
pd.set_option("display.max_colwidth", 60)
PHASES = {"early": (5, 15), "middle": (20, 40), "late": (45, 60)}



def short(path):
    """A recording's path relative to the project root (absolute if it lives elsewhere)."""
    p = Path(path)
    return str(p.relative_to(project_root())) if p.is_relative_to(project_root()) else str(p)

# %% [markdown]
# ## The run and the clips

# %%
run = get_run(TrainConfig(objective="ghm"))
split = run.split
x = torch.cat([split.x_train, split.x_val])
y = torch.cat([split.y_train, split.y_val])
paths = [short(p) for p in split.paths_train + split.paths_val]
n_train = len(split.y_train)
in_train = np.arange(len(y)) < n_train
classes = split.classes
epochs = [e for e in run.checkpoint_epochs if PHASES["early"][0] <= e <= PHASES["late"][1]]
batch_size, save_every = run.config.batch_size, run.config.save_every
n_params = num_trainable(run.load_model(epochs[0]))
# columns of a gradient row: the classifier layer vs the trunk (the score head gets no gradient
# from the cross-entropy), to see where the class structure of the directions comes from
slices = param_slices(run.load_model(epochs[0]))
is_head = torch.zeros(n_params, dtype=torch.bool)
for name, sl in slices.items():
    is_head[sl] = name.startswith("classifier.")
is_trunk = torch.zeros(n_params, dtype=torch.bool)
for name, sl in slices.items():
    is_trunk[sl] = not name.startswith(("classifier.", "score_head."))
display(pd.DataFrame({
    "clips (train + held out)": [f"{len(y)} ({n_train} + {len(y) - n_train})"],
    "classes": [", ".join(classes)],
    "trainable parameters P": [n_params],
    "of which classifier layer / trunk": [f"{int(is_head.sum())} / {int(is_trunk.sum())}"],
    "checkpoints": [", ".join(map(str, epochs))],
    "batch-level window": [f"the {save_every} epochs up to each checkpoint"],
    "batches per epoch": [f"{-(-n_train // batch_size)} of {batch_size}"],
}).T.rename(columns={0: run.config.folder_name}))

# %% [markdown]
# ## Gradients, similarities and maps at every checkpoint

# %%
results = {}
previous_map, previous_matrix = None, None
for epoch in tqdm(epochs, desc="checkpoints"):
    model = run.load_model(epoch)
    with torch.no_grad():
        predicted = model(x)[0].argmax(dim=1)
    G = per_sample_grads(model, sample_loss, x, y)  # [N, P], exact
    # the batches of the epochs since the previous checkpoint, in the order training used them
    window = list(range(max(1, epoch - save_every + 1), epoch + 1))
    batches = [(e, idx) for e in window for idx in epoch_order(n_train, run.config.seed, e)
               .split(batch_size)]
    G_batch = batch_means(G[:n_train], [idx for _, idx in batches])
    batch_epoch = torch.tensor([e for e, _ in batches])

    sample_matrix = sim.similarity_matrix(G, y, level="sample")
    batch_matrix = sim.similarity_matrix(G_batch, batch_epoch, level="batch")
    sample_stats = sim.similarity_stats(G, y, paths=paths, class_names=classes, top_k=10)
    batch_stats = sim.similarity_stats(G_batch, top_k=3)
    sample_map = tsne.tsne_directions(G, init=previous_map, seed=0)
    batch_map = tsne.tsne_directions(G_batch, seed=0)  # other batches each time: no warm start
    cosine = sim.cosine_matrix(G)
    results[epoch] = {
        "predicted": predicted.numpy(), "sample_matrix": sample_matrix,
        "batch_matrix": batch_matrix, "batch_epoch": batch_epoch.numpy(),
        "sample_stats": sample_stats, "batch_stats": batch_stats,
        "sample_map": sample_map, "batch_map": batch_map,
        "to_own_class": sim.mean_cosine_to_class(G, y).numpy(),
        "change": (sim.matrix_change(previous_matrix, cosine) if previous_matrix is not None
                   else float("nan")),
        "norms": G.norm(dim=1).numpy(),
        "silhouette_classifier": sim.class_silhouette(G[:, is_head], y),
        "silhouette_trunk": sim.class_silhouette(G[:, is_trunk], y),
    }
    previous_map, previous_matrix = sample_map, cosine
print(f"gradients, statistics and t-SNE for {len(epochs)} checkpoints: "
      f"{time.perf_counter() - t_start:.1f} s since the start")

# %%
rows = []
for epoch, r in results.items():
    correct = r["predicted"] == y.numpy()
    off = ~np.eye(len(r["batch_matrix"].matrix), dtype=bool)
    rows.append({
        "epoch": epoch,
        "accuracy": correct.mean(),
        "train_accuracy": correct[in_train].mean(),
        **r["sample_stats"].row(),
        "tsne_silhouette": tsne.embedding_silhouette(r["sample_map"], y.numpy()),
        "silhouette_classifier": r["silhouette_classifier"],
        "silhouette_trunk": r["silhouette_trunk"],
        "matrix_change": r["change"],
        "batch_mean_cosine": r["batch_stats"].mean_cosine,
        "batch_min_cosine": float(r["batch_matrix"].matrix.numpy()[off].min()),
        "batch_share_negative": r["batch_stats"].share_negative,
        "median_grad_norm": float(np.median(r["norms"])),
    })
stats = pd.DataFrame(rows).drop(columns=["n"])
display(stats)

# %% [markdown]
# ## The pictures, epoch by epoch
#
# Left: cosine matrices (red = same direction, blue = opposite); right: t-SNE of the directions. Top: all clips, coloured by class, a cross where the checkpoint's prediction is wrong. Bottom: the mini-batches of the epochs since the previous checkpoint (grouped by epoch).


# %%
def panel_sample_matrix(ax, epoch):
    r, s = results[epoch], results[epoch]["sample_stats"]
    img = vsim.plot_similarity_matrix(
        ax, r["sample_matrix"], classes,
        title=f"samples, epoch {epoch}: within class {s.within_class:.2f}, "
              f"between {s.between_class:.2f}\n{s.share_negative:.0%} of pairs negative")
    return img


def panel_batch_matrix(ax, epoch):
    r, s = results[epoch], results[epoch]["batch_stats"]
    window = r["batch_epoch"]
    img = vsim.plot_similarity_matrix(
        ax, r["batch_matrix"], [f"ep {e}" for e in range(window.max() + 1)], group="epoch",
        title=f"batches of epochs {window.min()}-{window.max()}: mean cosine "
              f"{s.mean_cosine:.2f}\n{s.share_negative:.0%} of pairs negative")
    return img


def panel_sample_map(ax, epoch):
    r = results[epoch]
    row = stats.set_index("epoch").loc[epoch]
    vsim.plot_tsne(ax, r["sample_map"], y.numpy(), r["predicted"] == y.numpy(), classes,
                  title=f"t-SNE of sample gradient directions, epoch {epoch}\nclass silhouette "
                        f"{row.silhouette:.2f} (gradients), {row.tsne_silhouette:.2f} (map)")


def panel_batch_map(ax, epoch):
    r = results[epoch]
    window = r["batch_epoch"]
    vsim.plot_tsne(ax, r["batch_map"], window, None, [f"epoch {e}" for e in range(window.max() + 1)],
                  title=f"t-SNE of the {len(window)} batch gradient directions, epochs "
                        f"{window.min()}-{window.max()}\n(few points: read distances with care)")


def draw_similarities(fig, epoch):
    ax_s, ax_b = fig.subplots(1, 2)
    img = panel_sample_matrix(ax_s, epoch)
    panel_batch_matrix(ax_b, epoch)
    fig.colorbar(img, ax=[ax_s, ax_b], shrink=0.8, label="cosine similarity")


def draw_maps(fig, epoch):
    ax_s, ax_b = fig.subplots(1, 2)
    panel_sample_map(ax_s, epoch)
    panel_batch_map(ax_b, epoch)


def draw_both(fig, epoch):
    (a, b), (c, d) = fig.subplots(2, 2)
    img = panel_sample_matrix(a, epoch)
    panel_sample_map(b, epoch)
    panel_batch_matrix(c, epoch)
    panel_batch_map(d, epoch)
    fig.colorbar(img, ax=[a, c], shrink=0.6, label="cosine similarity")


written = []
for epoch in tqdm(epochs, desc="figures"):
    for name, draw, size in [("gradient_similarities", draw_similarities, (13, 5.5)),
                             ("gradient_directions_tsne", draw_maps, (13, 5.5))]:
        fig = plt.figure(figsize=size, layout="constrained")
        draw(fig, epoch)
        written.append(save_figure(fig, f"{name}_epoch_{epoch}.png").name)
        plt.close(fig)
print(f"wrote {len(written)} figures: {written[0]} ... {written[-1]}")

scrubber = Scrubber(draw_both, epochs, label="epoch", figsize=(14, 11.5))
display(scrubber)

# %% [markdown]
# ## The statistics over training

# %%
fig, axes = plt.subplots(2, 2, figsize=(16, 9), sharex=True, layout="constrained")
colors = {"early": "#f2f2f2", "middle": "#e3ecf7", "late": "#f7ece3"}
for ax in axes.flat:
    for name, (lo, hi) in PHASES.items():
        ax.axvspan(lo - 2.5, hi + 2.5, color=colors[name], zorder=0)
        ax.text((lo + hi) / 2, 0.98, name, transform=ax.get_xaxis_transform(), ha="center",
                va="top", fontsize=8, color="dimgray")
    ax.axhline(0, color="gray", lw=0.6)
    ax.grid(alpha=0.3)
e = stats["epoch"]
ax = axes[0, 0]
ax.plot(e, stats.within_class, "o-", label="same-class pairs")
ax.plot(e, stats.between_class, "s-", label="different-class pairs")
ax.plot(e, stats.mean_cosine, "^-", label="all pairs")
ax.set(ylabel="mean cosine", title="sample level: mean cosine of gradient directions")
ax = axes[0, 1]
ax.plot(e, stats.batch_mean_cosine, "o-", label="mean over batch pairs")
ax.plot(e, stats.batch_min_cosine, "v--", label="most opposed batch pair")
ax.set(ylabel="cosine", title="batch level: cosine between mini-batch gradients")
ax = axes[1, 0]
ax.plot(e, stats.share_negative, "o-", label="sample pairs")
ax.plot(e, stats.share_negative_within, "d-", label="same-class sample pairs")
ax.plot(e, stats.batch_share_negative, "s-", label="batch pairs")
ax.set(xlabel="epoch", ylabel="share of pairs with cos < 0",
       title="pairs whose gradients point against each other")
ax = axes[1, 1]
ax.plot(e, stats.silhouette, "o-", label="class silhouette, gradients (cosine)")
ax.plot(e, stats.silhouette_classifier, "<-", label="... classifier-layer part only")
ax.plot(e, stats.silhouette_trunk, ">-", label="... trunk part only")
ax.plot(e, stats.tsne_silhouette, "s-", label="class silhouette, t-SNE map")
ax.plot(e, stats.accuracy, "^--", label=f"accuracy on all {len(y)} clips")
ax.plot(e, stats.matrix_change, "x:", label="mean |change| of sample cosines since previous")
ax.set(xlabel="epoch", ylabel="score (1 = best) / change",
       title="cluster separation, accuracy, stability")
for ax in axes.flat:
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
fig.suptitle(f"Gradient similarity over training ({run.config.folder_name})")
publish(fig, "similarity_trend.png")

# %% [markdown]
# ## Observations per phase (generated from the statistics above)
#
# Structure words follow the usual reading of the silhouette (Kaufman & Rousseeuw): above 0.70 strong, 0.51–0.70 reasonable, 0.26–0.50 weak, otherwise no substantial class structure.


# %%
def structure(s):
    return ("strong" if s > 0.70 else "reasonable" if s > 0.50 else "weak" if s > 0.25
            else "no substantial")


def agreement(c):
    return ("mostly agree" if c > 0.5 else "partly agree" if c > 0.2 else
            "are nearly unrelated" if c > -0.2 else "mostly disagree")


per_sample = pd.DataFrame({e: r["to_own_class"] for e, r in results.items()}, index=paths)
phase = asim.phase_table(stats, PHASES)
TOL = 0.05  # a change smaller than this (in cosine or silhouette units) counts as flat
lines = []
for name, (lo, hi) in PHASES.items():
    p = phase.loc[name]
    part = stats[(stats.epoch >= lo) & (stats.epoch <= hi)]
    first, last = part.iloc[0], part.iloc[-1]
    worst = per_sample[[c for c in per_sample.columns if lo <= c <= hi]].mean(axis=1)
    gap = p.within_class - p.between_class
    lines.append(
        f"**{name.capitalize()} (epochs {lo}–{hi}, {int(p.n_epochs)} checkpoints).** "
        f"Same-class gradients have mean cosine {p.within_class:.2f}, different-class ones "
        f"{p.between_class:.2f} (gap {gap:.2f}): "
        + ("the matrix shows clear class blocks" if gap > 0.5 else
           "the class blocks are faint" if gap > 0.15 else "there are no class blocks")
        + f". Class silhouette {p.silhouette:.2f} ({structure(p.silhouette)} structure), in the "
        f"t-SNE map {p.tsne_silhouette:.2f}; within the phase the silhouette "
        f"{asim.change_word(first.silhouette, last.silhouette, TOL)} "
        f"({first.silhouette:.2f} at epoch {int(first.epoch)} → {last.silhouette:.2f} at "
        f"{int(last.epoch)}). {p.share_negative:.0%} of sample pairs point against each other. "
        f"Mini-batch gradients {agreement(p.batch_mean_cosine)} (mean cosine "
        f"{p.batch_mean_cosine:.2f}; {p.batch_share_negative:.0%} of batch pairs negative). "
        f"Accuracy on all {len(y)} clips {p.accuracy:.0%}. "
        + (f"{int((worst < 0).sum())} clip(s) pull against their own class on average over the "
           f"phase, most of all `{worst.idxmin()}` (mean cosine to its class {worst.min():.2f})."
           if worst.min() < 0 else
           f"No clip pulls against its own class on average over the phase; the least aligned "
           f"is `{worst.idxmin()}` (mean cosine to its class {worst.min():.2f}). "
           f"{p.share_negative_within:.0%} of same-class pairs are opposed.")
    )
display(Markdown("\n\n".join(lines)))
display(phase)

# %% [markdown]
# ## The overall trend, and what the study said (generated)

# %%
first, last = stats.iloc[0], stats.iloc[-1]
slope = np.polyfit(stats.epoch, stats.silhouette, 1)[0] * 10
early, middle, late = (phase.loc[k] for k in PHASES)
text = [
    f"From epoch {int(first.epoch)} to {int(last.epoch)} the class silhouette of the gradient "
    f"directions {asim.change_word(first.silhouette, last.silhouette, TOL)} "
    f"({first.silhouette:.2f} → {last.silhouette:.2f}; least-squares slope {slope:+.3f} per 10 "
    f"epochs; lowest {stats.silhouette.min():.2f} at epoch "
    f"{int(stats.epoch[stats.silhouette.idxmin()])}, highest {stats.silhouette.max():.2f} at "
    f"epoch {int(stats.epoch[stats.silhouette.idxmax()])}). Same-class cosine "
    f"{asim.change_word(first.within_class, last.within_class, TOL)} ({first.within_class:.2f} → "
    f"{last.within_class:.2f}), different-class cosine "
    f"{asim.change_word(first.between_class, last.between_class, TOL)} "
    f"({first.between_class:.2f} → {last.between_class:.2f}), the share of opposed sample pairs "
    f"{asim.change_word(first.share_negative, last.share_negative, TOL)} "
    f"({first.share_negative:.0%} → {last.share_negative:.0%}), the mean cosine between "
    f"mini-batches {asim.change_word(first.batch_mean_cosine, last.batch_mean_cosine, TOL)} "
    f"({first.batch_mean_cosine:.2f} → {last.batch_mean_cosine:.2f}).",
]
# the study: "dark and structureless, scattered" early, clusters forming in the middle
if early.silhouette > 0.5:
    text.append(
        f"The study described the early gradients as scattered with no structure. Measured, "
        f"the early phase already has {structure(early.silhouette)} class structure "
        f"(silhouette {early.silhouette:.2f}), so 'scattered → clustered' is not what happens "
        f"here. "
        + (f"The structure sits in the classifier layer (silhouette of that part alone "
           f"{early.silhouette_classifier:.2f}, of the trunk part {early.silhouette_trunk:.2f}): "
           f"its gradient (p − onehot(y)) hᵀ shares the −onehot(y) direction across a class."
           if early.silhouette_classifier > early.silhouette_trunk + TOL else
           f"Both the classifier-layer part (silhouette {early.silhouette_classifier:.2f}) and "
           f"the trunk part ({early.silhouette_trunk:.2f}) carry it."))
elif middle.silhouette - early.silhouette > TOL:
    text.append(
        f"As the study described, class clusters form as training goes on: silhouette "
        f"{early.silhouette:.2f} early → {middle.silhouette:.2f} in the middle phase.")
else:
    text.append(
        f"The study described clusters forming in the middle phase; measured, the silhouette "
        f"does not rise from the early ({early.silhouette:.2f}) to the middle phase "
        f"({middle.silhouette:.2f}).")
# the study: the late pattern is "stable, almost no difference" between checkpoints
if np.isfinite(late.matrix_change) and np.isfinite(middle.matrix_change):
    settled = late.matrix_change < 0.5 * middle.matrix_change
    text.append(
        f"Between consecutive checkpoints the sample cosines moved by {middle.matrix_change:.3f} "
        f"on average in the middle phase and {late.matrix_change:.3f} in the late phase: "
        + ("the pattern settles late in training, as the study said."
           if settled else
           "the late pattern is not markedly more stable than the middle one, unlike the "
           "study's 'almost no difference' between late checkpoints."))
# the batch-level report: "no negative correlations between batches"
neg = stats[stats.batch_min_cosine < 0]
text.append(
    "At the batch level no two mini-batch gradients ever point against each other "
     f"(lowest cosine {stats.batch_min_cosine.min():.2f}), as the batch report found."
     if neg.empty else
     f"At the batch level, opposed mini-batch pairs (cos < 0) occur at {len(neg)} of "
     f"{len(stats)} checkpoints (epochs {', '.join(map(str, neg.epoch.astype(int)))}; lowest "
     f"cosine {stats.batch_min_cosine.min():.2f} at epoch "
     f"{int(stats.epoch[stats.batch_min_cosine.idxmin()])}), so the batch report's 'no negative "
     f"correlation between batches' does not hold for this run.")
display(Markdown("\n\n".join(text)))

# %% [markdown]
# ## The clips with the most conflicting gradients
#
# Ranked by their mean cosine to the rest of their class, averaged over all checkpoints (a negative value: the clip's gradient pulls against its own class). Listen to them under the paths given.

# %%
last_epoch = epochs[-1]
worst_k = 3
ranks = per_sample.rank(axis=0)  # 1 = most conflicting at that checkpoint
split_name = np.where(in_train, "train", "held out")
table = pd.DataFrame({
    "path": paths,
    "class": [classes[c] for c in y.tolist()],
    "split": split_name,
    "mean cos to own class (all checkpoints)": per_sample.mean(axis=1).to_numpy(),
    "lowest": per_sample.min(axis=1).to_numpy(),
    f"checkpoints among the {worst_k} worst": (ranks <= worst_k).sum(axis=1).to_numpy(),
    f"predicted at epoch {last_epoch}": [classes[c] for c in results[last_epoch]["predicted"]],
}).sort_values("mean cos to own class (all checkpoints)").head(10).reset_index(drop=True)
display(table)

wrong_last = results[last_epoch]["predicted"] != y.numpy()
top_idx = [paths.index(p) for p in table.path]
rate_top, rate_all = wrong_last[top_idx].mean(), wrong_last.mean()
display(Markdown(
    f"At epoch {last_epoch}, {wrong_last[top_idx].sum()} of these {len(top_idx)} clips are "
    f"predicted wrong ({rate_top:.0%}, against {rate_all:.0%} of all {len(y)} clips): "
    + ("the clips with conflicting gradients are the ones the model gets wrong more often."
       if rate_top > rate_all + 0.1 else
       "the clips with conflicting gradients are not predicted wrong more often than the rest."
       if rate_top <= rate_all else
       "the clips with conflicting gradients are predicted wrong only slightly more often.")))

pairs = results[last_epoch]["sample_stats"].conflicting_pairs.head(5)  # same-class pairs
ever_negative = (per_sample < 0).any(axis=1)
display(Markdown(
    f"{int(ever_negative.sum())} of {len(paths)} clips pull against their own class (negative "
    f"mean cosine to it) at one checkpoint or more"
    + (f"; {int((per_sample < 0).all(axis=1).sum())} at every checkpoint. " if ever_negative.any()
       else ". ")
    + f"At epoch {last_epoch}, "
    f"{results[last_epoch]['sample_stats'].share_negative_within:.0%} of same-class pairs are "
    f"opposed; the {len(pairs)} most opposed same-class pairs:"))
display(pairs[["cosine", "class_i", "path_i", "path_j"]])

# %% [markdown]
# ## Exact gradients or a sketch
#
# For large data sets, `gradkit.grads.similarity` works from a random projection of the gradients (`per_sample_grads(..., sketch_dim=k)`, `[N, k]` instead of `[N, P]`); the statistics are then computed blockwise, never forming `N × N` (the unit tests run 10,000 samples). How close is a sketch on this run's last checkpoint?

# %%
model = run.load_model(last_epoch)
exact = results[last_epoch]["sample_stats"].row()
compare = {"exact": exact}
for k in (64, 512):
    sketched = per_sample_grads(model, sample_loss, x, y, sketch_dim=k, sketch_seed=0)
    compare[f"sketch k={k}"] = sim.similarity_stats(sketched, y, block_size=16).row()
compare = pd.DataFrame(compare).drop(index="n")
display(compare)
err = (compare.drop(columns="exact").sub(compare.exact, axis=0)).abs().max()
display(Markdown(
    f"Largest deviation from the exact statistics: {err.iloc[0]:.3f} with k = 64, "
    f"{err.iloc[1]:.3f} with k = 512 (P = {n_params}); "
    + ("the sketch reproduces the picture." if err.iloc[1] < 0.05 else
       "even k = 512 deviates noticeably; use a larger sketch.")))
print(f"notebook run time: {time.perf_counter() - t_start:.1f} s")

# %%
from gradkit.report.headlines import show_headlines

first_row, last_row = stats.iloc[0], stats.iloc[-1]
worst_mean = table["mean cos to own class (all checkpoints)"].iloc[0]
show_headlines(**{
    "class silhouette (gradients)": f"{first_row.silhouette:.2f} at epoch {int(first_row.epoch)} -> "
                                    f"{last_row.silhouette:.2f} at epoch {int(last_row.epoch)}",
    "share of opposed sample pairs": f"{first_row.share_negative:.0%} -> {last_row.share_negative:.0%}",
    # the top row of the table above: ranked by the mean over all checkpoints
    "most conflicting clip (lowest mean cosine to its class)": "/".join(Path(str(table.path.iloc[0])).parts[-2:])
    + f" ({worst_mean:.2f}, averaged over checkpoints)",
})
