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
# # Training with and without the Gradient Harmonizing Mechanism
#
# Does a GHM loss help against the easy/hard-sample imbalance? We train the same ResNetAudioRanker on one material and probe frequency (set below) with cross-entropy + ranking ("raw") and with GHM-C + GHM ranking ("GHM"), over several seeds and a stratified cross-validation, and compare the two objectives pair by pair: every verdict below comes from `gradkit.stats`. First, whether the condition is learnable at all; then each objective at its own learning rate (chosen on inner splits) until its plateau; the learning-speed difference apart; and an ablation of the two GHM terms.

# %% tags=["parameters"]
DATA_ROOT = None  # a folder <material>/<freq>hz/deg<angle:03d>/*.wav; None = the synthetic set
MATERIAL = "plastic"
FREQ_HZ = 3000
EPOCHS = 100  # the ensemble's cap, high enough that the plateau test stops (nearly) every run
STUDY_EPOCHS = 60  # the single pair of figures: the study's 60 epochs, stages 1 / 31 / 60
SEEDS = [42, 0, 1, 2, 3]  # the first one also draws the single-run figures (fold 0)
FOLDS = 3
LRS = [1e-3, 3e-3, 1e-2]  # each objective's learning rate is chosen from these per unit (nested)
RANK_WEIGHTS = [0.03, 0.1]  # ... then its ranking weight, at the unit's best rate (each extra
# weight costs 2 objectives x 15 units x SWEEP_EPOCHS member-epochs on the inner splits)
SWEEP_EPOCHS = 25  # the cap of the inner-split sweep runs (never above EPOCHS) ...
SWEEP_MIN_EPOCHS = 20  # ... which may stop early from this epoch on (the ranking term holds the
# loss flat for the first epochs: a plateau test before epoch 20 stops runs that are about to fall)
SWEEP_TAIL = 10  # a sweep run's score: its mean inner validation accuracy over its last epochs
ABLATION_SEEDS = 2  # the ablation reads the first this many seeds' folds
ABLATION_EPOCHS = 20  # ... for this many epochs (never above EPOCHS): its learning-speed window

# %%
# Set-up: every path resolves from the project root, so this runs from any working directory.
import time

import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import Markdown, display

import gradkit.analysis.checks
import gradkit.analysis.ghm
import gradkit.analysis.learnability
import gradkit.analysis.verdicts
import gradkit.viz.ghm
from gradkit import analysis, viz
from gradkit.core.device import pick_device
from gradkit.core.paths import figures_dir
from gradkit.data.folds import fold_splits, load_features
from gradkit.report.headlines import show_headlines
from gradkit.training import TrainConfig, build_model, get_run
from gradkit.training.ensemble import Member
from gradkit.viz.figures import figures_written, publish
from gradkit.viz.scrubber import Scrubber
from gradkit.viz.verdicts import plot_paired_differences, stamp_unit

NOTEBOOK_START = time.perf_counter()

# %%
torch.manual_seed(0)
print(f"gradkit {gradkit.__version__}, torch {torch.__version__}, device {pick_device()}")
print(f"figures go to {figures_dir()}")
pd.set_option("display.precision", 4)
TAIL = 10  # epochs in the tail means; also the plateau test's window
MIN_EPOCHS = 20  # the plateau test is asked from this epoch on
HARD_G = 0.5  # a sample is "hard" when its gradient norm g = 1 - p_true is at least this
LABELS = {"raw": "raw", "ghm": "GHM"}

