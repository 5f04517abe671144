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
# # The gradient noise scale across training
#
# How consistent are batch gradients across training? From exact per-sample gradients at every checkpoint we compute the gradient noise scale, the simple critical batch size and their confidence intervals.

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
# At a checkpoint, take the training split `D` (`N` clips) and the **exact per-sample gradients** `G_i` of the per-sample loss `gradkit.training.sample_loss` (cross-entropy of the class logits) with respect to every parameter the run trains (`gradkit.grads.per_sample_grads`; the GHM-C loss itself is not a sum of per-sample terms: its weights depend on the whole batch). With `g_D` the mean of the `G_i` (`gradkit.grads.noise`):
#
# - `grad_sq = ||g_D||²` — the signal;
# - `trace_sigma = (1/N) Σ ||G_i − g_D||²` — the total per-sample noise;
# - **GNS** `= E_B ||g_B − g_D||² / ||g_D||²`, the study's definition, for the run's batches of `B` clips drawn without replacement, in closed form `trace_sigma / B · (N − B)/(N − 1) / grad_sq`: the relative noise of one batch gradient (1 = as much noise as signal);
# - **B_simple** `= trace_sigma / grad_sq` (McCandlish et al., 2018): the batch size at which that noise equals the signal. Batches much smaller are noise-dominated; much larger ones spend samples without speeding training up.
#
# 95 % confidence intervals come from bootstrap resamples of the clips. Runs are the GHM run of notebook 01 (plastic, 3000 Hz, 60 epochs) and the study's 30-epoch prompt-tuning run (trunk of the raw run frozen; prompt and heads trained); then the same GHM training on all nine material × frequency conditions.

# %%
import time

import numpy as np
import pandas as pd
from IPython.display import Markdown, display
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from gradkit.analysis.noise import checkpoint_noise_scales
from gradkit.core.params import num_trainable
from gradkit.data import FREQS_HZ, MATERIALS
from gradkit.grads import per_sample_grads
from gradkit.grads.noise import gns_monte_carlo, noise_scale
from gradkit.report.headlines import show_headlines
from gradkit.training import TrainConfig, get_run, sample_loss
from gradkit.viz.figures import publish
from gradkit.viz.scrubber import Scrubber

# Small kernels on a shared 2-core machine: one thread is as fast and far steadier.
torch.set_num_threads(1)
t_start = time.perf_counter()
N_BOOT, SEED = 1000, 0
STUDY_GNS = {5: 0.000015, 10: 0.000015, 15: 0.000022, 20: 0.000042, 25: 0.000066, 30: 0.000038}
pd.set_option("display.precision", 4)



def ci(lo, hi):
    return f"[{lo:.3g}, {hi:.3g}]"


def band(ax, x, lo, hi, color, cap, alpha=0.2):
    """A CI band where the upper bound is finite; where it is infinite (the mean gradient cannot
    be told from zero) a thin line from the lower bound up to ``cap``, ending in a triangle."""
    x, lo, hi = (np.asarray(v, dtype=float) for v in (x, lo, hi))
    finite = np.isfinite(hi)
    ax.fill_between(x, lo, np.where(finite, hi, np.nan), color=color, alpha=alpha, lw=0)
    if (~finite).any():
        ax.vlines(x[~finite], lo[~finite], cap, color=color, lw=0.8, alpha=0.6)
        ax.plot(x[~finite], np.full((~finite).sum(), cap), "^", color=color, ms=6, alpha=0.8)


def cap_for(*frames, cols=("gns", "gns_hi")):
    """Where to draw infinite upper bounds: 3x above the largest finite value shown."""
    vals = np.concatenate([f[c].to_numpy(dtype=float) for f in frames for c in cols])
    return 3 * np.nanmax(vals[np.isfinite(vals)])

# %% [markdown]
# ## The two runs, checkpoint by checkpoint

