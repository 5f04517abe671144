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
# # The gradient noise scale across training
#
# How consistent are batch gradients across training? From exact per-sample gradients at every checkpoint we compute the gradient noise scale, the simple critical batch size and their confidence intervals — for the objective the runs trained, with the cross-entropy-only value beside it.

# %% tags=["parameters"]
DATA_ROOT = None  # a folder <material>/<freq>hz/deg<angle:03d>/*.wav; None = the synthetic set
MATERIAL = "plastic"
FREQ_HZ = 3000
EPOCHS = 60  # of the GHM runs (the prompt run's trunk comes from a raw run of as many epochs)
PROMPT_EPOCHS = 30
N_BOOT = 1000
DDP_EPOCHS = 6  # the short two-process DDP training of the last section (0 switches it off)
RUN = None  # a folder recorded by gradkit.track.Tracker (make report RUN=…); None = the study

# %%
# Set-up: every path resolves from the project root, so this runs from any working directory.
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display

# %%
import gradkit
import gradkit.analysis.advice
import gradkit.viz.noise
from gradkit import analysis, viz
from gradkit.analysis.noise import KINDS, checkpoint_noise_scales, run_gns_variants, sample_gram
from gradkit.core.device import pick_device
from gradkit.core.params import count_parameters, num_trainable
from gradkit.core.paths import figures_dir
from gradkit.data import list_conditions
from gradkit.distributed.compare import short_ddp_study
from gradkit.grads.noise import gns_monte_carlo, noise_scale
from gradkit.report.headlines import show_headlines
from gradkit.training import TrainConfig, get_run
from gradkit.viz.distributed import plot_ddp_b_simple
from gradkit.viz.figures import publish
from gradkit.viz.scrubber import Scrubber

print(f"gradkit {gradkit.__version__}, torch {torch.__version__}, device {pick_device()}; "
      f"figures go to {figures_dir()}")
torch.set_num_threads(1)  # small kernels on a shared machine: one thread is as fast, steadier
t_start = time.perf_counter()
SEED = 0
STUDY_GNS = {5: 0.000015, 10: 0.000015, 15: 0.000022, 20: 0.000042, 25: 0.000066, 30: 0.000038}
pd.set_option("display.precision", 4)

# %% [markdown]
# ## What is measured
#
# At a checkpoint with parameters $\theta$, take the training split $D$ ($N$ clips) and exact per-sample gradients $G_i = \nabla_\theta l_i(\theta)$ over every parameter the run trains. With $g_D = \frac1N\sum_i G_i$ (`gradkit.grads.noise`):
#
# - $\|g_D\|^2$, the signal; $\operatorname{tr}\Sigma = \frac1N\sum_i \|G_i - g_D\|^2$, the per-sample noise;
# - **GNS** $= \mathbb{E}_B\|g_B - g_D\|^2 / \|g_D\|^2 = \frac{\operatorname{tr}\Sigma}{B}\,\frac{N-B}{N-1}\,/\,\|g_D\|^2$ for the run's batches of $B$ clips drawn without replacement (the study's definition): 1 means as much noise as signal;
# - $B_\text{simple} = \operatorname{tr}\Sigma / \|g_D\|^2$ (McCandlish et al., 2018), the batch size at which that noise equals the signal.
#
# **Which loss.** The runs trained GHM-C + $\lambda$ GHM ranking. Its per-sample gradient (`gradkit.analysis.objective_grads`) is defined within the run's batches of the next epoch: the GHM-C weight $w_k$ a clip gets from the checkpoint's EMA state (frozen), and each clip's share of its ranking pairs, $c_k \nabla_\theta s_k$ with $c_k = |b|\,\partial R_b/\partial s_k$, so that $l_k = w_k\,\mathrm{CE}_k + \lambda c_k s_k$ and the mean over a batch is exactly that batch's training gradient. The cross-entropy-only value (`gradkit.training.sample_loss`) is shown beside it, labelled. 95 % intervals: bootstrap over the clips ($N_\text{boot}$ printed below).

# %% [markdown]
# ## The two runs, checkpoint by checkpoint

# %%
base = dict(material=MATERIAL, freq_hz=FREQ_HZ, data_root=DATA_ROOT)
runs = {"GHM, full training": get_run(TrainConfig(objective="ghm", epochs=EPOCHS, **base)),
        "prompt tuning (study)": get_run(TrainConfig(mode="prompt", epochs=PROMPT_EPOCHS,
                                                     base_epochs=EPOCHS, **base))}