# %% [markdown]
# ## The design
#
# - **Objectives.** raw: `CE(logits, y) + rank_weight * R(s, angle)`, with the smooth pairwise ranking loss `R = mean softplus(-(s_j - s_i - margin))` over pairs with `angle_i < angle_j`; GHM: `GHMC(logits, y) + rank_weight * GHMRanking(s, angle)`, each term re-weighted by `tot / (EMA count of its gradient-norm bin) / (non-empty bins)`, so crowded bins (usually the easy samples) count less.
# - **Units.** For every seed, a stratified `FOLDS`-fold cross-validation (`gradkit.data.folds`): every clip is validated once per seed. A unit is a (seed, fold); its raw and GHM runs start from the same initial weights and see the same batches in the same order, so they pair up.
# - **Training.** `gradkit.training.ensemble`: the runs of one objective train together as one vectorised ensemble, each member exactly the run `get_run` would train (tested). A run stops at the first epoch $e \ge$ `MIN_EPOCHS` where neither its validation accuracy nor its raw validation loss over the last `TAIL` epochs is still improving (`gradkit.stats.plateau_test`, OLS slope, $\alpha = 0.05$), else at the cap `EPOCHS`.
# - **A fair learning rate and ranking weight.** Each objective gets its own learning rate and ranking weight per unit, chosen on an inner split of that unit's *training* clips (a third of each class validated, the unit's validation clips in neither part; `gradkit.analysis.sweep`): first the rates `LRS` at `TrainConfig`'s `rank_weight`, then the other weights of `RANK_WEIGHTS` at the unit's best rate (a coordinate search: `len(LRS) + len(RANK_WEIGHTS) − 1` candidates, not their product). A sweep run stops early on its inner split (the plateau test from `SWEEP_MIN_EPOCHS` on, cap `SWEEP_EPOCHS`; a shorter sweep reads the runs before most have left chance) and is scored by its mean inner validation accuracy over its last `SWEEP_TAIL` epochs (ties: the lower inner cross-entropy); the comparison's validation clips never inform the choice. Every candidate setting trains as one vectorised ensemble of the units that try it.
# - **One loss scale.** Runs trained at different ranking weights are compared on their raw and GHM validation losses recomputed at one common weight, `TrainConfig`'s `rank_weight` (`gradkit.analysis.verdicts.at_rank_weight`, from the logged cross-entropy and ranking terms).
# - **Metrics.** Per run, at its last epoch: validation accuracy and raw validation loss (primary), their means over the last `TAIL` epochs, and the best epoch's accuracy (selected on the same validation clips, so optimistic: shown, never compared). Verdicts: `gradkit.stats.compare_paired` over the (seed, fold) pairs; runs at chance: `gradkit.stats.above_chance`.

# %%
features = load_features(MATERIAL, FREQ_HZ, root=DATA_ROOT)
fold_sets = {s: fold_splits(features, FOLDS, s) for s in SEEDS}
members = [Member(s, f, split) for s, fs in fold_sets.items() for f, split in enumerate(fs.splits)]
n_classes = len(features.classes)
design = pd.Series({
    "condition": f"{MATERIAL} / {FREQ_HZ} Hz ({DATA_ROOT or 'synthetic default set'})",
    "clips (classes)": f"{len(features.labels)} ({n_classes}: {', '.join(features.classes)})",
    "seeds": ", ".join(map(str, SEEDS)), "folds per seed": FOLDS,
    "train / validation clips per fold": " or ".join(sorted({
        f"{len(m.split.y_train)} / {len(m.split.y_val)}" for m in members})),
    "pairs (seed × fold)": len(members), "runs": 2 * len(members),
    "epoch cap / plateau window / first stop": f"{EPOCHS} / {TAIL} / {MIN_EPOCHS}",
})
display(design.to_frame("value"))

# %% [markdown]
# ## Is this condition learnable at all?
#
# Before any comparison: a cross-validated logistic regression on the same log-mel features (each clip flattened), with the first seed's folds, tested against chance by `gradkit.stats.above_chance` (`gradkit.analysis.learnability`). The runs' share at chance joins it once they are trained; where neither beats chance, no objective comparison is made.

# %%
baseline = analysis.learnability.baseline_accuracy(fold_sets[SEEDS[0]].splits, n_classes)
display(pd.Series(baseline.fold_accuracies, name="baseline validation accuracy")
        .rename_axis(f"fold (seed {SEEDS[0]})").to_frame())
display(Markdown(f"- Baseline, every clip validated once: {baseline.chance.sentence()}."))

# %%
import gradkit.analysis.sweep

start = time.perf_counter()
REF_WEIGHT = TrainConfig().rank_weight  # every run's losses are compared at this ranking weight
nested = {name: analysis.sweep.nested_runs(
    TrainConfig(material=MATERIAL, freq_hz=FREQ_HZ, objective=name, epochs=EPOCHS,
                data_root=DATA_ROOT), members, LRS, RANK_WEIGHTS, SWEEP_EPOCHS, SWEEP_MIN_EPOCHS,
    SWEEP_TAIL, window=TAIL, min_epochs=MIN_EPOCHS) for name in LABELS}
sweeps = {name: n.table for name, n in nested.items()}
chosen = {name: n.chosen for name, n in nested.items()}
ensembles = {name: n.result for name, n in nested.items()}
ensemble_seconds = time.perf_counter() - start
display(pd.DataFrame({LABELS[n]: pd.Series(list(c.values())).value_counts()
                      for n, c in chosen.items()}).fillna(0).astype(int)
        .rename_axis("chosen (learning rate, ranking weight): units"))
display(Markdown("\n".join(f"- {LABELS[n]}, chosen per unit on inner splits: "
                           f"{analysis.sweep.settings_text(c)}." for n, c in chosen.items())))
all_metrics = pd.concat([e.metrics for e in ensembles.values()], ignore_index=True)
stopped = {(name, *k): v for name, e in ensembles.items() for k, v in e.stopped.items()}
print(f"{sum(len(t) for t in sweeps.values())} sweep runs and {2 * len(members)} runs ready in "
      f"{ensemble_seconds:.1f} s in this session ("
      + ", ".join(f"{n}: trained in {e.seconds:.1f} s" for n, e in ensembles.items()) + ")")

