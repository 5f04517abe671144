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
# # Training with and without the Gradient Harmonizing Mechanism
#
# Does a GHM loss help against the easy/hard-sample imbalance? We train the same ResNetAudioRanker from the same seed, split and initial weights twice on the plastic / 3000 Hz recordings: once with cross-entropy + ranking, once with GHM-C + GHM ranking, and compare.

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

# %%
import time

import pandas as pd
from IPython.display import Markdown, display

from gradkit.analysis import ghm as ga
from gradkit.core.params import count_parameters
from gradkit.training import TrainConfig, build_model, get_run
from gradkit.viz import ghm as gv
from gradkit.viz.figures import figures_written, publish
from gradkit.viz.scrubber import Scrubber

pd.set_option("display.precision", 4)
TAIL = 10  # the verdict compares the mean validation accuracy of the last TAIL epochs
HARD_G = 0.5  # a sample is "hard" when its gradient norm g = 1 - p_true is at least this


# %% [markdown]
# ## The two runs
#
# Both runs share every setting but the objective:
#
# - **raw**: `CE(logits, y) + rank_weight * R(s, angle)`, with the smooth pairwise ranking loss `R = mean softplus(-(s_j - s_i - margin))` over pairs with `angle_i < angle_j`;
# - **ghm**: `GHMC(logits, y) + rank_weight * GHMRanking(s, angle)`: each term is re-weighted by `tot / (EMA count of its gradient-norm bin) / (non-empty bins)`, so crowded bins (usually the easy samples) count less.
#
# Each run logs the raw *and* the GHM value of its loss on train and validation every epoch (the raw run's GHM value comes from shadow GHM modules that follow its trajectory; evaluation never updates the EMA). `gradkit.training.get_run` trains a run once and afterwards finds it again by its configuration.

# %%
configs = {name: TrainConfig(material="plastic", freq_hz=3000, objective=name)
           for name in ("raw", "ghm")}
start = time.perf_counter()
runs = {name: get_run(cfg) for name, cfg in configs.items()}
train_seconds = time.perf_counter() - start
metrics = {name: run.metrics for name, run in runs.items()}
histories = {name: run.ghm_history for name, run in runs.items()}
split = runs["ghm"].split
ghm_run_id = runs["ghm"].run_id
print(f"both runs ready in {train_seconds:.1f} s: " + ", ".join(map(repr, runs.values())))
# Early / middle / late: the first, the middle and the last epoch (1, 31 and 60 at the default
# 60 epochs, the study's choice); the same rule as ghm_weights_comparison.png uses.
STAGE_EPOCHS = tuple(ga.stage_epochs(metrics["ghm"]["epoch"]).values())
print(f"early / middle / late epochs: {STAGE_EPOCHS}")

# %%
# Same split and same initial weights: checked, not assumed.
same_data = runs["raw"].data_hash == runs["ghm"].data_hash
init = {name: build_model(cfg, split).state_dict() for name, cfg in configs.items()}
same_init = all(torch.equal(init["raw"][k], init["ghm"][k]) for k in init["raw"])
assert same_data and same_init, "the two runs must start from the same data and weights"
model = runs["ghm"].load_model()
print(f"ResNetAudioRanker(widths={configs['ghm'].widths}): {count_parameters(model):,} parameters, "
      f"{count_parameters(model, trainable_only=True):,} trainable")
params = pd.DataFrame(
    {name: {**{k: (str(v) if isinstance(v, tuple) else v) for k, v in cfg.to_dict().items()},
            "run id": runs[name].run_id} for name, cfg in configs.items()}
)
params.loc["model parameters"] = count_parameters(model)
params.loc["train / validation clips"] = f"{len(split.y_train)} / {len(split.y_val)}"
params.loc["input shape"] = str(tuple(split.input_shape))
params.loc["same split, same initial weights"] = same_data and same_init
display(params)

# %% [markdown]
# ## Losses and accuracies

# %%
fig = plt.figure(figsize=(15, 4.2))
gv.plot_training_comparison(fig, metrics)
publish(fig, f"training_comparison_{ghm_run_id}.png")

