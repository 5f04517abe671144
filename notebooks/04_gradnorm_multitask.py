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
# # GradNorm on a detection + classification network
#
# Does GradNorm balance two tasks that share a backbone without collapsing a task weight? We compare it with fixed weights, uncertainty weighting, PCGrad and two independent backbones, over several seeds.

# %%
# Set-up: every path resolves from the project root, so this runs from any working directory.
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display

import gradkit
from gradkit.core.device import pick_device
from gradkit.core.paths import figures_dir

torch.manual_seed(0)
device = pick_device()
print(f"gradkit {gradkit.__version__}, torch {torch.__version__}, device {device}")
print(f"figures go to {figures_dir()}")

# %%
from gradkit.analysis import multitask as mta
from gradkit.core.params import count_parameters
from gradkit.data.events import CLASSES
from gradkit.models import SharedNet, TwoBackbones
from gradkit.training import multitask as mt
from gradkit.viz.figures import publish
from gradkit.viz.scrubber import Scrubber

# The tensors are tiny (batches of 64 clips of 16 x 16 bins): one intra-op thread is faster than
# two, and the runs are reproducible bit for bit. Everything trains on the CPU on purpose.
torch.set_num_threads(1)
NOTEBOOK_START = time.perf_counter()
SEEDS = (0, 1, 2)
SMOOTH = 8  # steps in the running means of the per-step curves (and the scrubber's stride)
METHODS = list(mt.METHODS)
CONFIG = mt.MultitaskConfig()
COLORS = dict(zip(METHODS, plt.get_cmap("tab10").colors, strict=False))
LABELS = {"equal": "equal 1/1", "study": "study 1/0.01", "gradnorm": "GradNorm",
          "uncertainty": "uncertainty", "pcgrad": "PCGrad", "two_backbones": "two backbones"}
pd.DataFrame({"method": METHODS, "what it is": [mt.METHODS[m] for m in METHODS]})

# %% [markdown]
# ## The task: where is the sound event, and what is it?
#
# A deterministic synthetic task (`gradkit.data.events`) shaped like the study's: one network locates an event and names it. Each clip is a 16 x 16 spectrogram (frequency bins up, time frames right) with one event in Gaussian background noise. **Detection**: the event's time/frequency box. **Classification**: its texture: *tonal* (harmonic stack), *clicks* (impulse train), *burst* (broadband noise) or *sweep* (up-chirp). The textures sit inside the box, so both tasks read the same local evidence through the shared backbone. Train and held-out clips come from two fixed data seeds; a run's seed sets only the initialisation and the batch order.

# %%
train_data = mt.event_data(CONFIG.n_train, CONFIG.data_seed)
test_data = mt.event_data(CONFIG.n_test, CONFIG.data_seed + 1)
fig, axes = plt.subplots(2, 4, figsize=(11, 5.6))
for ax, i in zip(axes.flat, range(8), strict=True):
    t0, f0, t1, f1 = train_data.boxes[i].tolist()
    ax.imshow(train_data.x[i, 0], origin="lower", cmap="magma", extent=(0, 16, 0, 16))
    ax.add_patch(plt.Rectangle((t0, f0), t1 - t0, f1 - f0, fill=False, ec="cyan", lw=1.5))
    ax.set_title(f"{CLASSES[int(train_data.labels[i])]}: box t {t0:.0f}-{t1:.0f}, f {f0:.0f}-{f1:.0f}",
                 fontsize=9)
    ax.set_xlabel("time frame")
    ax.set_ylabel("frequency bin")
fig.suptitle(f"Eight training clips and their boxes ({len(train_data)} train, "
             f"{len(test_data)} held-out clips, {len(CLASSES)} balanced classes)")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## The network
#
# A two-layer convolutional backbone (conv 3x3, ReLU, max-pool, twice) shared by a YOLO-style detection head (a 1x1 conv giving, in each of the 4 x 4 grid cells, an objectness logit and the box regression `dx, dy, w, h`) and a classification head (global max-pooling, linear). The detection loss is the objectness cross-entropy over the cells plus 5 x the L1 box error at the cell holding the box centre; the classification loss is the cross-entropy. GradNorm measures the task gradients on the last shared layer, the second convolution.