# %%
t0 = time.perf_counter()
runs = {
    "GHM, full training": get_run(TrainConfig(objective="ghm")),
    "prompt tuning (study)": get_run(TrainConfig(mode="prompt", epochs=30)),
}
train_seconds = time.perf_counter() - t0
trends, norms = {}, {}
for name, run in tqdm(runs.items(), desc="noise scales"):
    trends[name], norms[name] = checkpoint_noise_scales(run, sample_loss, n_boot=N_BOOT, seed=SEED)
    val = run.metrics.set_index("epoch")
    trends[name]["val_acc"] = trends[name].epoch.map(val["val_acc"])
    trends[name]["train_loss"] = trends[name].epoch.map(val["train_loss"])
ghm, prompt = trends["GHM, full training"], trends["prompt tuning (study)"]
cfg = runs["GHM, full training"].config
N, B = int(ghm.n[0]), int(ghm.batch_size[0])
P = {name: num_trainable(run.load_model(run.checkpoint_epochs[0])) for name, run in runs.items()}
print(f"runs obtained in {train_seconds:.1f} s; N = {N} training clips, batch size B = {B}; "
      f"{N_BOOT} bootstrap resamples; trainable parameters: "
      + ", ".join(f"{k}: {v}" for k, v in P.items()))


def table(trend):
    """Epoch | GNS | B_simple | CI (95 %, bootstrap)."""
    return pd.DataFrame({
        "Epoch": trend.epoch,
        "GNS": trend.gns,
        "B_simple": trend.b_simple,
        "CI": [f"GNS {ci(a, b)}; B_simple {ci(c, d)}" for a, b, c, d in
               zip(trend.gns_lo, trend.gns_hi, trend.b_simple_lo, trend.b_simple_hi,
                   strict=True)],
        "val acc": trend.val_acc,
    }).set_index("Epoch")


for name, trend in trends.items():
    display(Markdown(f"**{name}** ({runs[name].config.folder_name}, batch size {B}, N = {N})"))
    display(table(trend))

# %% [markdown]
# ### Is the closed form right here, and how do these numbers compare with the study's?
#
# On the real gradients of the last GHM checkpoint, the closed form is checked against sampling thousands of batches of the run's size without replacement — the study's definition taken literally.

# %%
last = runs["GHM, full training"]
G_last = per_sample_grads(last.load_model(last.checkpoint_epochs[-1]), sample_loss,
                          last.split.x_train, last.split.y_train)
exact = noise_scale(G_last, B, n_boot=0).gns
N_DRAWS = 4000
sampled = gns_monte_carlo(G_last, B, draws=N_DRAWS, seed=SEED)
study_lo, study_hi = min(STUDY_GNS.values()), max(STUDY_GNS.values())
ours = prompt[prompt.epoch.isin(list(STUDY_GNS))]
factor = float(np.median(ours.gns.to_numpy() / ours.epoch.map(STUDY_GNS).to_numpy()))
compare = pd.DataFrame({"epoch": ours.epoch, "study GNS (reported)": ours.epoch.map(STUDY_GNS),
                        "our GNS (exact)": ours.gns, "our 95 % CI": [
                            ci(a, b) for a, b in zip(ours.gns_lo, ours.gns_hi, strict=True)]})
display(compare.set_index("epoch"))
inside = sum(lo <= STUDY_GNS[e] <= hi for e, lo, hi in zip(ours.epoch, ours.gns_lo, ours.gns_hi,
                                                            strict=True))
display(Markdown("\n".join([
    f"- Closed form {exact:.4g} vs. {sampled:.4g} from {N_DRAWS} sampled batches of {B} "
    f"({abs(sampled / exact - 1):.1%} apart) at epoch {last.checkpoint_epochs[-1]} of the GHM run.",
    f"- The study reported GNS {study_lo:.1e}–{study_hi:.1e} for its prompt-tuning run. The exact "
    f"values of the same kind of run here are {ours.gns.min():.3g}–{ours.gns.max():.3g}, a median "
    f"{factor:.3g} times the reported ones; {inside} of {len(ours)} reported values lie inside our "
    f"95 % intervals. "
    + ("The reported values are not reproduced: they are orders of magnitude too small for a "
       "batch-to-full-data noise ratio of this model and data."
       if inside == 0 and not 0.1 < factor < 10 else
       "The reported values are of the same order as ours."),
])))