# %% [markdown]
# ## Every run: where it stopped, whether it was still improving, whether it beat chance

# %%
summary = pd.concat([analysis.verdicts.run_summary(e.metrics, e.stopped, n_classes, tail=TAIL,
                                                   window=TAIL, rank_weight=REF_WEIGHT)
                     for e in ensembles.values()], ignore_index=True)
display(summary.set_index(["objective", "seed", "fold"]).round(3))
improving = summary[(summary.acc_trend == "still improving")
                    | (summary.loss_trend == "still improving")]
at_chance = summary[summary.chance == "at chance"]
lines = [f"- {LABELS[o]}: {int((g.stopped_by == 'plateau').sum())} of {len(g)} runs stopped "
         f"on the plateau test, {int((g.stopped_by == 'cap').sum())} at the cap of {EPOCHS} "
         f"epochs; {int(g.index.isin(improving.index).sum())} were still improving on "
         f"validation when stopped and {int((g.train_trend == 'still improving').sum())} on "
         f"their own training loss; {int(g.index.isin(at_chance.index).sum())} ended at "
         f"chance (1/{n_classes})." for o, g in summary.groupby("objective")]
share_improving = len(improving) / len(summary)
lines.append(f"- {len(improving)} of {len(summary)} runs ({share_improving:.0%}) were still "
             "improving when stopped: " + ("fewer than 10 %, so the verdicts below are at "
                                           "convergence" if share_improving
                                           < analysis.verdicts.CONVERGED_SHARE else
                                           "10 % or more, so the verdicts below are not at "
                                           "convergence (raise `EPOCHS`)") + ".")
display(Markdown("\n".join(lines)))

# %%
gate = analysis.learnability.learnability_gate(baseline, summary.chance)
display(Markdown(f"**Learnability: {gate.sentence()}.**"
                 + ("" if gate.comparable else f" **{analysis.learnability.NOT_COMPARABLE}**: "
                    "the objectives are not compared below.")))
show_headlines(learnability=gate.headline())

# %% [markdown]
# ## GHM against raw, pair by pair

# %%
primary = [("final_val_acc", True, 100, "pp", "validation accuracy at the last epoch"),
           ("final_val_raw_loss", False, 1, "",
            f"raw validation loss at the last epoch (ranking weight {REF_WEIGHT:g})"),
           ("tail_val_acc", True, 100, "pp", f"mean validation accuracy, last {TAIL} epochs"),
           ("final_val_ghm_loss", False, 1, "",
            f"GHM validation loss at the last epoch (ranking weight {REF_WEIGHT:g})")]
results = {m: analysis.verdicts.compare_objectives(summary, m, "ghm", "raw", hib, LABELS, unit)
           for m, hib, _, unit, _ in primary} if gate.comparable else {}
if gate.comparable:
    display(pd.DataFrame([{"metric": what, **results[m].as_row(scale)}
                          for m, _, scale, _, what in primary]).set_index("metric").round(4))
    display(Markdown("\n".join(
        f"- {what}: {analysis.verdicts.verdict_sentence(results[m], scale=scale, digits=1 if scale > 1 else 3)}."
        for m, _, scale, _, what in primary)))
else:
    print(analysis.learnability.NOT_COMPARABLE)

# %%
panels = []
for m, _, scale, unit, what in primary[:2] if gate.comparable else []:
    a, b, units = analysis.verdicts.paired_values(summary, m, "ghm", "raw")
    panels.append({"diffs": (a - b) * scale, "groups": [f"seed {s}" for s, _ in units],
                   "result": results[m], "scale": scale,
                   "ylabel": f"GHM \u2212 raw: {what}" + (f" [{unit}]" if unit else "")})
if panels:
    fig = plt.figure(figsize=(11, 4.2))
    plot_paired_differences(fig, panels, title=f"{MATERIAL} / {FREQ_HZ} Hz: GHM \u2212 raw per "
                            f"(seed, fold), {len(members)} pairs")
    publish(fig, "ghm_paired_differences.png")
else:
    print(f"no paired-differences figure: {analysis.learnability.NOT_COMPARABLE}")

# %% [markdown]
# ## Learning speed: a separate result
#
# How fast each objective leaves chance at this learning rate, apart from where it ends (`gradkit.analysis.speed`): the first epoch whose validation accuracy is above chance (exact test) two epochs in a row (censored at the window's end + 1 when it never does), and the area under the validation-accuracy curve over the same first epochs for every run (the mean accuracy over them). Compared pair by pair; this speaks of the speed of learning, not of the trained model.

# %%
import gradkit.analysis.speed