trends, norms = {}, {}
for name, run in runs.items():
    trends[name] = {}
    for kind in KINDS:
        trends[name][kind], norms[name, kind] = checkpoint_noise_scales(
            run, kind, n_boot=N_BOOT, seed=SEED)
status = {name: analysis.advice.status_of_run(run) for name, run in runs.items()}
ghm_run = runs["GHM, full training"]
N, B = len(ghm_run.split.y_train), ghm_run.config.batch_size
print(f"N = {N} training clips, batch size B = {B}, {N_BOOT} bootstrap resamples; trainable "
      "parameters: " + ", ".join(f"{k}: {num_trainable(r.load_model())}" for k, r in runs.items()))
for name, st in status.items():
    display(Markdown(f"**{name}** ({runs[name].config.folder_name}): {st.sentence}"
                     + (" — **failed run**" if st.failed else "")))

# %% [markdown]
# ## Is this condition learnable at all?
#
# Before reading any statistic: a cross-validated logistic regression on the same log-mel features (each clip flattened, notebook 01's folds), tested against chance by `gradkit.stats.above_chance`, next to each of this notebook's two runs at its last epoch (`gradkit.analysis.learnability`).

# %%
import gradkit.analysis.learnability

gate = analysis.learnability.learnability_gate(
    analysis.learnability.condition_baseline(MATERIAL, FREQ_HZ, DATA_ROOT, seed=ghm_run.config.split_seed),
    analysis.learnability.run_verdicts(runs.values()))
display(Markdown(analysis.learnability.gate_markdown(gate, "the noise scales below describe an untrained model")))
show_headlines(learnability=gate.headline())

# %%
def side_by_side(kinds, run):
    """Epoch | GNS and B_simple with intervals, trained objective and CE only | val acc."""
    cols = {}
    for kind, t in kinds.items():
        cols[f"GNS ({kind})"] = [f"{g:.3g} [{a:.3g}, {b:.3g}]" for g, a, b in
                                 zip(t.gns, t.gns_lo, t.gns_hi, strict=True)]
        cols[f"B_simple ({kind})"] = [f"{g:.3g} [{a:.3g}, {b:.3g}]" for g, a, b in
                                      zip(t.b_simple, t.b_simple_lo, t.b_simple_hi, strict=True)]
    epochs = kinds["objective"].epoch
    val = run.metrics.set_index("epoch").val_acc
    return pd.DataFrame({"epoch": epochs, **cols, "val acc": epochs.map(val)}).set_index("epoch")


for name, kinds in trends.items():
    display(Markdown(f"**{name}**" + (" (failed run)" if status[name].failed else "")))
    display(side_by_side(kinds, runs[name]))

# %% [markdown]
# ### Is the closed form right here?
#
# On the objective's per-sample gradients at the last GHM checkpoint, the closed form is checked against thousands of sampled batches of the run's size without replacement (the study's definition taken literally).

# %%
last_epoch = ghm_run.checkpoint_epochs[-1]
G_last = sample_gram(ghm_run, last_epoch, "objective")
exact = noise_scale(G_last, B, n_boot=0).gns
N_DRAWS = 4000
sampled = gns_monte_carlo(G_last, B, draws=N_DRAWS, seed=SEED)
display(Markdown(f"Closed form {exact:.4g} vs {sampled:.4g} from {N_DRAWS} sampled batches of "
                 f"{B} ({abs(sampled / exact - 1):.1%} apart), epoch {last_epoch}."))

# %% [markdown]
# ### Why are the study's numbers so much smaller?
#
# The study reported GNS between the values below for its prompt-tuning run. We compute, on the prompt run's objective gradients at the study's epochs, the definitions that could have produced a far smaller number (`gradkit.analysis.noise.gns_variants`): a "batch" as large as $D$ drawn with replacement; gradients of normalised directions; the numerator averaged over the parameters instead of summed (over the trained ones, and over all of the model's); only the prompt's parameters. A variant *reproduces* the study when the median ratio ours / study lies within a factor 3 (`gradkit.analysis.advice.reproduces`).

# %%
prompt_run = runs["prompt tuning (study)"]
model = prompt_run.load_model()
study_epochs = [e for e in prompt_run.checkpoint_epochs if e in STUDY_GNS]
variants = pd.DataFrame({e: run_gns_variants(prompt_run, e, B, {"prompt": "prompt."},
                                             p_total=count_parameters(model))
                         for e in study_epochs})