# %%
cap_gns = cap_for(*trends.values())
cap_bs = cap_for(*trends.values(), cols=("b_simple", "b_simple_hi"))
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 4.2))
for (name, trend), color in zip(trends.items(), ["C0", "C1"], strict=True):
    ax1.plot(trend.epoch, trend.gns, "o-", color=color, label=name)
    band(ax1, trend.epoch, trend.gns_lo, trend.gns_hi, color, cap_gns)
    ax2.plot(trend.epoch, trend.b_simple, "o-", color=color, label=name)
    band(ax2, trend.epoch, trend.b_simple_lo, trend.b_simple_hi, color, cap_bs)
for ax in (ax1, ax2):
    ax.plot([], [], "^", color="grey", label="CI upper bound infinite (drawn at the top)")
ax1.plot(list(STUDY_GNS), list(STUDY_GNS.values()), "x--", color="grey",
         label="study's reported GNS (prompt run)")
ax1.axhline(1, color="k", lw=0.8, ls=":", label="noise = signal")
ax1.set(yscale="log", xlabel="epoch", ylabel=f"GNS = E||g_B − g_D||² / ||g_D||² (B = {B})",
        title="Gradient noise scale (95 % bootstrap CI)")
ax2.axhline(B, color="k", lw=0.8, ls="--", label=f"batch size used, B = {B}")
ax2.axhline(N, color="k", lw=0.8, ls=":", label=f"training set, N = {N}")
ax2.set(yscale="log", xlabel="epoch", ylabel="B_simple = tr Σ / ||g_D||²  (samples)",
        title="Simple critical batch size (95 % bootstrap CI)")
ax1.legend(fontsize=8, loc="lower right")
ax2.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
for ax in (ax1, ax2):
    ax.grid(alpha=0.3, which="both")
fig.suptitle(f"{cfg.material}, {cfg.freq_hz} Hz: exact per-sample gradients of the training split")
fig.tight_layout()
publish(fig, f"gns_vs_epoch_{cfg.material}_{cfg.freq_hz}hz.png")

# %% [markdown]
# ## Conditions: three materials × three probe frequencies
#
# The same GHM training (same configuration and epochs as the run above, seeds and split seeds unchanged) on every condition; runs that exist are reused. Every checkpoint gets the same analysis.

# %%
t0 = time.perf_counter()
cond_trends = {}
for material in MATERIALS:
    for freq in tqdm(FREQS_HZ, desc=material, leave=False):
        run = get_run(TrainConfig(material=material, freq_hz=freq, objective="ghm"),
                      progress=False)
        trend, _ = checkpoint_noise_scales(run, sample_loss, n_boot=N_BOOT, seed=SEED)
        trend["val_acc"] = trend.epoch.map(run.metrics.set_index("epoch")["val_acc"])
        cond_trends[material, freq] = trend
cond_seconds = time.perf_counter() - t0


LATE = 4  # checkpoints counted as "late" (where training has settled)


def late(trend, k=LATE):
    """The last ``k`` checkpoints: where training has settled."""
    return trend.tail(k)


summary = pd.DataFrame([{
    "material": m, "freq_hz": f,
    f"GNS (last {LATE} ckpts, median)": late(t).gns.median(),
    f"B_simple (last {LATE}, median)": late(t).b_simple.median(),
    "B_simple at last epoch": t.b_simple.iloc[-1],
    "B_simple CI at last epoch": ci(t.b_simple_lo.iloc[-1], t.b_simple_hi.iloc[-1]),
    "GNS range over training": f"{t.gns.min():.3g}–{t.gns.max():.3g}",
    "final val acc": t.val_acc.iloc[-1],
} for (m, f), t in cond_trends.items()]).set_index(["material", "freq_hz"])
display(summary)
print(f"{len(cond_trends)} conditions trained or found and analysed in {cond_seconds:.1f} s")