SPEED_UPTO = int(min(MIN_EPOCHS, summary.end_epoch.min()))
speed = analysis.speed.speed_summary(all_metrics, n_classes, upto=SPEED_UPTO)
speed_metrics = [("epochs_to_leave_chance", False, 1, "epochs", "epochs to leave chance"),
                 ("val_acc_area", True, 100, "pp",
                  f"mean validation accuracy over epochs 1–{SPEED_UPTO} (area under the curve)")]
speed_results = {m: analysis.verdicts.compare_objectives(speed, m, "ghm", "raw", hib, LABELS, unit)
                 for m, hib, _, unit, _ in speed_metrics} if gate.comparable else {}
display(speed.groupby("objective")[["epochs_to_leave_chance", "left_chance", "val_acc_area"]]
        .mean().rename(index=LABELS).round(3))
if gate.comparable:
    display(Markdown("\n".join(
        f"- Learning speed, {what}: "
        f"{analysis.verdicts.verdict_sentence(speed_results[m], scale=scale, digits=1)}."
        for m, _, scale, _, what in speed_metrics)))
else:
    print(analysis.learnability.NOT_COMPARABLE)

# %% [markdown]
# ## The ablation: which GHM term stalls learning?
#
# Four objectives from the same initial weights on the same batches per (seed, fold) of the first `ABLATION_SEEDS` seeds, each at its own setting, read over the first `ABLATION_EPOCHS` epochs: CE + raw ranking (raw) and GHM-C + GHM ranking (GHM) are the comparison's runs above, at their chosen settings; GHM-C + raw ranking and CE + GHM ranking each choose their own learning rate per unit on the same inner splits, over the same `ABLATION_EPOCHS` window, among the rates raw and GHM chose for that unit (a hybrid carries one term of each; where they agree there is nothing to choose and no sweep run), at the ranking weight chosen for the objective whose ranking term they carry (`gradkit.analysis.ablation.hybrid_candidates`). Each is compared with raw on the epochs it takes to leave chance (`gradkit.analysis.ablation`, `gradkit.stats.compare_paired`); the sentence naming the culprit is generated from those paired verdicts.

# %%
import gradkit.analysis.ablation

ablation_members = [m for m in members if m.seed in SEEDS[:ABLATION_SEEDS]]
ablation_units = [(m.seed, m.fold) for m in ablation_members]
ABLATION_UPTO = int(min(ABLATION_EPOCHS, summary.end_epoch.min()))  # every arm logs these epochs
ablation_chosen = {n: {u: chosen[n][u] for u in ablation_units} for n in LABELS}
in_units = pd.MultiIndex.from_frame(all_metrics[["seed", "fold"]]).isin(ablation_units)
ablation_metrics = [all_metrics[in_units]]  # raw and GHM: the comparison's own runs
hybrids = analysis.ablation.train_hybrids(
    TrainConfig(material=MATERIAL, freq_hz=FREQ_HZ, data_root=DATA_ROOT), ablation_members,
    chosen, ABLATION_UPTO, window=TAIL, tail=SWEEP_TAIL)
ablation_sweeps = {arm: table for arm, (table, _, _) in hybrids.items()}
ablation_chosen.update({arm: picked for arm, (_, picked, _) in hybrids.items()})
ablation_runs = {arm: result for arm, (_, _, result) in hybrids.items()}
ablation_metrics += [result.metrics for result in ablation_runs.values()]
ablation_speed = analysis.speed.speed_summary(pd.concat(ablation_metrics, ignore_index=True),
                                              n_classes, upto=ABLATION_UPTO)
display(ablation_speed.groupby("objective")[["epochs_to_leave_chance", "left_chance",
                                             "val_acc_area"]].mean()
        .loc[list(analysis.ablation.ABLATION)].rename(index=analysis.ablation.ABLATION).round(3))
ablation_results = (analysis.ablation.ablation_comparisons(ablation_speed)
                    if gate.comparable else {})
ablation_verdict = (analysis.ablation.stall_sentence(ablation_results) if gate.comparable
                    else analysis.learnability.NOT_COMPARABLE)

# %%
if gate.comparable:
    display(pd.DataFrame([{"objective": analysis.ablation.ABLATION[n], **r.as_row(1)}
                          for n, r in ablation_results.items()]).set_index("objective").round(3))
ablation_settings = "; ".join(f"{analysis.ablation.ABLATION[n]}: {analysis.sweep.settings_text(c)}"
                              for n, c in ablation_chosen.items())
display(Markdown(f"**Ablation** ({len(ablation_members)} (seed, fold) pairs, the first "
                 f"{ABLATION_UPTO} epochs, each arm at its own chosen setting: "
                 f"{ablation_settings}): {ablation_verdict}."))

