# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
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
# Does GradNorm balance two tasks that share a backbone without collapsing a task weight? We compare it with fixed weights, uncertainty weighting, PCGrad and two independent backbones over several seeds, each method against equal weighting on the same seeds, pair by pair (`gradkit.stats.compare_paired`).

# %% tags=["parameters"]
SEEDS = [0, 1, 2, 3, 4]  # one run per method and seed; a seed fixes the initial network and batch order
EPOCHS = 8  # the cap; the plateau test below says which runs were still improving at it

# %%
# Set-up: every path resolves from the project root, so this runs from any working directory.
import time

import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import Markdown, display

import gradkit
import gradkit.analysis.multitask
import gradkit.training.multitask
import gradkit.viz.multitask
from gradkit import analysis, training, viz
from gradkit.core.device import pick_device
from gradkit.core.params import count_parameters
from gradkit.data.events import CLASSES
from gradkit.models import SharedNet, TwoBackbones
from gradkit.viz.figures import publish
from gradkit.viz.scrubber import Scrubber

torch.manual_seed(0)
print(f"gradkit {gradkit.__version__}, torch {torch.__version__}, device {pick_device()}")

# %%
# The tensors are tiny (batches of 64 clips of 16 x 16 bins): one intra-op thread is faster than
# two, and the runs are reproducible bit for bit. Everything trains on the CPU on purpose.
torch.set_num_threads(1)
NOTEBOOK_START = time.perf_counter()
TREND_WINDOW = 5  # epochs in the plateau test of the per-epoch losses
SMOOTH = 8  # steps in the running means of the per-step curves (and the scrubber's stride)
METHODS = list(training.multitask.METHODS)
CONFIG = training.multitask.MultitaskConfig(epochs=EPOCHS)
TABLE_SEED = 3 if 3 in SEEDS else SEEDS[0]  # the study's tables were of its seed 003
COLORS = dict(zip(METHODS, plt.get_cmap("tab10").colors, strict=False))
LABELS = {"equal": "equal 1/1", "study": "study 1/0.01", "gradnorm": "GradNorm",
          "uncertainty": "uncertainty", "pcgrad": "PCGrad", "two_backbones": "two backbones"}
pd.DataFrame({"method": METHODS, "what it is": [training.multitask.METHODS[m] for m in METHODS]})

# %% [markdown]
# ## The task: where is the sound event, and what is it?
#
# A deterministic synthetic task (`gradkit.data.events`) shaped like the study's: one network locates an event and names it. Each clip is a 16 x 16 spectrogram (frequency bins up, time frames right) with one event in Gaussian background noise. **Detection**: the event's time/frequency box. **Classification**: its texture: *tonal* (harmonic stack), *clicks* (impulse train), *burst* (broadband noise) or *sweep* (up-chirp). The textures sit inside the box, so both tasks read the same local evidence through the shared backbone. Train and held-out clips come from two fixed data seeds; a run's seed sets only the initialisation and the batch order.

# %%
train_data = training.multitask.event_data(CONFIG.n_train, CONFIG.data_seed)
test_data = training.multitask.event_data(CONFIG.n_test, CONFIG.data_seed + 1)
fig = plt.figure(figsize=(11, 5.6))
viz.multitask.plot_event_examples(fig, train_data, CLASSES, n_test=len(test_data))
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
# Adam, the same learning rate, batch size and epochs for every method (printed below). At every step, before the method combines the losses, we probe each task's own gradient on the shared parameters (two extra backward passes, left out of the timing and the memory count), and record its norm, the cosine between the tasks (negative: conflict), their magnitude similarity $2\|g_1\|\|g_2\| / (\|g_1\|^2 + \|g_2\|^2)$, the weights and the losses. Held-out metrics are measured before and after training.

