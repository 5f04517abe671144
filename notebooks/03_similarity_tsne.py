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
# # Which samples pull together, which pull apart
#
# Cosine-similarity matrices and t-SNE of gradient directions, at the sample and the batch level, epoch by epoch — with the statistics that say what the pictures show, checkable definitions of a conflict, and the recordings behind the conflicts.

# %% tags=["parameters"]
DATA_ROOT = None  # a folder <material>/<freq>hz/deg<angle:03d>/*.wav; None = the synthetic set
MATERIAL = "plastic"
FREQ_HZ = 3000
EPOCHS = 60  # of the GHM run whose checkpoints are analysed
RUN = None  # a folder recorded by gradkit.track.Tracker (make report RUN=…); None = the study

# %%
# Set-up: every path resolves from the project root, so this runs from any working directory.
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display
from threadpoolctl import threadpool_limits

# %%
import gradkit
import gradkit.analysis.similarity
import gradkit.grads.similarity
import gradkit.viz.similarity
from gradkit import analysis, grads, viz
from gradkit.analysis import conflicts
from gradkit.core.device import pick_device
from gradkit.core.params import num_trainable
from gradkit.core.paths import figures_dir, project_root
from gradkit.grads import gradient_sketch, tsne
from gradkit.report.headlines import show_headlines
from gradkit.stats import compare_proportions
from gradkit.training import TrainConfig, get_run, sample_loss
from gradkit.viz.figures import publish, save_figure
from gradkit.viz.scrubber import Scrubber

print(f"gradkit {gradkit.__version__}, torch {torch.__version__}, device {pick_device()}; "
      f"figures go to {figures_dir()}")
# The machine is shared: many small kernels on competing threads slow down by an order of
# magnitude, so everything here runs on one thread (BLAS limited for the notebook's lifetime).
torch.set_num_threads(1)
_blas = threadpool_limits(1)
t_start = time.perf_counter()
pd.set_option("display.precision", 3)
pd.set_option("display.max_colwidth", 60)

# %% [markdown]
# ## What is measured
#
# For every checkpoint of the GHM run we take the model of that checkpoint and compute **exact per-sample gradients** $g_i$ of the cross-entropy of the class logits (`gradkit.training.sample_loss`) for every clip — training and held out — over all trainable parameters. The run's pairwise ranking term is left out: it couples the clips of a batch (a pair needs two clips), so it has no gradient per clip — gradkit refuses such a loss for per-sample quantities (`CoupledLossError`); notebook 02 shows how each clip's frozen share of its pairs enters the trained objective's per-sample gradients.
#
# - **Sample level**: directions $u_i = g_i/\|g_i\|$, cosines $\cos_{ij} = u_i\cdot u_j$, rows ordered by class. **Batch level**: the gradients of the mini-batches the run trained on in the epochs since the previous checkpoint (the same shuffles, `gradkit.training.epoch_order`), each the mean of its members' per-sample gradients — exact, because the model has no batch coupling (GroupNorm).
# - Per checkpoint (`gradkit.grads.similarity`): mean cosine, the share of opposed pairs ($\cos < 0$) and its **class-structure baseline** (the same share when every clip's gradient is replaced by its class's mean gradient), same- and different-class mean cosines, the class silhouette under $1 - \cos$.
# - **Conflict** (`gradkit.analysis.conflicts`): clip $i$ of class $c$ conflicts at a checkpoint when $\cos(g_i, \bar g_{c,-i}) < 0$ (the mean gradient of the *rest* of its class) or $\cos(g_i, \bar g_{D,-i}) < 0$ (the mean gradient of the other training clips). Clips are ranked by the share of checkpoints they conflict at.
# - **t-SNE** maps are warm-started from the previous checkpoint's map and Procrustes-aligned to it; their stability is measured: the share of each clip's 5 nearest neighbours kept from the previous checkpoint, and between t-SNE seeds at the last checkpoint.
# - **Label-permuted control** (`gradkit.analysis.control`): at a near-uniform output a clip's gradient is dominated by its label through $p - \mathrm{onehot}(y)$, so class blocks appear even where the recordings carry no class signal. The run is trained again with its labels permuted within the training and within the held-out split (a few permutations, each with its own seed), and the same statistics are computed at the first, middle and last checkpoint. Every sentence below states a statistic's **excess over that control**, with its interval (`gradkit.stats.compare_to_control`), never the statistic alone.

# %% [markdown]
# ## The run and the clips