# %% [markdown]
# ## One pair up close: seed and fold of the single-run figures
#
# The figures below show one pair, the first seed's fold 0, trained by `gradkit.training.get_run` (stored checkpoints, GHM diagnostics every epoch) for `STUDY_EPOCHS` epochs, whatever the ensemble's cap: the study's GHM report names its figures after epochs 1, 31 and 60 of a 60-epoch run, and its early / middle / late epochs are `1`, `STUDY_EPOCHS // 2 + 1` and `STUDY_EPOCHS`. With three folds its split is the one `load_split` gives for that seed (checked below) and its runs are the ensemble's members of that unit: the same computation, whose floating-point rounding (batched convolutions sum in another order) training amplifies over the epochs (the gap is printed below).

# %%
FIG_SEED = SEEDS[0]
is_fold0 = fold_sets[FIG_SEED].fold0_is_load_split  # True when the folds cut thirds per class
configs = {name: TrainConfig(material=MATERIAL, freq_hz=FREQ_HZ, objective=name, epochs=STUDY_EPOCHS,
                             seed=FIG_SEED, split_seed=FIG_SEED, data_root=DATA_ROOT,
                             lr=chosen[name][(FIG_SEED, 0)][0],  # fold 0's chosen setting
                             rank_weight=chosen[name][(FIG_SEED, 0)][1])
           for name in LABELS}
start = time.perf_counter()
runs = {name: get_run(cfg) for name, cfg in configs.items()}
train_seconds = time.perf_counter() - start
metrics = {name: run.metrics for name, run in runs.items()}
histories = {name: run.ghm_history for name, run in runs.items()}
split, ghm_run_id = runs["ghm"].split, runs["ghm"].run_id
print(f"single runs ready in {train_seconds:.1f} s: " + ", ".join(map(repr, runs.values())))
STAGE_EPOCHS = analysis.checks.study_stage_epochs(STUDY_EPOCHS)
print(f"early / middle / late epochs: {STAGE_EPOCHS}")
UNIT = (f"seed {FIG_SEED}, fold 0: one of {len(members)} pairs" if is_fold0
        else f"seed {FIG_SEED}, load_split's split (outside the {FOLDS}-fold study)")

# %%
if is_fold0:
    twin = {n: all_metrics[(all_metrics.objective == n) & (all_metrics.seed == FIG_SEED)
                           & (all_metrics.fold == 0)].set_index("epoch") for n in LABELS}
    single = {n: metrics[n].set_index("epoch") for n in LABELS}  # epochs both have
    gap = {n: (single[n].val_raw_loss - twin[n].val_raw_loss).dropna().abs() for n in LABELS}
    print(f"seed {FIG_SEED} fold 0 is load_split's split. |raw validation loss, single run - "
          "ensemble member|, largest in the first 5 epochs / over the epochs both ran "
          "(rounding, amplified by training): " + ", ".join(
              f"{n} {g.iloc[:5].max():.1e} / {g.max():.1e}" for n, g in gap.items()))
else:
    print(f"with {FOLDS} folds, fold 0 is not load_split's validation third: the single pair "
          "below is trained on load_split's split, outside the cross-validation")

# %%
# Same split and same initial weights: checked, not assumed.
same_start = analysis.checks.check_same_start(
    {name: run.data_hash for name, run in runs.items()},
    {name: build_model(cfg, split).state_dict() for name, cfg in configs.items()})
params = pd.DataFrame(
    {name: {**{k: (str(v) if isinstance(v, tuple) else v) for k, v in cfg.to_dict().items()},
            "run id": runs[name].run_id} for name, cfg in configs.items()})
params.loc["train / validation clips"] = f"{len(split.y_train)} / {len(split.y_val)}"
params.loc["same split, same initial weights"] = same_start
display(params)

# %% [markdown]
# ## Losses and accuracies of the single pair
#
# The best epoch below is picked on the same validation clips it is scored on: an optimistic number, shown for reference only; the verdicts above use the last epoch.

# %%
fig = plt.figure(figsize=(15, 4.2))
viz.ghm.plot_training_comparison(fig, metrics)
stamp_unit(fig, UNIT)
publish(fig, f"training_comparison_{ghm_run_id}.png")

fig = plt.figure(figsize=(9, 7))
viz.ghm.plot_loss_comparison_detailed(fig, metrics["ghm"], run_name="ghm")
stamp_unit(fig, UNIT)
publish(fig, "loss_comparison_detailed.png")

fig = plt.figure(figsize=(9, 4.5))
viz.ghm.plot_accuracy_trend(fig, metrics)
stamp_unit(fig, UNIT)
publish(fig, "accuracy_trend.png")

# %%
best = pd.DataFrame({name: analysis.ghm.best_epoch_summary(m) for name, m in metrics.items()}).T
best["epoch"] = best["epoch"].astype(int)
display(best.rename(columns={"best_val_acc": "best validation accuracy",
                             "train_acc": "train accuracy there",
                             "val_raw_loss": "raw validation loss there",
                             "val_ghm_loss": "GHM validation loss there"}))