reported = [STUDY_GNS[e] for e in study_epochs]
verdicts = {v: analysis.advice.reproduces(variants.loc[v].to_numpy(), reported) for v in variants.index}
shown = pd.concat([pd.DataFrame([reported], index=["study (reported)"], columns=study_epochs),
                   variants])
shown["median ours / study"] = [1.0] + [verdicts[v][1] for v in variants.index]
shown["reproduces"] = ["—"] + [verdicts[v][0] for v in variants.index]
display(shown.rename_axis(columns="epoch"))
hits = [v for v, (ok, _) in verdicts.items() if ok]
display(Markdown(
    f"The study reported {min(STUDY_GNS.values()):.1e}–{max(STUDY_GNS.values()):.1e}. "
    + (f"Reproduced within a factor 3 by: **{', '.join(hits)}**; " if hits else
       f"No tested variant reproduces that magnitude within a factor 3 (closest: "
       f"{min(verdicts, key=lambda v: abs(np.log(verdicts[v][1])))}); ")
    + "; ".join(f"{v}: median {r:.3g}× the study" for v, (_, r) in verdicts.items()) + "."
    if study_epochs else "No study epoch to compare."))

# %%
fig = viz.noise.plot_gns_trend(trends, B, N, study=STUDY_GNS,
                               failed=[name for name, st in status.items() if st.failed],
                               title=f"{MATERIAL}, {FREQ_HZ} Hz: exact per-sample gradients of the "
                                  f"training split; solid = trained objective, dashed = CE only")
publish(fig, f"gns_vs_epoch_{MATERIAL}_{FREQ_HZ}hz.png")

# %% [markdown]
# ## Conditions
#
# The same GHM training (same configuration and epochs) on every material × frequency condition under the data root (`gradkit.data.list_conditions`); runs that exist are reused. At each run's last checkpoint: the noise scale of the trained objective and of CE only, the failed-run check and the plateau test of the validation accuracy.

# %%
CONDITIONS = list_conditions(DATA_ROOT)
cond_rows = []
for material, freq in CONDITIONS:
    run = get_run(TrainConfig(material=material, freq_hz=freq, objective="ghm", epochs=EPOCHS,
                              data_root=DATA_ROOT), progress=False)
    st = analysis.advice.status_of_run(run)
    last = {k: checkpoint_noise_scales(run, k, n_boot=N_BOOT, seed=SEED,
                                       epochs=run.checkpoint_epochs[-1:])[0].iloc[-1]
            for k in KINDS}
    o = last["objective"]
    word = analysis.advice.batch_advice(st, o.b_simple, o.b_simple_lo, o.b_simple_hi, B)
    cond_rows.append({"material": material, "freq_hz": freq, **o.drop("kind").to_dict(),
                      "gns (CE only)": last["ce"].gns, "val acc": st.accuracy,
                      "failed": st.failed, "val acc trend": st.trend, "advice": word})
cond = pd.DataFrame(cond_rows)
display(Markdown(f"{len(CONDITIONS)} condition(s) under the data root"
                 + (": only one, so there is no comparison between conditions."
                    if len(CONDITIONS) == 1 else ".")))
display(cond.set_index(["material", "freq_hz"])[
    ["epoch", "gns", "gns_lo", "gns_hi", "gns (CE only)", "b_simple", "b_simple_lo",
     "b_simple_hi", "val acc", "failed", "val acc trend", "advice"]])

# %%
fig = viz.noise.plot_gns_by_condition(cond, B, N, kind_label="(trained objective)")
publish(fig, "gns_by_condition.png")

# %% [markdown]
# ## Recommendations (generated)
#
# Advice comes only after two checks: a run whose final validation accuracy is not above chance (exact binomial test) is a **failed run** and gets no advice; a run whose validation accuracy still rises over its last 10 epochs (OLS slope test) is told to keep training. Only a plateaued run is advised from the interval of $B_\text{simple}$. A change of the GNS is called only when its 95 % intervals do not overlap (`gradkit.stats.interval_change`).