# %%
steps_per_epoch = -(-CONFIG.n_train // CONFIG.batch_size)
print(f"Adam (lr {CONFIG.lr}), batches of {CONFIG.batch_size}, {CONFIG.epochs} epochs "
      f"({CONFIG.epochs * steps_per_epoch} steps), {len(METHODS)} methods x {len(SEEDS)} seeds")
runs = training.multitask.run_comparison(METHODS, SEEDS, epochs=EPOCHS)
steps = training.multitask.step_table(runs)
per_run = analysis.multitask.run_table(runs)
summary = analysis.multitask.summarise(per_run)
# GradNorm from the study's starting weights, detection 1.0 and classification 0.01 (renormalised
# to sum to T): the start from which the study's weight collapsed. One seed, for the trajectory.
study_start = training.multitask.train_multitask(training.multitask.MultitaskConfig(method="gradnorm", seed=SEEDS[0],
                                                                                    epochs=EPOCHS, init_weights=(1.0, 0.01)))
per_run.round(3)

# %% [markdown]
# ## Task weights over training
#
# Fixed weights are flat lines (equal, PCGrad and two backbones all sit at 1 and hide each other). Uncertainty weights are not normalised; GradNorm's sum to the number of tasks $T$ at every step.

# %%
fig = plt.figure(figsize=(15, 4.2))
viz.multitask.plot_task_weights(fig, steps, METHODS, LABELS, COLORS, study=study_start.history,
                                study_seed=SEEDS[0])
publish(fig, "gradnorm_weights.png")

# %%
gn = per_run[per_run.method == "gradnorm"]
T = len(training.multitask.TASKS)
w_steps = steps[steps.method == "gradnorm"][["w_det", "w_cls"]]
h0 = study_start.history
collapsed = analysis.multitask.weight_collapsed(h0)
display(Markdown(
    f"Over all {len(w_steps)} GradNorm steps ({len(SEEDS)} seeds) the smallest weight was "
    f"**{w_steps.min().min():.3f}** and the weights summed to T = {T} within "
    f"{float((w_steps.sum(axis=1) - T).abs().max()):.1e}. Final weights, mean over seeds: "
    f"detection {gn.final_w_det.mean():.3f} ± {gn.final_w_det.std():.3f}, classification "
    f"{gn.final_w_cls.mean():.3f} ± {gn.final_w_cls.std():.3f}. They settled (every later "
    f"epoch's mean within 5 % of the last epoch's) before the cap in {int(gn.weights_settled.sum())}"
    f" of {len(gn)} seeds, at epochs {', '.join(map(str, gn.weights_stable_epoch))} (0 = the "
    f"first, {EPOCHS - 1} = the last). From the "
    f"study's start the classification weight went from {h0.w_cls.iloc[0]:.3f} to "
    f"{h0.w_cls.iloc[-1]:.3f} and the detection weight from {h0.w_det.iloc[0]:.3f} to "
    f"{h0.w_det.iloc[-1]:.3f}: " + ("a weight ended near zero (collapse)." if collapsed
                                    else "no collapse to zero.")))

# %% [markdown]
# ## Task losses over training, and whether the cap was enough
#
# Per run and task, `gradkit.stats.plateau_test` of the per-epoch mean training loss over the last `TREND_WINDOW` epochs (OLS slope, $\alpha = 0.05$): "still improving" means the cap stopped a falling curve.

# %%
fig = plt.figure(figsize=(13, 4.2))
viz.multitask.plot_task_losses(fig, steps, METHODS, LABELS, COLORS, smooth=SMOOTH)
publish(fig, "task_losses.png")
trends = pd.DataFrame([{"method": r.config.method, "seed": r.config.seed,
                        **analysis.multitask.loss_trends(r.history, TREND_WINDOW)} for r in runs])
improving = trends.melt(["method", "seed"], var_name="task", value_name="trend")
display(improving.assign(still=improving.trend == "still improving")
        .pivot_table(index="method", columns="task", values="still", aggfunc="sum", sort=False)
        .rename(index=LABELS).astype(int).rename_axis(columns=f"runs still improving at the "
                                                             f"cap (of {len(SEEDS)})"))

# %% [markdown]
# ## Do the tasks' gradients conflict on the shared backbone?

# %%
shared_methods = [m for m in METHODS if m != "two_backbones"]
fig = plt.figure(figsize=(17, 4.2))
viz.multitask.plot_task_gradient_cosine(fig, steps, shared_methods, LABELS, COLORS, smooth=SMOOTH)
publish(fig, "task_gradient_cosine.png")

# %% [markdown]
# ## Held-out results per method

# %%
metrics = [("mean_iou", "detection: mean IoU"), ("iou50", "detection: share IoU ≥ 0.5"),
           ("accuracy", "classification accuracy")]
fig = plt.figure(figsize=(15, 4.2))
viz.multitask.plot_heldout_comparison(fig, per_run, metrics, METHODS, LABELS, COLORS,
                                      chance=1 / len(CLASSES))
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


first = per_run.groupby("method", sort=False).first()
table = pd.DataFrame({
    "complexity: backward passes per step (backbone / last shared layer)":
        first.backbone_passes.map("{:.0f}".format) + " / "
        + first.last_shared_passes.map("{:.0f}".format),
    "complexity: scalars the method adapts": first.adapted_scalars,
    "time per batch [ms]": pm("batch_ms", 2), "peak step memory [KiB]": pm("peak_step_kib", 1),
    "parameters": first.params,
    "interference: mean cosine": pm("mean_cosine"),
    "interference: conflict share": pm("conflict_share"),
    "interference: magnitude similarity": pm("magsim"),
    "detection: mean IoU": pm("mean_iou"), "detection: IoU ≥ 0.5": pm("iou50"),
    "classification: accuracy": pm("accuracy"),
}).rename(index=LABELS)
display(table.replace("nan ± nan", "none shared").T)

# %% [markdown]
# ## The study's tables, measured on one seed
#
# For the seed the study tabulated (or the first seed when it is not run): the held-out metrics before and after training, the per-epoch mean training loss of each task, the time per batch and the peak memory of a training step (tensor bytes held at the backward pass: parameters, gradients, Adam's moments and the activations autograd saved, counted with `torch.autograd.graph.saved_tensors_hooks`; see `gradkit.training.multitask`), and the epoch from which the task weights stay within 5 % of their final epoch's mean.

# %%
seed_runs = {r.config.method: r for r in runs if r.config.seed == TABLE_SEED}
core = pd.DataFrame({(LABELS[m], k): {"initial": r.initial_metrics[k], "final": r.metrics[k]}
                     for m, r in seed_runs.items() for k, _ in metrics}).T
core["change"] = core["final"] - core["initial"]
print(f"seed {TABLE_SEED}: held-out metrics, initial -> final")
display(core.round(3))
losses = pd.concat({LABELS[m]: analysis.multitask.epoch_losses(r.history) for m, r in seed_runs.items()},
                   axis=1)
print(f"seed {TABLE_SEED}: mean training loss per epoch and task")
display(losses.round(3))
cost = pd.DataFrame({LABELS[m]: {
    "time per batch [ms]": 1e3 * r.seconds_per_batch,
    "peak step memory [KiB]": r.peak_step_bytes / 1024,
    "weights stable from epoch": analysis.multitask.weights_stable_epoch(r.history)[0],
    "weights stable before the cap": analysis.multitask.weights_stable_epoch(r.history)[1]}
    for m, r in seed_runs.items()})
display(cost.T)

# %% [markdown]
# ## Did GradNorm beat equal weighting?
#
# Same seed, same initial network, same batch order: each method's run pairs with the equal-weighting run of its seed. Verdicts come from `gradkit.stats.compare_paired` (paired t-test, 95 % interval, and the smallest difference this design detects with 80 % power): a run of wins on every seed with similar differences is a win, a run of wins with very unequal differences may not be (the table shows wins and losses beside each verdict).

# %%
verdicts = analysis.multitask.paired_table(per_run, "equal", dict(metrics), LABELS)
display(verdicts.pivot(index="method", columns="metric", values="verdict")
        .rename(index=LABELS).rename_axis(columns="against equal weighting"))
display(verdicts.set_index(["method", "metric"])[
    ["diff", "ci_low", "ci_high", "p_value", "wins", "losses", "min_detectable"]].round(3))
gn_results = {name: analysis.multitask.paired_vs(per_run, "gradnorm", "equal", c, LABELS) for c, name in metrics}
display(Markdown("GradNorm against equal weighting, held-out:\n\n" + "\n".join(
    f"- {name}: {r.sentence(digits=3)} ({r.wins} of {r.n} seeds ahead)"
    for name, r in gn_results.items())))

# %%
eq, gnr = per_run[per_run.method == "equal"], per_run[per_run.method == "gradnorm"]
two = per_run[per_run.method == "two_backbones"]
time_gn = analysis.multitask.paired_vs(per_run, "gradnorm", "equal", "batch_ms", LABELS,
                                       higher_is_better=False, unit="ms")
two_det = analysis.multitask.paired_vs(per_run, "two_backbones", "equal", "mean_iou", LABELS)
two_cls = analysis.multitask.paired_vs(per_run, "two_backbones", "equal", "accuracy", LABELS)
display(Markdown(
    f"- Time per batch: GradNorm {gnr.batch_ms.mean():.2f} ms vs equal {eq.batch_ms.mean():.2f} "
    f"ms ({gnr.batch_ms.mean() / eq.batch_ms.mean():.2f}x); {time_gn.sentence(digits=2)} "
    "(\"worse\": slower).\n"
    f"- Two independent backbones ({int(two.params.iloc[0])} parameters against "
    f"{int(eq.params.iloc[0])}): mean IoU {two_det.sentence(digits=3)}; accuracy "
    f"{two_cls.sentence(digits=3)}."))

# %% [markdown]
# What kind of interference is it: the directions of the two tasks' gradients (cosine) or their sizes (magnitude similarity)?

# %%
eq_steps = steps[steps.method == "equal"]
cos_test = analysis.multitask.cosine_against_zero(per_run, "equal")
direction = {"better": "aligned on average", "worse": "conflicting on average",
             "no detectable difference": "not detectably aligned or conflicting on average"}
start = eq_steps[eq_steps.step == 0]
late = eq_steps[eq_steps.epoch == CONFIG.epochs - 1]
display(Markdown(
    f"Under equal weighting the task gradients on the shared backbone were "
    f"{direction[cos_test.verdict]} ({cos_test.sentence(digits=3)}); they pointed against each "
    f"other on {eq.conflict_share.mean():.0%} of steps. Their sizes: at the first step the "
    f"detection gradient was {float((start.gnorm_det / start.gnorm_cls).mean()):.1f}x the "
    f"classification gradient (magnitude similarity {start.magsim.mean():.2f}); in the last "
    f"epoch the median ratio was {float((late.gnorm_det / late.gnorm_cls).median()):.1f}x "
    f"(magnitude similarity {late.magsim.mean():.2f})."))

# %% [markdown]
# ## The per-task gradient picture, step by step
#
# GradNorm, the first seed. Left: the two tasks' gradients on the shared parameters drawn in the plane they span (raw: thin; weighted by the current task weight: thick), and the update the method applied (black). Middle: each task's gradient norm per shared tensor. Right: the weights and the cosine over training, the current step marked.

# %%
scrub_run = next(r for r in runs if r.config.method == "gradnorm" and r.config.seed == SEEDS[0])
H, LN = scrub_run.history, scrub_run.layer_norms
last_step = int(H.step.iloc[-1])
step_values = list(H.step[::SMOOTH]) + ([last_step] if last_step % SMOOTH else [])
scrubber = Scrubber(lambda fig, step: viz.multitask.plot_gradient_step(fig, H, LN, step, SMOOTH),
                    step_values, label="step", figsize=(15, 4.2))
display(scrubber)

# %%
elapsed = time.perf_counter() - NOTEBOOK_START
print(f"notebook body ran in {elapsed:.1f} s ({len(runs) + 1} training runs, "
      f"{per_run.epoch_s.sum() * CONFIG.epochs:.1f} s of it timed training)")

# %%
from gradkit.report.headlines import show_headlines

show_headlines(**{
    **{f"GradNorm vs equal, {n}": f"{r.verdict} ({r.wins}/{r.n} seeds ahead, "
       f"diff {r.diff:+.3f} [{r.ci[0]:+.3f}, {r.ci[1]:+.3f}])" for n, r in gn_results.items()},
    "smallest GradNorm weight (any step, any seed)": f"{w_steps.min().min():.3f}",
    "seeds": f"{len(SEEDS)}, {EPOCHS} epochs each",
})