ratio = {s: (metrics["ghm"][f"{s}_ghm_loss"] / metrics["ghm"][f"{s}_raw_loss"]).iloc[-1]
         for s in ("train", "val")}
print(f"seed {FIG_SEED}, fold 0; the best epoch is selected on the validation clips (optimistic)")
lines = [
    f"- The **{name}** run reached its best validation accuracy, {b['best_val_acc']:.1%}, at "
    f"epoch {b['epoch']:.0f}, with train accuracy {b['train_acc']:.1%}, raw validation loss "
    f"{b['val_raw_loss']:.3f} and GHM validation loss {b['val_ghm_loss']:.3f} (optimistic pick)."
    for name, b in best.iterrows()
]
lines.append(
    "- At the last epoch the GHM run's GHM loss is "
    + " and ".join(f"{ratio[s]:.2f}x its raw loss on the {where} set ("
                   + ("GHM weights shrink it" if ratio[s] < 1 else "GHM weights enlarge it") + ")"
                   for s, where in (("train", "training"), ("val", "validation")))
    + "."
)
display(Markdown("\n".join(lines)))

# %% [markdown]
# ## The gradient-norm density across training
#
# For every training sample, `g = 1 - p_true` is the norm of the cross-entropy gradient with respect to the true-class logit; for every ranking pair, `g = sigmoid(-z)`. GHM cuts `[0, 1]` into `bins` equal bins (the run's setting, printed below); the heat map shows, per epoch, which share of the samples (left) and pairs (right) falls in each bin.

# %%
bins = configs["ghm"].bins
print(f"{bins} GHM bins of width {1 / bins:g}")
fig = plt.figure(figsize=(13, 4.5))
viz.ghm.plot_gradient_density_evolution(fig, histories["ghm"], bins=bins, run_name="ghm")
stamp_unit(fig, UNIT)
publish(fig, "gradient_density_evolution.png")

# %%
epochs = [int(r["epoch"]) for r in histories["ghm"]]
density_scrubber = Scrubber(
    lambda fig, epoch: viz.ghm.plot_density_epoch(fig, histories, epoch, bins=bins),
    epochs, label="epoch", figsize=(11, 4),
)
display(density_scrubber)

# %% [markdown]
# ## GHM weights per bin: early, middle, late

# %%
fig = plt.figure(figsize=(13, 4.5))
viz.ghm.plot_ghm_weights_comparison(fig, histories["ghm"], bins=bins, run_name="ghm")
stamp_unit(fig, UNIT)
publish(fig, "ghm_weights_comparison.png")

# %%
by_epoch = {name: analysis.ghm.history_by_epoch(h) for name, h in histories.items()}
analysis.checks.check_epochs_logged(by_epoch, STAGE_EPOCHS)
hard_easy = pd.DataFrame(
    {(name, e): analysis.ghm.hard_easy_weights(by_epoch[name][e], HARD_G) for name in runs for e in STAGE_EPOCHS}
).T
hard_easy.index.names = ["run", "epoch"]
hard_easy = hard_easy.astype({"n_hard": int, "n_easy": int})
display(hard_easy)
early, late = hard_easy.loc[("ghm", STAGE_EPOCHS[0])], hard_easy.loc[("ghm", STAGE_EPOCHS[-1])]


def _weight_sentence(epoch, row):
    if row["n_hard"] == 0 or row["n_easy"] == 0:
        return f"at epoch {epoch} all samples were on one side of g = {HARD_G}"
    verb = "up-weighted" if row["hard_mean_w"] > row["easy_mean_w"] else "down-weighted"
    return (f"at epoch {epoch} GHM {verb} the hard samples (g >= {HARD_G}, {row['n_hard']:.0f} of "
            f"them, mean weight {row['hard_mean_w']:.2f}) relative to the easy ones "
            f"({row['n_easy']:.0f}, mean weight {row['easy_mean_w']:.2f})")


display(Markdown(f"In the GHM run, {_weight_sentence(STAGE_EPOCHS[0], early)}; "
                 f"{_weight_sentence(STAGE_EPOCHS[-1], late)}."))

# %% [markdown]
# ## Batch 0 of the early, middle and late epoch
#
# The GHM run's first batch of each of the three epochs: how many terms fall in each bin, and the weight GHM gave that bin.

# %%
print(f"epochs {STAGE_EPOCHS}, batch 0 of {len(by_epoch['ghm'][STAGE_EPOCHS[0]]['batch_sizes'])}")
for epoch in STAGE_EPOCHS:
    fig = plt.figure(figsize=(12, 4))
    viz.ghm.plot_batch_distribution(fig, by_epoch["ghm"][epoch], bins=bins, batch=0,
                                    title=f"ghm run {ghm_run_id}: epoch {epoch}, batch 0")
    stamp_unit(fig, UNIT)
    publish(fig, f"epoch{epoch}_batch0_{ghm_run_id}.png")