# %%
run = get_run(TrainConfig(objective="ghm", epochs=EPOCHS, material=MATERIAL, freq_hz=FREQ_HZ,
                          data_root=DATA_ROOT))
split = run.split
x, y = torch.cat([split.x_train, split.x_val]), torch.cat([split.y_train, split.y_val])
root = project_root()
paths = [str(Path(p).relative_to(root)) if Path(p).is_relative_to(root) else str(p)
         for p in split.paths_train + split.paths_val]
n_train, classes, epochs = len(split.y_train), split.classes, run.checkpoint_epochs
in_train = np.arange(len(y)) < n_train
PHASES = analysis.similarity.phases(epochs)
display(pd.DataFrame({
    "clips (train + held out)": [f"{len(y)} ({n_train} + {len(y) - n_train})"],
    "classes (clips each)": [", ".join(f"{c} ({int((y == k).sum())})"
                                       for k, c in enumerate(classes))],
    "trainable parameters P": [num_trainable(run.load_model(epochs[0]))],
    "checkpoints": [", ".join(map(str, epochs))],
    "phases": [", ".join(f"{k} {a}-{b}" for k, (a, b) in PHASES.items())],
    "batches per epoch": [f"{-(-n_train // run.config.batch_size)} of {run.config.batch_size}"],
}).T.rename(columns={0: run.config.folder_name}))

# %% [markdown]
# ## Is this condition learnable at all?
#
# Before reading any statistic: a cross-validated logistic regression on the same log-mel features (each clip flattened, notebook 01's folds), tested against chance by `gradkit.stats.above_chance`, next to the GHM run whose checkpoints are read at its last epoch (`gradkit.analysis.learnability`).

# %%
import gradkit.analysis.learnability

gate = analysis.learnability.learnability_gate(
    analysis.learnability.condition_baseline(MATERIAL, FREQ_HZ, DATA_ROOT, seed=run.config.split_seed),
    analysis.learnability.run_verdicts([run]))
display(Markdown(analysis.learnability.gate_markdown(gate, "the similarities, maps and silhouettes below describe an untrained model, whose gradients are dominated by their labels through p − onehot(y)")))
show_headlines(learnability=gate.headline())

# %% [markdown]
# ## Gradients, similarities and maps at every checkpoint

# %%
results, previous = {}, None
for epoch in epochs:
    results[epoch] = analysis.similarity.checkpoint_similarity(run, epoch, x, y, n_train, init=previous)
    previous = results[epoch]["sample_map"]
K_NN = max(1, min(5, len(y) - 2))
knn = {e: (tsne.knn_overlap(results[a]["sample_map"], results[e]["sample_map"], K_NN)
           if a is not None else np.nan) for a, e in zip([None, *epochs[:-1]], epochs, strict=True)}
G_last = results[epochs[-1]]["gram"]
seed_maps = [tsne.tsne_directions(G_last, seed=s) for s in range(3)]
seed_overlap = float(np.mean([tsne.knn_overlap(seed_maps[0], m, K_NN) for m in seed_maps[1:]]))
print(f"gradients, statistics and t-SNE for {len(epochs)} checkpoints: "
      f"{time.perf_counter() - t_start:.1f} s since the start")

# %%
def stats_row(epoch, r):
    """The scalar statistics of one checkpoint."""
    correct = r["predicted"] == y.numpy()
    off = ~np.eye(len(r["batch_matrix"].matrix), dtype=bool)
    return {"epoch": epoch, "accuracy": correct.mean(), "train_accuracy": correct[in_train].mean(),
            **r["sample_stats"].row(), "baseline": r["baseline"],
            "tsne_silhouette": tsne.embedding_silhouette(r["sample_map"], y.numpy()),
            "silhouette_classifier": r["silhouette_classifier"],
            "silhouette_trunk": r["silhouette_trunk"], "knn_overlap": knn[epoch],
            "batch_mean_cosine": r["batch_stats"].mean_cosine,
            "batch_min_cosine": float(r["batch_matrix"].matrix.numpy()[off].min())
            if off.any() else np.nan,
            "batch_share_negative": r["batch_stats"].share_negative}


stats = pd.DataFrame([stats_row(e, r) for e, r in results.items()]).drop(columns=["n"])
stats["matrix_change"] = [np.nan] + [grads.similarity.matrix_change(grads.similarity.cosine_matrix(results[a]["gram"]),
                                                                    grads.similarity.cosine_matrix(results[b]["gram"]))
                                     for a, b in zip(epochs[:-1], epochs[1:], strict=True)]