# %%
lines = []
for name, kinds in trends.items():
    end = kinds["objective"].iloc[-1]
    word = analysis.advice.batch_advice(status[name], end.b_simple, end.b_simple_lo, end.b_simple_hi, B)
    lines.append(f"- **{name}**, epoch {int(end.epoch)}: {status[name].sentence}. "
                 + analysis.advice.advice_sentence(word, end.b_simple, end.b_simple_lo, end.b_simple_hi, B)
                 + " " + analysis.advice.steadiness(kinds["objective"], "GNS (trained objective)"))
failed = cond[cond.failed]
lines.append("- **Failed runs** (excluded from advice): "
             + (", ".join(f"{m}/{f} Hz (val acc {a:.0%})" for m, f, a in
                          zip(failed.material, failed.freq_hz, failed["val acc"], strict=True))
                if len(failed) else "none") + ".")
counts = cond.advice.value_counts()
lines.append("- **Advice per condition** at the last checkpoint: " + "; ".join(
    f"{word}: {', '.join(f'{m}/{f}' for m, f in zip(part.material, part.freq_hz, strict=True))}"
    for word, part in cond.groupby("advice")) + ".")
ok = cond[~cond.failed]
if len(ok) >= 2:
    lo_row, hi_row = ok.loc[ok.gns.idxmin()], ok.loc[ok.gns.idxmax()]
    change = analysis.advice.interval_steps([0, 1], [lo_row.gns, hi_row.gns], [lo_row.gns_lo, hi_row.gns_lo],
                                            [lo_row.gns_hi, hi_row.gns_hi])[0][2]
    lines.append(f"- **Conditions that learned**: GNS lowest for {lo_row.material}/"
                 f"{lo_row.freq_hz} Hz ({lo_row.gns:.3g}), highest for {hi_row.material}/"
                 f"{hi_row.freq_hz} Hz ({hi_row.gns:.3g}); highest against lowest: {change}.")
display(Markdown("\n".join(lines)))

# %% [markdown]
# ## Scrub the epochs: how the per-sample gradient norms are distributed
#
# Each frame: the norms $\|G_i\|$ of the training clips' objective gradients at one checkpoint of the GHM run, and the norm of their mean $\|g_D\|$ (the signal). When most clips' gradients are far longer than their mean, they point in different directions: a large noise scale.

# %%
ghm_norms, ghm_trend = norms["GHM, full training", "objective"], trends["GHM, full training"]
all_norms = torch.cat(list(ghm_norms.values()))
bins = np.logspace(np.log10(max(float(all_norms.min()), 1e-8)),
                   np.log10(float(all_norms.max())), 25)
top = max(np.histogram(v.numpy(), bins=bins)[0].max() for v in ghm_norms.values()) + 1
rows_by_epoch = ghm_trend["objective"].set_index("epoch")


def draw_norms(fig, epoch):
    row = rows_by_epoch.loc[epoch]
    viz.noise.plot_norms(fig.add_subplot(1, 1, 1), ghm_norms[epoch].numpy(), row.grad_sq, bins, top,
                         title=f"GHM run, epoch {epoch}: GNS {row.gns:.3g}, "
                            f"B_simple {row.b_simple:.3g}")


display(Scrubber(draw_norms, list(rows_by_epoch.index), label="epoch"))
print(f"notebook ran in {time.perf_counter() - t_start:.1f} s")

# %% [markdown]
# ## When one machine is not enough: the noise scale inside DDP training
#
# In DistributedDataParallel training every rank's local mean gradient is a small-batch estimate ($B_\mathrm{small}$, the local batch) and the all-reduced one a large-batch estimate ($B_\mathrm{big}$, the global batch). Since $\mathbb{E}\,\|g_B\|^2 = |G|^2 + \operatorname{tr}\Sigma / B$, the two give unbiased $|G|^2$ and $\operatorname{tr}\Sigma$ at every step with no extra backward (McCandlish et al. 2018, App. A; `gradkit.distributed.DDPNoiseScale`, a DDP communication hook). Two gloo processes train `ResNetAudioRanker` for `DDP_EPOCHS` epochs on gradkit's own generated multi-condition set (in `build/ddp/`, not `DATA_ROOT`); the hook's $B_\mathrm{simple}$ over the last epochs is compared with the exact per-sample value at the last checkpoint. The full-size run is `make ddp` (README).