# %%
shared_net, two_net = SharedNet(), TwoBackbones()
pd.DataFrame([
    {"model": "shared backbone", "backbone": count_parameters(shared_net.backbone),
     "detection head": count_parameters(shared_net.det_head),
     "classification head": count_parameters(shared_net.cls_head),
     "total": count_parameters(shared_net)},
    {"model": "two backbones",
     "backbone": count_parameters(two_net.det_backbone) + count_parameters(two_net.cls_backbone),
     "detection head": count_parameters(two_net.det_head),
     "classification head": count_parameters(two_net.cls_head),
     "total": count_parameters(two_net)},
]).set_index("model")

# %% [markdown]
# ## Training every method on every seed
#
# Adam, the same learning rate, batch size and epochs for every method (printed below). At every step, before the method combines the losses, we probe each task's own gradient on the shared parameters (two extra backward passes, left out of the timing), and record its norm, the cosine between the tasks (negative: conflict), their magnitude similarity `2|g1||g2| / (|g1|^2 + |g2|^2)`, the weights and the losses.

# %%
steps_per_epoch = -(-CONFIG.n_train // CONFIG.batch_size)
print(f"Adam (lr {CONFIG.lr}), batches of {CONFIG.batch_size}, {CONFIG.epochs} epochs "
      f"({CONFIG.epochs * steps_per_epoch} steps), {len(METHODS)} methods x {len(SEEDS)} seeds")
runs = mt.run_comparison(METHODS, SEEDS)
steps = mt.step_table(runs)
per_run = mta.run_table(runs)
summary = mta.summarise(per_run)
# GradNorm from the study's starting weights, detection 1.0 and classification 0.01 (renormalised
# to sum to T): the start from which the study's weight collapsed. One seed, for the trajectory.
study_start = mt.train_multitask(mt.MultitaskConfig(method="gradnorm", seed=SEEDS[0],
                                                    init_weights=(1.0, 0.01)))
per_run.round(3)

# %% [markdown]
# ## Task weights over training
#
# Fixed weights are flat lines (equal, PCGrad and two backbones all sit at 1 and hide each other). Uncertainty weights are not normalised; GradNorm's sum to the number of tasks T at every step.

# %%
def mean_over_seeds(column, method, smooth=1):
    """Per-step mean over seeds (and its min/max) of one history column, optionally smoothed."""
    table = steps[steps.method == method].pivot(index="step", columns="seed", values=column)
    table = table.rolling(smooth, min_periods=1).mean()
    return table.index.values, table.mean(axis=1).values, table.min(axis=1).values, table.max(axis=1).values


fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
for ax, column, task in zip(axes[:2], ("w_det", "w_cls"), mt.TASKS, strict=True):
    for m in METHODS:
        x, mean, low, high = mean_over_seeds(column, m)
        ax.plot(x, mean, color=COLORS[m], label=LABELS[m])
        ax.fill_between(x, low, high, color=COLORS[m], alpha=0.15)
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel(f"{task} weight (log scale)")
    ax.set_title(f"{task} weight: mean over {len(SEEDS)} seeds, band = min..max")
axes[0].legend(fontsize=8)
h0 = study_start.history
for column, task, style in (("w_det", "detection", "-"), ("w_cls", "classification", "--")):
    axes[2].plot(h0.step, h0[column], style, color=COLORS["gradnorm"], label=f"{task} weight")
axes[2].set_yscale("log")
axes[2].set_xlabel("training step")
axes[2].set_ylabel("weight (log scale)")
axes[2].set_title(f"GradNorm from the study's start 1.0 / 0.01 (seed {SEEDS[0]})")
axes[2].legend(fontsize=8)
fig.tight_layout()
publish(fig, "gradnorm_weights.png")

# %%
gn = per_run[per_run.method == "gradnorm"]
T = len(mt.TASKS)
weights_every_step = steps[steps.method == "gradnorm"][["w_det", "w_cls"]]
sums = weights_every_step.sum(axis=1)
display(Markdown(
    f"Over all {len(weights_every_step)} GradNorm steps ({len(SEEDS)} seeds) the smallest weight "
    f"was **{weights_every_step.min().min():.3f}** (positive: {bool((weights_every_step > 0).all().all())}) "
    f"and the weights summed to T = {T} within {float((sums - T).abs().max()):.1e}. Final weights, mean "
    f"over seeds: detection {gn.final_w_det.mean():.3f} ± {gn.final_w_det.std():.3f}, "
    f"classification {gn.final_w_cls.mean():.3f} ± {gn.final_w_cls.std():.3f}. "
    f"From the study's start (1.0 / 0.01) the classification weight went from "
    f"{h0.w_cls.iloc[0]:.3f} to {h0.w_cls.iloc[-1]:.3f} and the detection weight from "
    f"{h0.w_det.iloc[0]:.3f} to {h0.w_det.iloc[-1]:.3f}; its smallest weight at any step was "
    f"{h0[['w_det', 'w_cls']].min().min():.3f}"
    + (" - no collapse to zero." if h0[["w_det", "w_cls"]].iloc[-1].min() > 0.05
       else " - a weight did end near zero.")
))

# %% [markdown]
# ## Task losses over training

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
for ax, column, task in zip(axes, ("loss_det", "loss_cls"), mt.TASKS, strict=True):
    for m in METHODS:
        x, mean, low, high = mean_over_seeds(column, m, smooth=SMOOTH)
        ax.plot(x, mean, color=COLORS[m], label=LABELS[m])
        ax.fill_between(x, low, high, color=COLORS[m], alpha=0.12)
    ax.set_xlabel("training step")
    ax.set_ylabel(f"{task} loss (unweighted, training batch)")
    ax.set_title(f"{task} loss ({SMOOTH}-step running mean; band: seed min..max)")
axes[0].legend(fontsize=8)
fig.tight_layout()
publish(fig, "task_losses.png")

# %% [markdown]
# ## Do the tasks' gradients conflict on the shared backbone?

# %%
shared_methods = [m for m in METHODS if m != "two_backbones"]
fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
for m in shared_methods:
    x, mean, low, high = mean_over_seeds("cosine", m, smooth=SMOOTH)
    axes[0].plot(x, mean, color=COLORS[m], label=LABELS[m])
    conflict = (steps[steps.method == m].assign(conflict=lambda d: d.cosine < 0)
                .groupby(["epoch", "seed"]).conflict.mean().groupby("epoch").agg(["mean", "std"]))
    axes[1].errorbar(conflict.index + 0.05 * shared_methods.index(m), conflict["mean"],
                     yerr=conflict["std"], color=COLORS[m], marker="o", ms=3, capsize=2,
                     label=LABELS[m])
    x, mean, low, high = mean_over_seeds("magsim", m, smooth=SMOOTH)
    axes[2].plot(x, mean, color=COLORS[m], label=LABELS[m])
axes[0].axhline(0, color="k", lw=0.8)
axes[0].set(xlabel="training step", ylabel="cos(g_det, g_cls)",
            title=f"cosine of the task gradients ({SMOOTH}-step running mean)")
axes[1].set(xlabel="epoch", ylabel="share of steps with cosine < 0",
            title="conflict share per epoch (mean ± std over seeds)", ylim=(-0.02, 1.02))
axes[2].set(xlabel="training step", ylabel="2|g1||g2| / (|g1|² + |g2|²)",
            title=f"magnitude similarity ({SMOOTH}-step running mean)", ylim=(0, 1.02))
axes[0].legend(fontsize=8)
fig.tight_layout()
publish(fig, "task_gradient_cosine.png")

# %% [markdown]
# ## Held-out results per method

# %%
metrics = [("mean_iou", "detection: mean IoU"), ("iou50", "detection: share IoU ≥ 0.5"),
           ("accuracy", "classification accuracy")]
fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
for ax, (column, title) in zip(axes, metrics, strict=True):
    for k, m in enumerate(METHODS):
        values = per_run[per_run.method == m][column]
        ax.bar(k, values.mean(), yerr=values.std(), color=COLORS[m], capsize=4, alpha=0.8)
        ax.scatter(np.full(len(values), k), values, color="k", s=10, zorder=3)
    ax.set_xticks(range(len(METHODS)), [LABELS[m] for m in METHODS], rotation=30, ha="right")
    ax.set_ylabel(title + " (held-out)")
    ax.set_title(f"{title}: mean ± std, dots = {len(SEEDS)} seeds")
    ax.set_ylim(0, 1)
axes[2].axhline(1 / len(CLASSES), color="k", ls=":", lw=1, label="chance")
axes[2].legend(fontsize=8)
fig.tight_layout()
publish(fig, "multitask_comparison.png")

# %% [markdown]
# ## The study's comparison table, measured
#
# The study's table had rows for complexity, training time, parameters, gradient interference and detection / classification performance, partly "estimated". Every cell below is measured in this notebook: **complexity** as the backward passes per training step through the first backbone layer and through the last shared layer (counted with gradient hooks), **time** as the training seconds per epoch (forward, combine, backward, optimiser step; probes excluded), **interference** from the per-step probes on the shared parameters (a model without shared parameters has none to measure).

# %%
def pm(column, digits=3):
    """'mean ± std' over seeds of one per-run column, per method (from ``summary``)."""
    fmt = f"{{:.{digits}f}}".format
    return summary[(column, "mean")].map(fmt) + " ± " + summary[(column, "std")].map(fmt)


def passes(row):
    return f"{row.backbone_passes:.0f} / {row.last_shared_passes:.0f}"


first = per_run.groupby("method", sort=False).first()
table = pd.DataFrame({
    "complexity: backward passes per step (backbone / last shared layer)": first.apply(passes, axis=1),
    "complexity: scalars the method adapts": first.adapted_scalars,
    "time per epoch [s]": pm("epoch_s", 3),
    "parameters": first.params,
    "interference: mean cosine": pm("mean_cosine"),
    "interference: conflict share": pm("conflict_share"),
    "interference: magnitude similarity": pm("magsim"),
    "detection: mean IoU": pm("mean_iou"),
    "detection: IoU ≥ 0.5": pm("iou50"),
    "classification: accuracy": pm("accuracy"),
}).rename(index=LABELS)
table = table.replace("nan ± nan", "none shared")
display(table.T)

# %% [markdown]
# ## Did GradNorm beat equal weighting?
#
# A difference counts only if it is larger than the seed-to-seed spread (the larger of the two standard deviations over seeds); otherwise it is "within noise". With a handful of seeds that is a rough guard, not a significance test.

# %%
def verdict(method, baseline, column, name):
    a = per_run[per_run.method == method][column]
    b = per_run[per_run.method == baseline][column]
    diff, noise, word = mta.compare(a, b)
    outcome = {"higher": "better", "lower": "worse", "within noise": "no different, within noise"}[word]
    # Same seed, same initial network and batch order: the seeds pair up.
    wins = int((a.values > b.values).sum())
    return (f"{name}: {LABELS[method]} {a.mean():.3f} ± {a.std():.3f} vs {LABELS[baseline]} "
            f"{b.mean():.3f} ± {b.std():.3f}, difference {diff:+.3f} against a seed spread of "
            f"{noise:.3f}: **{outcome}** ({LABELS[method]} ahead on {wins} of {len(a)} seeds, "
            "paired by initialisation)")


lines = [verdict("gradnorm", "equal", c, n) for c, n in metrics]
display(Markdown("GradNorm against equal weighting, held-out, over "
                 f"{len(SEEDS)} seeds:\n\n" + "\n".join(f"- {s}" for s in lines)))
rows = []
for m in METHODS:
    if m == "equal":
        continue
    for column, name in metrics:
        a, b = per_run[per_run.method == m][column], per_run[per_run.method == "equal"][column]
        diff, noise, word = mta.compare(a, b)
        rows.append({"method": LABELS[m], "metric": name, "difference vs equal": round(diff, 3),
                     "seed spread": round(noise, 3), "verdict": word})
pd.DataFrame(rows).pivot(index="method", columns="metric", values="verdict")

# %%
eq, gnr = per_run[per_run.method == "equal"], per_run[per_run.method == "gradnorm"]
t_ratio = gnr.epoch_s.mean() / eq.epoch_s.mean()
two = per_run[per_run.method == "two_backbones"]
relation = {"higher": "above", "lower": "below", "within noise": "within noise of"}
two_det = relation[mta.compare(two.mean_iou, eq.mean_iou)[2]]
two_cls = relation[mta.compare(two.accuracy, eq.accuracy)[2]]
display(Markdown(
    f"GradNorm's training step took {t_ratio:.2f}x the time of equal weighting "
    f"({gnr.epoch_s.mean():.3f} s vs {eq.epoch_s.mean():.3f} s per epoch, at the same "
    f"{int(gnr.params.iloc[0])} parameters). Two independent backbones ({int(two.params.iloc[0])} "
    f"parameters, {two.epoch_s.mean():.3f} s per epoch) came out {two_det} equal weighting on "
    f"mean IoU ({two.mean_iou.mean():.3f} vs {eq.mean_iou.mean():.3f}) and {two_cls} it on "
    f"accuracy ({two.accuracy.mean():.3f} vs {eq.accuracy.mean():.3f})"
    + "."
))

# %% [markdown]
# What kind of interference is it: the directions of the two tasks' gradients (cosine) or their sizes (magnitude similarity)?

# %%
eq_steps = steps[steps.method == "equal"]
mean_cos, conflict = eq.mean_cosine.mean(), eq.conflict_share.mean()
start = eq_steps[eq_steps.step == 0]
ratio0 = float((start.gnorm_det / start.gnorm_cls).mean())
late = eq_steps[eq_steps.epoch == CONFIG.epochs - 1]
ratio_late = float((late.gnorm_det / late.gnorm_cls).median())
if abs(mean_cos) < 0.05:
    direction = (f"close to orthogonal on average (mean cosine {mean_cos:+.3f}); they pointed "
                 f"against each other on {conflict:.0%} of steps, about what two unrelated noisy "
                 "directions would give")
elif mean_cos < 0:
    direction = f"conflicting on average (mean cosine {mean_cos:+.3f}, {conflict:.0%} of steps)"
else:
    direction = f"mostly aligned (mean cosine {mean_cos:+.3f}; conflict on {conflict:.0%} of steps)"
display(Markdown(
    f"Under equal weighting the task gradients on the shared backbone were {direction}. Their "
    f"sizes differed more: at the first step the detection gradient was {ratio0:.1f}x the "
    f"classification gradient (magnitude similarity {start.magsim.mean():.2f}); in the last epoch "
    f"the median ratio was {ratio_late:.1f}x (magnitude similarity {late.magsim.mean():.2f})."
))

# %% [markdown]
# ## The per-task gradient picture, step by step
#
# GradNorm, the first seed. Left: the two tasks' gradients on the shared parameters drawn in the plane they span (raw: thin; weighted by the current task weight: thick), and the update the method applied (black). Middle: each task's gradient norm per shared tensor. Right: the weights and the cosine over training, the current step marked.

# %%
scrub_run = next(r for r in runs if r.config.method == "gradnorm" and r.config.seed == SEEDS[0])
H, LN = scrub_run.history.set_index("step"), scrub_run.layer_norms


def draw_step(fig, step):
    row = H.loc[step]
    ax1, ax2, ax3 = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1.2, 1.2]})
    arrows = [((row.g1_x, row.g1_y), "C0", 0.8, "g_det"), ((row.g2_x, row.g2_y), "C1", 0.8, "g_cls"),
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
    layers = LN[LN.step == step]
    k = np.arange(len(layers))
    ax2.bar(k - 0.2, layers.det, 0.4, color="C0", label="detection")
    ax2.bar(k + 0.2, layers.cls, 0.4, color="C1", label="classification")
    names = layers.tensor.str.replace("backbone.0", "conv1").str.replace("backbone.3", "conv2 (W)")
    ax2.set_xticks(k, names.str.replace(".", " "), rotation=20, fontsize=7)
    ax2.set(yscale="log", ylabel="raw gradient norm (log)", title="per shared tensor")
    ax2.legend(fontsize=7)
    ax3.plot(H.index, H.w_det, color="C0", label="detection weight")
    ax3.plot(H.index, H.w_cls, color="C1", label="classification weight")
    ax3.set(xlabel="training step", ylabel="weight", title="weights and cosine over training")
    ax3b = ax3.twinx()
    ax3b.plot(H.index, H.cosine.rolling(SMOOTH, min_periods=1).mean(), color="0.5", lw=1,
              label=f"cosine ({SMOOTH}-step mean)")
    ax3b.axhline(0, color="0.5", lw=0.5)
    ax3b.set_ylabel("cosine of the task gradients")
    ax3b.legend(fontsize=7, loc="upper right")
    ax3.axvline(step, color="k", ls=":")
    ax3.legend(fontsize=7, loc="upper left")


step_values = list(H.index[::SMOOTH]) + ([int(H.index[-1])] if H.index[-1] % SMOOTH else [])
scrubber = Scrubber(draw_step, step_values, label="step", figsize=(15, 4.2))
display(scrubber)

# %%
elapsed = time.perf_counter() - NOTEBOOK_START
print(f"notebook body ran in {elapsed:.1f} s "
      f"({len(runs) + 1} training runs, {per_run.epoch_s.sum() * CONFIG.epochs:.1f} s of it timed training)")

# %%
from gradkit.report.headlines import show_headlines

gn_words = {n: mta.compare(gnr[c], eq[c])[2] for c, n in metrics}
show_headlines(**{
    "GradNorm vs equal weighting": "; ".join(f"{n}: {w}" for n, w in gn_words.items()),
    "smallest GradNorm weight (any step, any seed)": f"{weights_every_step.min().min():.3f}",
    "accuracy, GradNorm / equal": f"{gnr.accuracy.mean():.3f} / {eq.accuracy.mean():.3f}",
    "mean IoU, GradNorm / equal": f"{gnr.mean_iou.mean():.3f} / {eq.mean_iou.mean():.3f}",
})