display(stats)

# %% [markdown]
# ## Label-induced or data-induced? The label-permuted control
#
# Per statistic and checkpoint: the observed value, the control's mean and spread over the permutations, and the excess $\text{observed} - \overline{\text{control}}$ with its 95 % interval (one observation against the control's draws, Crawford & Howell 1998). A statistic "exceeds its control" only when the interval excludes 0; otherwise the class structure it shows is what the labels alone give. The t-SNE statistics here come from cold-started maps (seed 0), the same for the run and its control.

# %%
import gradkit.analysis.control

CONTROL_PERMUTATIONS = 4  # retrained runs of the control; the interval's width needs at least 3
CONTROL_EPOCHS = analysis.control.control_epochs(epochs)
t_control = time.perf_counter()
control = analysis.control.label_control(run, {e: results[e]["gram"] for e in CONTROL_EPOCHS}, y,
                                         permutations=CONTROL_PERMUTATIONS)
verdict = control.set_index(["epoch", "statistic"]).verdict
display(control.drop(columns=["control", "sentence", "p_value"]))
print(f"label-permuted control ({CONTROL_PERMUTATIONS} retrained runs, checkpoints "
      f"{CONTROL_EPOCHS}): {time.perf_counter() - t_control:.1f} s")

# %%
def versus_control(epoch, name):
    """The generated sentence of one statistic at one controlled checkpoint: its excess."""
    return analysis.control.excess_sentence(control, epoch, name)


display(Markdown("\n\n".join(
    f"**Epoch {e}.** " + "; ".join(versus_control(e, k) for k in analysis.control.STATISTICS) + "."
    for e in CONTROL_EPOCHS)))

# %% [markdown]
# ## The pictures, epoch by epoch
#
# Left: cosine matrices (red = same direction, blue = opposite); right: t-SNE of the directions. Top: all clips, coloured by class, a cross where the checkpoint's prediction is wrong. Bottom: the mini-batches of the epochs since the previous checkpoint, coloured by epoch from a sequential palette (not the class colours). Batch maps are not aligned between checkpoints: they show other batches each time.

# %%
def stability(epoch):
    k = knn[epoch]
    return f"{K_NN}-NN overlap with previous {k:.2f}" if np.isfinite(k) else "first checkpoint"


written = []
for epoch in epochs:
    for name, draw in [("gradient_similarities", lambda f, e: viz.similarity.draw_similarities(
            f, results[e], classes, e)), ("gradient_directions_tsne", lambda f, e: viz.similarity.draw_maps(
            f, results[e], y.numpy(), classes, e, stability(e)))]:
        fig = plt.figure(figsize=(13, 5.5), layout="constrained")
        draw(fig, epoch)
        written.append(save_figure(fig, f"{name}_epoch_{epoch}.png").name)
        plt.close(fig)
print(f"wrote {len(written)} figures: {written[0]} ... {written[-1]}")
display(Scrubber(lambda f, e: viz.similarity.draw_both(f, results[e], y.numpy(), classes, e, stability(e)),
                 epochs, label="epoch", figsize=(14, 11.5)))

# %% [markdown]
# ## The statistics over training

# %%
fig = viz.similarity.plot_similarity_trend(stats, PHASES, len(classes),
                                           title=f"Gradient similarity over training "
                                       f"({run.config.folder_name})")
publish(fig, "similarity_trend.png")
display(Markdown(
    (f"t-SNE stability: a clip keeps on average {stats.knn_overlap.mean():.0%} of its {K_NN} "
     f"nearest neighbours from one checkpoint's map to the next" if len(epochs) > 1 else
     "t-SNE stability: one checkpoint, no map-to-map comparison")
    + f" (unrelated maps: {K_NN / (len(y) - 1):.0%}); between t-SNE seeds 0, 1, 2 at epoch "
    f"{epochs[-1]} (cold starts) {seed_overlap:.0%}."))
display(Markdown(
    f"**Opposed sample pairs**: at epoch {CONTROL_EPOCHS[0]} "
    f"{versus_control(CONTROL_EPOCHS[0], 'share_negative')}"
    + (f"; at epoch {CONTROL_EPOCHS[-1]} {versus_control(CONTROL_EPOCHS[-1], 'share_negative')}"
       if len(CONTROL_EPOCHS) > 1 else "") + "."))