# %%
if DDP_EPOCHS > 0:
    ddp = short_ddp_study(epochs=DDP_EPOCHS, pool_epochs=min(3, DDP_EPOCHS))
    fig = plt.figure(figsize=(9, 4))
    plot_ddp_b_simple(fig, ddp.history, ddp.global_batch, exact=ddp.exact, pooled=ddp.pooled)
    publish(fig, "gns_ddp_steps.png")
    display(Markdown(f"{ddp.sentence} {ddp.advice}. ({len(ddp.history)} steps in "
                     f"{ddp.seconds:.0f} s, two processes.)"))
else:
    display(Markdown("The DDP section is switched off (`DDP_EPOCHS = 0`)."))

# %%
g_end = trends["GHM, full training"]["objective"].iloc[-1]
p_end = trends["prompt tuning (study)"]["objective"].iloc[-1]
show_headlines(**{
    f"GNS, GHM run, epoch {int(g_end.epoch)} (trained objective)":
        f"{g_end.gns:.3g} [{g_end.gns_lo:.3g}, {g_end.gns_hi:.3g}]",
    f"B_simple, GHM run, epoch {int(g_end.epoch)}":
        f"{g_end.b_simple:.3g} [{g_end.b_simple_lo:.3g}, {g_end.b_simple_hi:.3g}] (B = {B})",
    f"GNS, prompt run, epoch {int(p_end.epoch)}": f"{p_end.gns:.3g}",
    "study's magnitude reproduced by": ", ".join(hits) if hits else "no tested variant",
    f"advice ({len(cond)} conditions)": ", ".join(f"{k}: {v}" for k, v in counts.items()),
    **({"B_simple inside DDP (hook, last epochs) vs exact":
        f"{ddp.pooled[0]:.3g} vs {ddp.exact.b_simple:.3g}"} if DDP_EPOCHS > 0 else {}),
})

# %% [markdown] tags=["run"]
# # The noise scale of your run
#
# `RUN` names a folder that `gradkit.track.Tracker` recorded inside your own training loop (`examples/track_your_training.py`); this part of the notebook reads it and never writes into it (`make report RUN=runs/my_experiment` runs only this part, into `reports/<run name>/`). Per step the tracker recorded the batch's ‖g_B‖² and tr Σ over its n samples; every few steps the batch's n × n Gram matrix. Shown: B_simple = tr Σ / ‖G‖² (McCandlish et al., 2018, the simple noise scale) per step, per logged batch with a bootstrap interval over its samples, and per epoch, pooled from every step's unbiased ‖G‖² and S with a bootstrap interval over the steps (`gradkit.analysis.runs`). Whether the run learned is read from its recorded loss: the step losses of the last epoch against the first's (paired t-test, `gradkit.stats.compare_paired`). With `RUN = None` these cells do nothing.

# %% tags=["run"]
from pathlib import Path

from IPython.display import Markdown, display

import gradkit.analysis.advice
import gradkit.analysis.runs
import gradkit.viz.noise
from gradkit import analysis, viz
from gradkit.core.paths import figures_dir
from gradkit.report.headlines import show_headlines
from gradkit.report.runs import use_run
from gradkit.viz.figures import publish
from gradkit.viz.scrubber import Scrubber

# %% tags=["run"]
if RUN is not None:
    track = analysis.runs.check_run(RUN)
    use_run(RUN)  # figures/<run name>/, also when run by hand
    scalars, RUN_NAME = track.scalars, Path(RUN).name
    B_RUN = int(scalars.n.median())
    learned = analysis.runs.loss_learned(scalars)
    run_status = analysis.runs.loss_status(scalars)
    n_epochs = scalars.epoch.dropna().nunique()
    display(Markdown(
        f"**{RUN_NAME}** (`{RUN}`): {len(scalars)} steps, {n_epochs} epoch(s), batches of "
        f"{B_RUN} samples (median), {len(track.grams)} logged Gram matrices (steps "
        f"{', '.join(map(str, sorted(track.grams)))}; read: those of at least "
        f"{analysis.runs.MIN_SAMPLES} samples); the per-sample columns cover "
        f"{scalars.covered.min():.0%} of the trainable parameters. Figures go to "
        f"`{figures_dir()}`.\n\n**Did the run learn?** {learned.sentence}: **{learned.verdict}**."
        + learned.caveat))