fig = plt.figure(figsize=(9, 7))
gv.plot_loss_comparison_detailed(fig, metrics["ghm"], run_name="ghm")
publish(fig, "loss_comparison_detailed.png")

fig = plt.figure(figsize=(9, 4.5))
gv.plot_accuracy_trend(fig, metrics)
publish(fig, "accuracy_trend.png")

# %%
best = pd.DataFrame({name: ga.best_epoch_summary(m) for name, m in metrics.items()}).T
best["epoch"] = best["epoch"].astype(int)
display(best.rename(columns={"best_val_acc": "best validation accuracy",
                             "train_acc": "train accuracy there",
                             "val_raw_loss": "raw validation loss there",
                             "val_ghm_loss": "GHM validation loss there"}))
ratio = {s: (metrics["ghm"][f"{s}_ghm_loss"] / metrics["ghm"][f"{s}_raw_loss"]).iloc[-1]
         for s in ("train", "val")}
lines = [
    f"- The **{name}** run reached its best validation accuracy, {b['best_val_acc']:.1%}, at "
    f"epoch {b['epoch']:.0f}, with train accuracy {b['train_acc']:.1%}, raw validation loss "
    f"{b['val_raw_loss']:.3f} and GHM validation loss {b['val_ghm_loss']:.3f}."
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
gv.plot_gradient_density_evolution(fig, histories["ghm"], bins=bins, run_name="ghm")
publish(fig, "gradient_density_evolution.png")

# %%
epochs = [int(r["epoch"]) for r in histories["ghm"]]
density_scrubber = Scrubber(
    lambda fig, epoch: gv.plot_density_epoch(fig, histories, epoch, bins=bins),
    epochs, label="epoch", figsize=(11, 4),
)
display(density_scrubber)

# %% [markdown]
# ## GHM weights per bin: early, middle, late

# %%
fig = plt.figure(figsize=(13, 4.5))
gv.plot_ghm_weights_comparison(fig, histories["ghm"], bins=bins, run_name="ghm")
publish(fig, "ghm_weights_comparison.png")

by_epoch = {name: ga.history_by_epoch(h) for name, h in histories.items()}
missing = [(name, e) for name in runs for e in STAGE_EPOCHS if e not in by_epoch[name]]
assert not missing, f"(run, epoch) without GHM diagnostics: {missing}"
hard_easy = pd.DataFrame(
    {(name, e): ga.hard_easy_weights(by_epoch[name][e], HARD_G) for name in runs for e in STAGE_EPOCHS}
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
    gv.plot_batch_distribution(fig, by_epoch["ghm"][epoch], bins=bins, batch=0,
                               title=f"ghm run {ghm_run_id}: epoch {epoch}, batch 0")
    publish(fig, f"epoch{epoch}_batch0_{ghm_run_id}.png")

# %% [markdown]
# ## GHM statistics per epoch
#
# Per epoch of the GHM run, over all its training samples: count, mean, median, min, max and standard deviation of `g`; the most and the least populated bin with their share; and the spread of the bin shares (their standard deviation: 0 for a perfectly even spread, `sqrt(bins - 1) / bins` when everything sits in one bin).

# %%
stats = {name: ga.ghm_stats_table(h, bins=bins) for name, h in histories.items()}
rank_stats = ga.ghm_stats_table(histories["ghm"], bins=bins, head="rank_")
print(f"spread of the bin shares: 0 (even) to {(bins - 1) ** 0.5 / bins:.3f} (all in one of the "
      f"{bins} bins)")
for epoch in STAGE_EPOCHS:
    fig = plt.figure(figsize=(12, 4))
    gv.plot_ghm_stats(fig, by_epoch["ghm"][epoch], bins=bins,
                      title=f"ghm run: GHM statistics of epoch {epoch}")
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
# **Criterion.** GHM *helped* if the GHM run's mean validation accuracy over the last `TAIL` epochs exceeds the raw run's by at least one validation clip (`1 / n_val`); a difference smaller than one clip is not measurable on this validation set. (Accuracy differences below are in percentage points, pp.)

# %%
display(Markdown(f"Here `TAIL` = {TAIL} epochs and one clip = 1 / {len(split.y_val)} = "
                 f"{1 / len(split.y_val):.1%} of validation accuracy."))
gains = ga.accuracy_gain_table(metrics)
display(gains.rename(columns={"initial": "initial val acc", "final": "final val acc",
                              "gain": "gain"}))
verdict = ga.compare_runs(metrics["raw"], metrics["ghm"], n_val=len(split.y_val), last=TAIL)
changes = {name: ga.loss_change(m) for name, m in metrics.items()}
if verdict["helped"]:
    outcome = "**GHM helped**"
elif verdict["hurt"]:
    outcome = "**GHM did not help**: it did measurably worse than the raw objective"
else:
    outcome = "**GHM did not help**: the difference is smaller than one validation clip"
lines = [
    f"- Validation accuracy (epoch {gains.loc['raw', 'initial_epoch']:.0f} -> "
    f"{gains.loc['raw', 'final_epoch']:.0f}): raw run {gains.loc['raw', 'initial']:.1%} -> "
    f"{gains.loc['raw', 'final']:.1%} (gain {100 * gains.loc['raw', 'gain']:+.1f} pp); GHM run "
    f"{gains.loc['ghm', 'initial']:.1%} -> {gains.loc['ghm', 'final']:.1%} "
    f"(gain {100 * gains.loc['ghm', 'gain']:+.1f} pp).",
    f"- Mean validation accuracy over the last {verdict['last']} epochs: raw "
    f"{verdict['raw_tail_acc']:.1%}, GHM {verdict['ghm_tail_acc']:.1%}; difference "
    f"{100 * verdict['delta']:+.1f} pp against a resolution of one clip = "
    f"{100 * verdict['resolution']:.1f} pp. "
    f"{outcome}.",
    f"- Best validation accuracy: raw {best.loc['raw', 'best_val_acc']:.1%} (epoch "
    f"{best.loc['raw', 'epoch']:.0f}), GHM {best.loc['ghm', 'best_val_acc']:.1%} (epoch "
    f"{best.loc['ghm', 'epoch']:.0f}); with {len(split.y_val)} validation clips a best-epoch "
    f"maximum is an optimistic pick, which is why the criterion uses the last epochs.",
]
for name, c in changes.items():
    lines.append(f"- Training loss of the {name} run from the first to the last epoch: raw loss "
                 f"{'down' if c['raw'] > 0 else 'up'} by {abs(c['raw']):.3f}, GHM loss "
                 f"{'down' if c['ghm'] > 0 else 'up'} by {abs(c['ghm']):.3f}.")
lines.append(f"- Getting both runs (training them, or finding them again) took "
             f"{train_seconds:.1f} s in this session.")
display(Markdown("\n".join(lines)))

# %%
# Every figure of the study's GHM report was written by this session, under its exact name.
expected = [f"training_comparison_{ghm_run_id}.png", "loss_comparison_detailed.png",
            "accuracy_trend.png", "gradient_density_evolution.png", "ghm_weights_comparison.png",
            *(f"epoch{e}_batch0_{ghm_run_id}.png" for e in STAGE_EPOCHS),
            *(f"ghm_stats_epoch_{e}.png" for e in STAGE_EPOCHS)]
published = figures_written()
not_written = [n for n in expected if n not in published]
assert not not_written, f"figures not written: {not_written}"
print(f"{len(published)} figures written to {figures_dir()}: {', '.join(published)}")

# %%
from gradkit.report.headlines import show_headlines

show_headlines(**{
    "best val accuracy, raw": f"{best.loc['raw', 'best_val_acc']:.1%} (epoch {best.loc['raw', 'epoch']:.0f})",
    "best val accuracy, GHM": f"{best.loc['ghm', 'best_val_acc']:.1%} (epoch {best.loc['ghm', 'epoch']:.0f})",
    f"last-{verdict['last']}-epoch val accuracy, raw / GHM": f"{verdict['raw_tail_acc']:.1%} / {verdict['ghm_tail_acc']:.1%}",
    "GHM verdict": ("helped" if verdict["helped"] else "did not help (measurably worse)"
                    if verdict["hurt"] else "did not help (no measurable difference)"),
})