# %% [markdown]
# ## Observations per phase (generated from the statistics above)
#
# The class-structure statistics are stated by their excess over the label-permuted control at the phase's controlled checkpoint (`gradkit.analysis.control`); a trend is called only when the OLS slope over the phase's checkpoints differs from zero at $\alpha = 0.05$ (`trend_word`, needs at least 3 checkpoints).

# %%
phase = analysis.similarity.phase_table(stats, PHASES)
lines = []
for name, (lo, hi) in PHASES.items():
    p, part = phase.loc[name], stats[(stats.epoch >= lo) & (stats.epoch <= hi)]
    checked = [e for e in CONTROL_EPOCHS if lo <= e <= hi]
    structure_text = (
        f"At epoch {checked[-1]}, " + "; ".join(versus_control(checked[-1], k) for k in
                                                ("silhouette", "within_class", "between_class",
                                                 "share_negative", "tsne_same_class")) + "."
        if checked else "No checkpoint of this phase was controlled.")
    lines.append(
        f"**{name.capitalize()} (epochs {lo}–{hi}, {int(p.n_epochs)} checkpoints).** "
        f"{structure_text} Mini-batch gradients {analysis.similarity.agreement(p.batch_mean_cosine)} (mean "
        f"cosine {p.batch_mean_cosine:.2f}). Accuracy on all {len(y)} clips {p.accuracy:.0%} "
        f"(chance {1 / len(classes):.0%}).")
display(Markdown("\n\n".join(lines)))
display(phase)

# %% [markdown]
# ## The overall trend, and what the study said (generated)

# %%
first_control, moved = CONTROL_EPOCHS[0], lambda name: analysis.control.excess_change(
    control, name, CONTROL_EPOCHS[0], CONTROL_EPOCHS[-1])  # the first to the last controlled
neg = stats[stats.batch_min_cosine < 0]
display(Markdown("\n\n".join([
    (f"From epoch {first_control} to {CONTROL_EPOCHS[-1]}" if len(CONTROL_EPOCHS) > 1 else
     f"At epoch {first_control}, the only checkpoint,") + " the excess over the label-permuted "
    f"control of the class silhouette {moved('silhouette')}, of the same-class "
    f"cosine {moved('within_class')}, of the different-class cosine "
    f"{moved('between_class')}, of the t-SNE neighbours of the same class "
    f"{moved('tsne_same_class')}. The mean cosine between mini-batches "
    f"{analysis.similarity.trend_word(stats.batch_mean_cosine)}, and the change of the sample "
    f"cosines between consecutive checkpoints {analysis.similarity.trend_word(stats.matrix_change)}.",
    f"The study described the early gradients as scattered with no structure. Measured at epoch "
    f"{first_control}, {versus_control(first_control, 'silhouette')}: "
    + ("the early class structure goes beyond what the labels alone give."
       if verdict[(first_control, "silhouette")] == "exceeds its control" else
       "the early class structure is no more than the labels alone give, so neither the "
       "study's claim nor its opposite is shown by these gradients."),
    "At the batch level no two mini-batch gradients ever point against each other "
    f"(lowest cosine {stats.batch_min_cosine.min():.2f})." if neg.empty else
    f"At the batch level opposed mini-batch pairs (cos < 0) occur at {len(neg)} of {len(stats)} "
    f"checkpoints (lowest cosine {stats.batch_min_cosine.min():.2f}), so 'no negative "
    f"correlation between batches' does not hold for this run."])))

# %% [markdown]
# ## Classes: which ones the model gets wrong
#
# Per class: accuracy at every checkpoint (all clips of the class), the mean cosine of its same-class pairs, and the share of its clips that conflict. A class is flagged **failing** when most of its clips are mispredicted at more than half of the checkpoints.

# %%
yn = y.numpy()
per_class = {k: {} for k in ("acc", "within", "conflict")}
for e, r in results.items():
    conflict = (r["conflict"][0] < 0) | (r["conflict"][1] < 0)
    per_class["acc"][e] = np.array([(r["predicted"][yn == c] == c).mean()
                                    for c in range(len(classes))])
    per_class["within"][e] = conflicts.within_class_cosines(r["gram"], yn, len(classes))
    per_class["conflict"][e] = np.array([conflict[yn == c].mean() for c in range(len(classes))])
class_tab = conflicts.class_table(per_class["acc"], per_class["within"], per_class["conflict"],
                                  classes)