# %% [markdown]
# ## GHM statistics per epoch
#
# Per epoch of the GHM run, over all its training samples: count, mean, median, min, max and standard deviation of `g`; the most and the least populated bin with their share; and the spread of the bin shares (their standard deviation: 0 for a perfectly even spread, `sqrt(bins - 1) / bins` when everything sits in one bin).

# %%
stats = {name: analysis.ghm.ghm_stats_table(h, bins=bins) for name, h in histories.items()}
rank_stats = analysis.ghm.ghm_stats_table(histories["ghm"], bins=bins, head="rank_")
print(f"spread of the bin shares: 0 (even) to {(bins - 1) ** 0.5 / bins:.3f} (all in one of the "
      f"{bins} bins)")
for epoch in STAGE_EPOCHS:
    fig = plt.figure(figsize=(12, 4))
    viz.ghm.plot_ghm_stats(fig, by_epoch["ghm"][epoch], bins=bins,
                           title=f"ghm run: GHM statistics of epoch {epoch}")
    stamp_unit(fig, UNIT)
    publish(fig, f"ghm_stats_epoch_{epoch}.png")
print("classification g, GHM run, every epoch:")
display(stats["ghm"])
print(f"ranking pairs g, GHM run, epochs {' / '.join(map(str, STAGE_EPOCHS))}:")
display(rank_stats.loc[list(STAGE_EPOCHS)])

# %%
first, last = STAGE_EPOCHS[0], STAGE_EPOCHS[-1]
s = stats["ghm"]
spread_change = s.loc[last, "share_spread"] - s.loc[first, "share_spread"]
mean_change = s.loc[last, "mean"] - s.loc[first, "mean"]
raw_spread = stats["raw"].loc[last, "share_spread"]
display(Markdown(
    f"- Mean gradient norm of the GHM run: {s.loc[first, 'mean']:.3f} at epoch {first}, "
    f"{s.loc[last, 'mean']:.3f} at epoch {last} ("
    + ("the samples got easier" if mean_change < 0 else "the samples did not get easier")
    + ").\n"
    f"- The most populated bin was bin {s.loc[first, 'most_bin']:.0f} "
    f"({s.loc[first, 'most_share']:.0%} of the samples) at epoch {first} and bin "
    f"{s.loc[last, 'most_bin']:.0f} ({s.loc[last, 'most_share']:.0%}) at epoch {last}.\n"
    f"- The spread of the bin shares went from {s.loc[first, 'share_spread']:.3f} to "
    f"{s.loc[last, 'share_spread']:.3f}: the gradient-norm distribution became "
    + ("more even" if spread_change < 0 else "less even")
    + f" during GHM training (the raw run ends at {raw_spread:.3f}, "
    + ("so GHM's is the more even one" if s.loc[last, "share_spread"] < raw_spread
       else "so GHM's is not the more even one")
    + ")."
))

# %% [markdown]
# ## Conclusions
#
# Every verdict is `gradkit.stats.compare_paired` over the (seed, fold) pairs: GHM − raw with its 95 % interval, the p-value of the paired t-test, and the smallest difference this design detects with 80 % power. Accuracy differences are in percentage points (pp).

# %%
n_improving = int(len(improving))
best_mean = summary.groupby("objective").best_val_acc.mean()
lines = [f"- **Learnability**: {gate.sentence()}."]
if gate.comparable:
    acc, loss = results["final_val_acc"], results["final_val_raw_loss"]
    lines += [
        f"- **Validation accuracy at the last epoch**: {analysis.verdicts.verdict_sentence(acc, scale=100)}.",
        f"- **Raw validation loss at the last epoch**: {analysis.verdicts.verdict_sentence(loss, digits=3)}.",
        f"- GHM's own objective on the validation clips: "
        f"{analysis.verdicts.verdict_sentence(results['final_val_ghm_loss'], digits=3)}."]
else:
    lines.append(f"- **{analysis.learnability.NOT_COMPARABLE}**: the objectives are not compared.")

# %%
lines += [
    "- Settings chosen per unit on inner splits (units per value): " + "; ".join(
        f"{LABELS[n]} {analysis.sweep.settings_text(c)}" for n, c in chosen.items()) + ".",
    *(f"- Learning speed (a separate result), {what}: "
      f"{analysis.verdicts.verdict_sentence(speed_results[m], scale=scale)}."
      for m, _, scale, _, what in speed_metrics if gate.comparable),
    f"- Ablation, each arm at its own swept setting ({ablation_settings}): {ablation_verdict}.",
    f"- Training: {n_improving} of {len(summary)} runs were still improving on validation when "
    f"they stopped (cap {EPOCHS} epochs), {len(at_chance)} ended at chance; a verdict about runs "
    "that were still improving is a verdict at this training budget, not at convergence.",
    f"- The best-epoch accuracies (mean over runs: raw {best_mean['raw']:.1%}, GHM "
    f"{best_mean['ghm']:.1%}) are selected on the validation clips themselves: not compared.",
    f"- Training the {2 * len(members)} runs (or finding them again) took "
    f"{ensemble_seconds:.1f} s, the single pair {train_seconds:.1f} s in this session.",
]
display(Markdown("\n".join(lines)))