# %% tags=["run"]
if RUN is not None:
    run_grams = analysis.runs.gram_noise_scales(track, n_boot=N_BOOT, seed=0)
    run_epochs = analysis.runs.epoch_noise_scales(scalars, n_boot=N_BOOT, seed=0)
    display(Markdown(f"Per epoch ({N_BOOT} bootstrap resamples of the steps):"))
    display(run_epochs.set_index("epoch"))
    display(Markdown("Per logged batch (bootstrap over its samples):"))
    display(run_grams.set_index("step"))
    fig = viz.noise.plot_run_noise(scalars, run_grams, run_epochs, B_RUN,
                                   title=f"{RUN_NAME}: the simple noise scale over training"
                                   + (" (an untrained model)" if learned.untrained else ""))
    publish(fig, "run_b_simple.png")

# %% [markdown] tags=["run"]
# ## The critical batch size: advice for your run
#
# The rules of the study's advice (`gradkit.analysis.advice.batch_advice`), with the loss in place of the validation accuracy: a run whose loss did not fall gets no advice; a run whose epoch-mean loss still falls over its last epochs (OLS slope test) is told to keep training; only then does the interval of the last epoch's B_simple decide against the batch size. A change is called only where the 95 % intervals do not overlap (`gradkit.stats.interval_change`).

# %% tags=["run"]
if RUN is not None:
    unit = "epoch" if len(run_epochs) else "step"  # no epoch recorded: the logged batches
    basis = (run_epochs if len(run_epochs) else run_grams).rename(columns={unit: "when"})
    end = basis[basis.b_simple_hi.notna()].iloc[-1] if basis.b_simple_hi.notna().any() \
        else basis.iloc[-1]  # the last epoch with an interval (one step has none)
    run_word = analysis.advice.batch_advice(run_status, end.b_simple, end.b_simple_lo,
                                            end.b_simple_hi, B_RUN)
    lines = [f"- **Loss**: {run_status.sentence}.",
             f"- **Advice** at {unit} {int(end.when)}: " + analysis.runs.run_advice_sentence(
                 run_word, end.b_simple, end.b_simple_lo, end.b_simple_hi, B_RUN)]
    if len(basis) >= 2:
        change = analysis.advice.interval_steps(
            basis.when.iloc[[0, -1]], basis.b_simple.iloc[[0, -1]],
            basis.b_simple_lo.iloc[[0, -1]], basis.b_simple_hi.iloc[[0, -1]])[0][2]
        lines.append(f"- **B_simple** at {unit} {int(end.when)} against {unit} "
                     f"{int(basis.when.iloc[0])}: {change} ({basis.b_simple.iloc[0]:.3g} → "
                     f"{end.b_simple:.3g}; judged by non-overlap of the 95 % intervals).")
    display(Markdown("\n".join(lines)))

# %% [markdown] tags=["run"]
# ## Scrub the logged steps: how the per-sample gradient norms are distributed
#
# Each frame: the norms ‖G_i‖ of one logged batch's per-sample gradients (the square roots of its Gram matrix's diagonal) and the norm of their mean. Most norms far above the mean's: the samples pull in different directions, a large noise scale.

# %% tags=["run"]
if RUN is not None:
    import numpy as np

    run_norms = {s: track.grams[s].diagonal().clamp_min(0).sqrt().numpy()
                 for s in analysis.runs.logged_steps(track)}
    every = np.concatenate(list(run_norms.values()))
    every = every[every > 0]
    run_bins = np.logspace(np.log10(max(float(every.min()), 1e-12)),
                           np.log10(float(every.max())) + 1e-9, 25)
    run_top = max(np.histogram(v, bins=run_bins)[0].max() for v in run_norms.values()) + 1
    by_step = run_grams.set_index("step")

    def draw_run_norms(fig, step):
        row = by_step.loc[step]
        ax = fig.add_subplot(1, 1, 1)
        viz.noise.plot_norms(ax, run_norms[step], row.grad_sq, run_bins, run_top,
                             title=f"{RUN_NAME}, step {step}: B_simple {row.b_simple:.3g} "
                                   f"[{row.b_simple_lo:.3g}, {row.b_simple_hi:.3g}]")
        ax.set_ylabel("samples of the batch")

    display(Scrubber(draw_run_norms, sorted(run_norms), label="step"))

# %% tags=["run"]
if RUN is not None:
    show_headlines(**{
        "run": f"{RUN_NAME} ({len(scalars)} steps, B = {B_RUN})",
        "did it learn (loss)": learned.verdict,
        f"B_simple, {unit} {int(end.when)}":
            f"{end.b_simple:.3g} [{end.b_simple_lo:.3g}, {end.b_simple_hi:.3g}]",
        "batch-size advice": run_word})