display(class_tab)
failing = list(class_tab.index[class_tab.failing])
display(Markdown(f"Failing classes: **{', '.join(failing)}**." if failing else
                 "No class is mispredicted at most checkpoints."))

# %% [markdown]
# ## The clips with conflicting gradients
#
# Ranked by the share of checkpoints at which a clip's gradient opposes the rest of its class or the full-data gradient (leave-one-out means). Listen to them under the paths given.

# %%
table = conflicts.conflict_table({e: r["conflict"] for e, r in results.items()}, paths,
                                 [classes[c] for c in yn])
table["split"] = np.where(in_train[[paths.index(p) for p in table.path]], "train", "held out")
display(table.head(10))
ever = table[table["conflict share"] > 0]
wrong = results[epochs[-1]]["predicted"] != yn
is_conf = np.isin(paths, list(ever.path))
display(Markdown(
    f"{len(ever)} of {len(paths)} clips conflict at one checkpoint or more, "
    f"{int((table['conflict share'] == 1).sum())} at every checkpoint. At epoch {epochs[-1]} "
    + "share predicted wrong: " + (compare_proportions(int(wrong[is_conf].sum()), int(is_conf.sum()),
                           int(wrong[~is_conf].sum()), int((~is_conf).sum()),
                           higher_is_better=False, label_1="conflicting clips",
                           label_2="the others").sentence() + "."
       if 0 < is_conf.sum() < len(paths) else "no split into conflicting and other clips.")))

# %% [markdown]
# ## Exact gradients or a sketch
#
# For large data sets, `gradkit.grads.similarity` works from a random projection of the gradients (`gradient_sketch(model, loss_fn, x, y, k=k, seed=...)`, `[N, k]`, never `[N, P]`); the statistics are then computed blockwise, never forming `N × N`. How close is a sketch on this run's last checkpoint?

# %%
model = run.load_model(epochs[-1])
compare = {"exact": results[epochs[-1]]["sample_stats"].row()}
for k in (64, 512):
    sketched = gradient_sketch(model, sample_loss, x, y, k=k, seed=0)
    compare[f"sketch k={k}"] = grads.similarity.similarity_stats(sketched, y, block_size=16).row()
compare = pd.DataFrame(compare).drop(index="n")
display(compare)
err = compare.drop(columns="exact").sub(compare.exact, axis=0).abs().max()
display(Markdown(
    f"Largest deviation from the exact statistics: {err.iloc[0]:.3f} with k = 64, "
    f"{err.iloc[1]:.3f} with k = 512; " + ("the k = 512 sketch reproduces the statistics "
                                           "(within 0.05)." if analysis.similarity.sketch_agrees(err.iloc[1])
                                           else "even k = 512 deviates by more than 0.05.")))
print(f"notebook run time: {time.perf_counter() - t_start:.1f} s")

# %%
ends = sorted({CONTROL_EPOCHS[0], CONTROL_EPOCHS[-1]})  # the first and last controlled checkpoint
show_headlines(**{
    "class silhouette over its label-permuted control": " -> ".join(
        analysis.control.excess_headline(control, e, "silhouette") for e in ends),
    "opposed sample pairs over their label-permuted control": " -> ".join(
        analysis.control.excess_headline(control, e, "share_negative") for e in ends),
    "most conflicting clip": f"{'/'.join(Path(table['path'].iloc[0]).parts[-2:])} (conflicts at "
                             f"{table['conflict share'].iloc[0]:.0%} of checkpoints)",
    "failing classes": ", ".join(failing) if failing else "none",
    "t-SNE 5-NN overlap (consecutive / across seeds)":
        f"{stats.knn_overlap.mean():.2f} / {seed_overlap:.2f}",
})

# %% [markdown] tags=["run"]
# # Which samples of your run pull together, which pull apart
#
# `RUN` names a folder that `gradkit.track.Tracker` recorded inside your own training loop (`examples/track_your_training.py`); this part of the notebook reads it and never writes into it (`make report RUN=runs/my_experiment` runs only this part, into `reports/<run name>/`). Every `gram_every` steps the tracker kept the batch's Gram matrix K = G Gᵀ of its per-sample gradients (no `[N, P]`); from it alone (`gradkit.analysis.runs.step_similarity`): the cosine matrix of the gradient directions grouped by label, its statistics (mean cosine, share of opposed pairs, same- and different-class cosines, class silhouette under 1 − cos), a t-SNE map of the directions, and the samples whose gradient opposes the rest of their class or batch (cos < 0, leave-one-out). Each logged step holds other samples: the maps are not aligned between steps. Whether the run learned is read from its recorded loss (`gradkit.analysis.runs.loss_learned`). With `RUN = None` these cells do nothing.