# %% [markdown]
# ## The cost of this notebook, counted
#
# Counted, not timed (a timing depends on the machine and its load): per stage, the runs, their member-epochs (one run trained for one epoch; a run stopped early costs only its epochs) and the clip-epochs they pass (training clips, each a forward and a backward pass; validation clips, a forward pass). A stored result found again costs nothing in a later session; these counts are the work of training it.

# %%
sizes = analysis.sweep.unit_sizes(members)
inner_sizes = analysis.sweep.unit_sizes(members, inner=True)
fig_unit = {(FIG_SEED, -1): (len(split.y_train), len(split.y_val))}  # the single pair's split
work = pd.DataFrame([analysis.sweep.work_row(*row) for row in [
    ("sweep, raw and GHM (inner splits)", analysis.sweep.sweep_epochs(sweeps.values()),
     inner_sizes),
    ("comparison runs, raw and GHM", analysis.sweep.metrics_epochs([all_metrics]), sizes),
    ("ablation sweep, the two hybrids (inner splits)",
     analysis.sweep.sweep_epochs(ablation_sweeps.values()), inner_sizes),
    ("ablation runs, the two hybrids",
     analysis.sweep.metrics_epochs([r.metrics for r in ablation_runs.values()]), sizes),
    ("single pair (get_run, GHM diagnostics)", [((FIG_SEED, -1), STUDY_EPOCHS)] * 2, fig_unit),
]]).set_index("stage")
work.loc["total"] = work.sum()
display(work)

# %% [markdown]
# The paragraph the README's "How hard is it?" quotes, generated from this session's numbers (`gradkit.analysis.verdicts.study_paragraph`):

# %%
paragraph = analysis.verdicts.study_paragraph(
    condition=f"{MATERIAL} / {FREQ_HZ} Hz", learnability=gate.sentence(),
    comparable=gate.comparable, seeds=len(SEEDS), folds=FOLDS,
    settings={LABELS[n]: analysis.sweep.settings_text(c) for n, c in chosen.items()}, cap=EPOCHS,
    n_improving=n_improving, n_runs=len(summary),
    at_chance={LABELS[o]: int((g.chance == "at chance").sum())
               for o, g in summary.groupby("objective")},
    accuracy=results.get("final_val_acc"), speed=speed_results.get("epochs_to_leave_chance"),
    ablation=ablation_verdict)
display(Markdown(f"> {paragraph}"))

# %%
# Every figure of the study's GHM report was written by this session, under its exact name.
expected = [f"training_comparison_{ghm_run_id}.png", "loss_comparison_detailed.png",
            "accuracy_trend.png", "gradient_density_evolution.png", "ghm_weights_comparison.png",
            *(f"epoch{e}_batch0_{ghm_run_id}.png" for e in STAGE_EPOCHS),
            *(f"ghm_stats_epoch_{e}.png" for e in STAGE_EPOCHS),
            *(["ghm_paired_differences.png"] if gate.comparable else [])]
published = figures_written()
analysis.checks.check_figures_written(expected, published)
print(f"{len(published)} figures written to {figures_dir()}: {', '.join(published)}")
print(f"notebook body ran in {time.perf_counter() - NOTEBOOK_START:.1f} s")

# %%
comparison = {
    "GHM − raw, val accuracy (last epoch)": analysis.verdicts.headline_verdict(acc, scale=100),
    "GHM − raw, raw val loss (last epoch)": analysis.verdicts.headline_verdict(loss, digits=3),
    "GHM − raw, learning speed (epochs to leave chance)": analysis.verdicts.headline_verdict(
        speed_results["epochs_to_leave_chance"]),
} if gate.comparable else {"GHM − raw": analysis.learnability.NOT_COMPARABLE}
show_headlines(**{
    "learnability": gate.headline(), **comparison, "ablation (stall at chance)": ablation_verdict,
    "chosen settings (units)": "; ".join(f"{LABELS[n]}: {analysis.sweep.settings_text(c)}"
                                         for n, c in chosen.items()),
    "design": f"{len(SEEDS)} seeds × {FOLDS} folds = {len(members)} pairs, cap {EPOCHS} epochs",
    "runs still improving when stopped": f"{n_improving} of {len(summary)}",
    "runs at chance": f"{len(at_chance)} of {len(summary)}",
})