# %%
fig, axes = plt.subplots(1, 4, figsize=(17, 4.2), gridspec_kw={"width_ratios": [1, 1, 1, 1.1]})
colors = dict(zip(FREQS_HZ, ["C0", "C2", "C3"], strict=True))
cap_c = cap_for(*cond_trends.values())
for ax, material in zip(axes[:3], MATERIALS, strict=True):
    for freq in FREQS_HZ:
        t = cond_trends[material, freq]
        ax.plot(t.epoch, t.gns, "o-", ms=3, color=colors[freq], label=f"{freq} Hz")
        band(ax, t.epoch, t.gns_lo, t.gns_hi, colors[freq], cap_c, alpha=0.12)
    ax.axhline(1, color="k", lw=0.8, ls=":", label="noise = signal")
    ax.plot([], [], "^", color="grey", label="CI upper bound infinite")
    ax.set(yscale="log", xlabel="epoch", title=f"{material}: GNS (B = {B}, 95 % CI)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
axes[0].set_ylabel("GNS = E||g_B − g_D||² / ||g_D||²")
lo = min(a.get_ylim()[0] for a in axes[:3])
hi = max(a.get_ylim()[1] for a in axes[:3])
for ax in axes[:3]:
    ax.set_ylim(lo, hi)
ax = axes[3]
width = 0.25
ends = pd.DataFrame([t.iloc[-1] for t in cond_trends.values()])
last_epoch = "/".join(str(e) for e in sorted(set(ends.epoch.astype(int))))
cap_b = cap_for(ends, cols=("b_simple", "b_simple_hi"))
for k, freq in enumerate(FREQS_HZ):
    vals = np.array([cond_trends[m, freq].b_simple.iloc[-1] for m in MATERIALS])
    los = np.array([cond_trends[m, freq].b_simple_lo.iloc[-1] for m in MATERIALS])
    his = np.array([cond_trends[m, freq].b_simple_hi.iloc[-1] for m in MATERIALS])
    xs = np.arange(len(MATERIALS)) + (k - 1) * width
    ax.bar(xs, vals, width, color=colors[freq], alpha=0.85, label=f"{freq} Hz")
    ax.vlines(xs, los, np.where(np.isfinite(his), his, cap_b), color="k", lw=1)
    ax.plot(xs[~np.isfinite(his)], np.full((~np.isfinite(his)).sum(), cap_b), "^k", ms=5)
ax.plot([], [], "^k", label="CI upper bound infinite")
ax.axhline(B, color="k", lw=0.8, ls="--", label=f"batch size B = {B}")
ax.axhline(N, color="k", lw=0.8, ls=":", label=f"training set N = {N}")
ax.set(xticks=range(len(MATERIALS)), xticklabels=MATERIALS, yscale="log",
       ylabel="B_simple at the last epoch (samples)",
       title=f"Critical batch size at the last epoch, {last_epoch} (95 % CI)")
ax.legend(fontsize=8)
ax.grid(alpha=0.3, axis="y", which="both")
fig.tight_layout()
publish(fig, "gns_by_condition.png")

# %% [markdown]
# ## Recommendations (generated from the numbers above)

# %%
def batch_advice(bs, lo, hi, b=B, n=N):
    """One sentence comparing the batch size with B_simple and its interval."""
    if not np.isfinite(hi):
        side = ("above" if lo > b else "around")
        return (f"B_simple {bs:.3g} {ci(lo, hi)}: the upper bound is infinite, i.e. the mean "
                f"gradient of the training clips cannot be told from zero (||g_D||² is within "
                f"the noise floor tr Σ/(N−1)); the lower bound is {side} the batch size {b}. "
                f"The run sits where the mean gradient of the per-sample loss vanishes within "
                f"noise: further steps at any batch size mostly follow noise, so stop here or "
                f"decay the learning rate rather than tune the batch size.")
    if lo > b:
        target = min(n, int(round(bs)))
        return (f"B_simple {bs:.3g} {ci(lo, hi)} is above the batch size {b}: the batch gradient is "
                f"noise-dominated; a larger batch (about {target}"
                + (f", i.e. the whole training set of {n}" if target >= n else "")
                + ") or a smaller learning rate would make steps more reliable.")
    if hi < b:
        return (f"B_simple {bs:.3g} {ci(lo, hi)} is below the batch size {b}: batches larger "
                f"than about {max(1, int(round(bs)))} buy little; smaller batches (more steps "
                f"per epoch) would use the samples better.")
    return (f"B_simple {bs:.3g} {ci(lo, hi)} contains the batch size {b}: the batch size is "
            f"about right.")


def stability(trend):
    """Trend of the GNS over training and its checkpoint-to-checkpoint jumps."""
    rho = spearmanr(trend.epoch, trend.gns).statistic
    jumps = np.abs(np.diff(np.log10(trend.gns.to_numpy())))
    big = trend.epoch.to_numpy()[1:][jumps > 0.5]
    over = trend.epoch[trend.gns > 1].tolist()
    direction = ("rises" if rho > 0.5 else "falls" if rho < -0.5 else "shows no clear trend")
    text = (f"GNS {direction} over training (Spearman ρ = {rho:+.2f} against the epoch; "
            f"{trend.gns.iloc[0]:.3g} at epoch {trend.epoch.iloc[0]}, "
            f"{trend.gns.iloc[-1]:.3g} at epoch {trend.epoch.iloc[-1]}).")
    if rho > 0.5:
        text += (" The mean gradient shrinks faster than the per-sample spread as the fit "
                 "converges, so late steps are mostly noise: a decaying learning rate (or a growing "
                 "batch) fits this run.")
    if over:
        text += (f" At epochs {', '.join(map(str, over))} a batch gradient carries more noise "
                 f"than signal (GNS > 1).")
    else:
        text += " At no checkpoint does a batch gradient carry more noise than signal (GNS < 1)."
    if len(big):
        text += (f" Jumps of more than 3x between checkpoints at epochs "
                 f"{', '.join(map(str, big))}: the training there is unsteady.")
    else:
        text += " No jump of more than 3x between neighbouring checkpoints: a steady trajectory."
    return text


lines = []
for name, trend in trends.items():
    end = trend.iloc[-1]
    lines.append(f"- **{name}**, epoch {int(end.epoch)}: "
                 + batch_advice(end.b_simple, end.b_simple_lo, end.b_simple_hi) + " "
                 + stability(trend))
med = summary[f"GNS (last {LATE} ckpts, median)"]
by_material = med.groupby(level="material").median()
by_freq = med.groupby(level="freq_hz").median()
spread_m = by_material.max() / by_material.min()
spread_f = by_freq.max() / by_freq.min()
all_ci = pd.concat(cond_trends.values())
finite = all_ci[np.isfinite(all_ci.gns_hi)]
ci_factor = float(np.median(finite.gns_hi / finite.gns_lo))
biggest = max(spread_m, spread_f)
if biggest < ci_factor:
    resolved = (f"Both spreads are smaller than the uncertainty of one estimate (a 95 % interval "
                f"spans a median factor {ci_factor:.2g}), so the data do not resolve a material "
                f"or frequency effect on the noise scale.")
elif max(spread_m, spread_f) / min(spread_m, spread_f) < 1.25:
    resolved = "Material and frequency matter about equally."
else:
    resolved = ("The material matters more than the probe frequency." if spread_m > spread_f
                else "The probe frequency matters more than the material.")
lines.append(
    f"- **Conditions** (median GNS of the last {LATE} checkpoints): highest for "
    f"{med.idxmax()[0]} / {med.idxmax()[1]} Hz ({med.max():.3g}), lowest for "
    f"{med.idxmin()[0]} / {med.idxmin()[1]} Hz ({med.min():.3g}). Across materials the medians "
    f"differ {spread_m:.2g}x ({', '.join(f'{k} {v:.3g}' for k, v in by_material.items())}), "
    f"across frequencies {spread_f:.2g}x ({', '.join(f'{k} Hz {v:.3g}' for k, v in by_freq.items())}). "
    + resolved)
advice = {}
for (m, f), t in cond_trends.items():
    end = t.iloc[-1]
    advice[m, f] = ("converged (mean gradient ~ 0)" if not np.isfinite(end.b_simple_hi)
                    else "larger" if end.b_simple_lo > B
                    else "smaller" if end.b_simple_hi < B else "keep")
counts = pd.Series(advice).value_counts()
lines.append(
    f"- **Batch size per condition** at the last epoch ({last_epoch}): "
    + "; ".join(f"{k}{' batch' if k in ('larger', 'smaller', 'keep') else ''} for {v} "
                f"condition{'s' if v > 1 else ''} "
                f"({', '.join(f'{m}/{f}' for (m, f), a in advice.items() if a == k)})"
                for k, v in counts.items()) + ".")
display(Markdown("\n".join(lines)))

# %% [markdown]
# ## Scrub the epochs: how the per-sample gradient norms are distributed
#
# Each frame: the norms `||G_i||` of the training clips' gradients at one checkpoint of the GHM run, and the norm of their mean `||g_D||` (the signal). When most clips' gradients are far longer than their mean, they point in different directions: a large noise scale.

# %%
ghm_norms = norms["GHM, full training"]
all_norms = torch.cat(list(ghm_norms.values()))
bins = np.logspace(np.log10(max(float(all_norms.min()), 1e-8)),
                   np.log10(float(all_norms.max())), 25)
top = max(np.histogram(v.numpy(), bins=bins)[0].max() for v in ghm_norms.values()) + 1


def draw_norms(fig, epoch):
    ax = fig.add_subplot(1, 1, 1)
    row = ghm.set_index("epoch").loc[epoch]
    ax.hist(ghm_norms[epoch].numpy(), bins=bins, color="C0", alpha=0.8,
            label="per-sample ||G_i||")
    ax.axvline(np.sqrt(row.grad_sq), color="C3", lw=2, label="||g_D|| (mean gradient)")
    ax.set(xscale="log", xlabel="gradient norm", ylabel="training clips",
           ylim=(0, top),
           title=f"GHM run, epoch {epoch}: GNS {row.gns:.3g}, B_simple {row.b_simple:.3g}")
    ax.yaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.legend(loc="upper left", fontsize=8)


scrubber = Scrubber(draw_norms, list(ghm.epoch), label="epoch")
display(scrubber)

# %%
g_end, p_end = ghm.iloc[-1], prompt.iloc[-1]
g_ep, p_ep = int(g_end.epoch), int(p_end.epoch)
show_headlines(**{
    f"GNS, GHM run, epoch {g_ep}": f"{g_end.gns:.3g} {ci(g_end.gns_lo, g_end.gns_hi)}",
    f"B_simple, GHM run, epoch {g_ep}":
        f"{g_end.b_simple:.3g} {ci(g_end.b_simple_lo, g_end.b_simple_hi)} (B = {B})",
    f"GNS, prompt run, epoch {p_ep}": f"{p_end.gns:.3g}"
    + (f" (study reported {STUDY_GNS[p_ep]:.1e})" if p_ep in STUDY_GNS else ""),
    f"batch-size advice ({len(advice)} conditions)":
        ", ".join(f"{k}: {v}" for k, v in counts.items()),
})
print(f"notebook ran in {time.perf_counter() - t_start:.1f} s")