# %% tags=["run"]
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

import gradkit.analysis.runs
import gradkit.viz.similarity
from gradkit import analysis, viz
from gradkit.grads import tsne
from gradkit.report.headlines import show_headlines
from gradkit.report.runs import use_run
from gradkit.viz.figures import publish
from gradkit.viz.scrubber import Scrubber

# %% tags=["run"]
if RUN is not None:
    track = analysis.runs.check_run(RUN)
    use_run(RUN)  # figures/<run name>/, also when run by hand
    RUN_NAME, run_steps = Path(RUN).name, analysis.runs.logged_steps(track)
    learned = analysis.runs.loss_learned(track.scalars)
    per_step = analysis.runs.step_similarity(track)
    run_stats = pd.DataFrame([
        {"step": s, "epoch": r["epoch"], **r["sample_stats"].row(),
         "tsne_silhouette": tsne.embedding_silhouette(r["sample_map"], r["labels"].numpy())
         if r["labels"] is not None else np.nan}
        for s, r in per_step.items()]).set_index("step")
    display(Markdown(
        f"**{RUN_NAME}** (`{RUN}`): {len(run_steps)} logged batches of at least "
        f"{analysis.runs.MIN_SAMPLES} samples (steps "
        f"{', '.join(map(str, run_steps))}).\n\n**Did the run learn?** {learned.sentence}: "
        f"**{learned.verdict}**." + learned.caveat))
    display(run_stats)

# %% [markdown] tags=["run"]
# ## Scrub the logged steps: similarity matrix and t-SNE map
#
# Left: the cosine matrix of the batch's per-sample gradient directions (red = same direction, blue = opposite), rows grouped by label. Right: t-SNE of the same directions, coloured by label.

# %% tags=["run"]
if RUN is not None:
    def draw_run_step(fig, step):
        r = per_step[step]
        ax_m, ax_t = fig.subplots(1, 2)
        st = r["sample_stats"]
        img = viz.similarity.plot_similarity_matrix(
            ax_m, r["sample_matrix"], title=f"step {step}: mean cosine {st.mean_cosine:.2f}, "
                                            f"{st.share_negative:.0%} of pairs opposed")
        fig.colorbar(img, ax=ax_m, shrink=0.8, label="cosine similarity")
        labels = r["labels"].numpy() if r["labels"] is not None else np.zeros(r["gram"].n, int)
        viz.similarity.plot_tsne(ax_t, r["sample_map"], labels,
                                 title=f"t-SNE of the gradient directions, step {step}"
                                       f"{' (untrained model)' if learned.untrained else ''}")

    fig = plt.figure(figsize=(13, 5.5), layout="constrained")
    draw_run_step(fig, run_steps[-1])
    publish(fig, f"run_similarity_step_{run_steps[-1]}.png")
    display(Scrubber(draw_run_step, run_steps, label="step", figsize=(13, 5.5)))

# %% [markdown] tags=["run"]
# ## Conflicting samples
#
# A sample conflicts at a step when its gradient points against the mean gradient of the rest of its class or of the rest of its batch (`gradkit.analysis.runs.conflicting_samples`). The tracker records no sample ids: a sample is named by its step and its position in that batch. With ids (`{step: [id, ...]}`) the same function pools each id's steps.

# %% tags=["run"]
if RUN is not None:
    run_conflicts = analysis.runs.conflicting_samples(per_step)
    n_samples = sum(r["gram"].n for r in per_step.values())
    display(Markdown(f"{len(run_conflicts)} of {n_samples} logged samples conflict "
                     f"({len(run_conflicts) / n_samples:.0%}); the most opposed first:"))
    display(run_conflicts.head(15))
    last_stats = run_stats.iloc[-1]
    show_headlines(**{
        "run": f"{RUN_NAME} ({len(run_steps)} logged batches)",
        "did it learn (loss)": learned.verdict,
        f"mean cosine, step {run_steps[-1]}": f"{last_stats.mean_cosine:.2f} "
                                              f"({last_stats.share_negative:.0%} pairs opposed)",
        "conflicting samples": f"{len(run_conflicts)} of {n_samples}"})
