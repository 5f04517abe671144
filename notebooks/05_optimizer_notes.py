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
# # Optimisation notes, computed live
#
# Critical points and the Hessian, batch size, momentum / AdaGrad / RMSProp / Adam, learning-rate schedules, softmax + cross-entropy, feature normalisation, Hoeffding's bound and batch normalisation — each claim of the lecture notes checked on real tensors.

# %% tags=["parameters"]
DATA_ROOT = None  # a folder <material>/<freq>hz/deg<angle:03d>/*.wav; None = the synthetic set
MATERIAL = "plastic"
FREQ_HZ = 3000
EPOCHS = 25  # of this notebook's own short trainings
DIAG_EPOCHS = 50  # section 1's cap: each network trains past EPOCHS until its training loss converges

# %%
# Set-up: every path resolves from the project root, so this runs from any working directory.
import math
import time

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from IPython.display import Markdown, display

# %%
import gradkit
import gradkit.viz.lectures
import gradkit.viz.optim
from gradkit import lectures, viz
from gradkit.core.device import pick_device
from gradkit.core.params import count_parameters
from gradkit.core.paths import figures_dir
from gradkit.data import load_split
from gradkit.grads import per_sample_grads
from gradkit.grads.hessian import HessianOperator, flat_loss
from gradkit.models import plain_cnn
from gradkit.report.headlines import show_headlines
from gradkit.training import TrainConfig, build_model, sample_loss, train_short
from gradkit.viz.figures import publish
from gradkit.viz.scrubber import Scrubber

# %%
print(f"gradkit {gradkit.__version__}, torch {torch.__version__}, device {pick_device()}; "
      f"figures go to {figures_dir()}")
torch.set_num_threads(1)  # tiny models: one thread is as fast and never fights other processes
pd.set_option("display.precision", 4)
T0 = time.perf_counter()

split = load_split(MATERIAL, FREQ_HZ, root=DATA_ROOT)
N_TRAIN, N_CLASSES, N_MELS = len(split.y_train), len(split.classes), split.x_train.shape[2]
CHANCE = math.log(N_CLASSES)  # cross-entropy of a uniform guess
print(f"{MATERIAL} / {FREQ_HZ} Hz: {N_TRAIN} training and {len(split.y_val)} validation clips "
      f"of shape {tuple(split.x_train.shape[1:])}, {N_CLASSES} angle classes "
      f"(chance loss ln {N_CLASSES} = {CHANCE:.3f})")

# %% [markdown]
# ## 1. Why training fails: model bias, optimisation or overfitting?
#
# The notes' recipe: if the loss on the **training** set is high, either the model is too simple (model bias) or gradient descent did not find a low loss (optimisation). They are told apart by changing the model: a deeper network can represent everything a shallower one can, so if the deeper one reaches a *higher training loss*, the optimiser failed — not overfitting, which shows only on *validation* data. The recipe is only applied to a model that has finished training: each network trains at least `EPOCHS` epochs and then until its training loss has converged (`gradkit.lectures.convergence`: over its last 10 epochs the OLS slope test sees no fall, or its slope's 95 % interval bounds the fall over another 10 epochs below 0.01 nats), at most `DIAG_EPOCHS`; one still falling at that cap is **under-trained** and gets no verdict. The verdicts (`gradkit.lectures.diagnose_converged`) read per-clip losses with their 95 % intervals: a deeper network is an *optimisation* failure only when its training loss is detectably higher than a shallower converged one's, paired clip by clip (`gradkit.stats.compare_paired`); *overfitting* only when the validation loss's interval lies above the training loss's. Candidates: plain CNNs without skip connections and `ResNetAudioRanker` at three depths, all with the same optimiser and rule (printed below).

# %%
LR, BATCH = 1e-3, min(12, N_TRAIN)
zoo = {  # name: (family, depth in conv layers / residual blocks, constructor)
    "plain CNN, 4 layers": ("plain CNN", 4, lambda: plain_cnn(4, n_classes=N_CLASSES)),
    "plain CNN, 16 layers": ("plain CNN", 16, lambda: plain_cnn(16, n_classes=N_CLASSES)),
    "ResNet, 1 block": ("ResNet", 1, lambda: build_model(TrainConfig(widths=(8,)), split)),
    "ResNet, 3 blocks": ("ResNet", 3, lambda: build_model(TrainConfig(), split)),
    "ResNet, 6 blocks": ("ResNet", 6, lambda: build_model(TrainConfig(widths=(8, 8, 16, 16, 32,
                                                                              32)), split)),
}
histories, trained, rows, clip_losses = {}, {}, [], {}
for name, (family, depth, make) in zoo.items():
    trained[name] = make()
    h, clip_losses[name] = lectures.train_until_converged(trained[name], split, EPOCHS,
                                                          DIAG_EPOCHS, BATCH, LR)
    histories[name] = h
    rows.append({"model": name, "family": family, "depth": depth,
                 "parameters": count_parameters(trained[name]), "epochs": len(h),
                 "train loss": h.train_loss.iloc[-1], "val loss": h.val_loss.iloc[-1],
                 "train acc": h.train_acc.iloc[-1], "val acc": h.val_acc.iloc[-1],
                 "converged": lectures.convergence(h.train_loss.to_numpy()),
                 "s / epoch": h.seconds.median()})
why = pd.DataFrame(rows).set_index("model")
print(f"Adam, η = {LR:g}, batches of {BATCH}, {EPOCHS}–{DIAG_EPOCHS} epochs: {why.epochs.sum()} in all")
display(why)
publish(viz.lectures.plot_training_losses(histories, CHANCE, N_CLASSES), "training_losses.png")

# %%
import gradkit.analysis.learnability
from gradkit import analysis

gate = analysis.learnability.learnability_gate(
    analysis.learnability.condition_baseline(MATERIAL, FREQ_HZ, DATA_ROOT),
    [analysis.learnability.chance_verdict(h.val_acc.iloc[-1], len(split.y_val), N_CLASSES)
     for h in histories.values()])
display(Markdown(analysis.learnability.gate_markdown(
    gate, "the diagnosis below reads networks that learned nothing on these clips")))
show_headlines(learnability=gate.headline())

# %%
BIAS_LEVEL, GAP_LEVEL = 0.5 * CHANCE, 0.5
verdicts = []
for _family, group in why.groupby("family", sort=False):
    verdicts += lectures.diagnose_converged(
        list(group.index), list(group.depth), [clip_losses[n]["train"] for n in group.index],
        [clip_losses[n]["val"] for n in group.index], list(group.converged), BIAS_LEVEL, GAP_LEVEL)
display(Markdown("**Diagnosis**, per family, shallow to deep (losses: mean over clips [95 % "
                 f"interval]; model bias: the training loss's interval above half the chance "
                 f"loss, {BIAS_LEVEL:.3f}, once converged; overfitting: the validation loss's "
                 f"interval above the training loss's, by more than {GAP_LEVEL}):\n\n"
                 + "\n".join(f"- {v}" for v in verdicts)))
kinds = ("under-trained", "optimisation", "model bias", "overfitting", "fine")
leaves = {k: "\n".join(v.split(":")[0] for v in verdicts if f": {k}" in v) for k in kinds}
publish(viz.lectures.plot_decision_diagram(leaves), "Problem-in-training.svg")

# %% [markdown]
# ## 2. Critical points: where the gradient vanishes
#
# Near a critical point $\theta'$ ($\nabla L = 0$), $L(\theta) \approx L(\theta') + \tfrac12 (\theta-\theta')^\top H (\theta-\theta')$: all eigenvalues of the Hessian $H$ positive → local minimum; all negative → local maximum; both signs → saddle point, and moving along an eigenvector $u$ of a negative eigenvalue $\lambda$ lowers the loss by about $\tfrac12|\lambda|s^2$.
#
# Gradient descent is repelled by saddles, so to *reach* critical points of any kind we solve $\nabla L(\theta) = 0$ with Levenberg–Marquardt (`gradkit.lectures.critical_point_table`, which then classifies each point by its dense Hessian) on a network small enough for that Hessian: the time-averaged log-mel bands → 4 tanh units → one output per class, float64, the training clips.

# %%
feats = split.x_train.mean(-1).flatten(1).double()  # [N_TRAIN, N_MELS]: time-averaged bands
feats = (feats - feats.mean(0)) / feats.std(0).clamp_min(1e-12)
tiny = torch.nn.Sequential(torch.nn.Linear(N_MELS, 4), torch.nn.Tanh(),
                           torch.nn.Linear(4, N_CLASSES)).double()
tiny_loss, _ = flat_loss(tiny, F.cross_entropy, feats, split.y_train)
P_TINY = sum(p.numel() for p in tiny.parameters())
starts = {"small random start (σ = 0.1)": (0, 0.1), "random start (σ = 1), seed 0": (0, 1.0),
          "random start (σ = 1), seed 1": (1, 1.0)}
theta0s = {name: scale * torch.randn(P_TINY, generator=torch.Generator().manual_seed(seed),
                                     dtype=torch.float64) for name, (seed, scale) in starts.items()}
crit_table, critical = lectures.critical_point_table(tiny_loss, theta0s, tol=1e-8, max_iter=200)
display(crit_table)
display(Markdown(f"Tiny network {N_MELS} → 4 → {N_CLASSES} (P = {P_TINY} parameters, {N_TRAIN} "
                 f"clips): from {len(starts)} starts Levenberg–Marquardt reached "
                 + ", ".join(f"{n} × {kind}" for kind, n in crit_table.kind.value_counts().items())
                 + f", with |∇L| at most {crit_table['|∇L| reached'].max():.1e}."))

# %% [markdown]
# Lanczos (`gradkit.grads.hessian`, Hessian-vector products only) must find the same extreme eigenvalues as the dense matrix: `gradkit.lectures.lanczos_against_dense` raises if it does not. Then we step along the eigenvector of the most negative eigenvalue at the lowest saddle (if one was reached).

# %%
saddles = crit_table[crit_table.kind == "saddle point"]
saddle_name = saddles.loss.idxmin() if len(saddles) else crit_table.loss.idxmin()
theta_s, ev_s = critical[saddle_name]
torch.nn.utils.vector_to_parameters(theta_s, tiny.parameters())
top, low = lectures.lanczos_against_dense(
    HessianOperator(tiny, F.cross_entropy, feats, split.y_train), ev_s, k=3)
lam_min, lam_max = float(low.eigenvalues[0]), float(top.eigenvalues[0])
s_grid = torch.linspace(-1.5, 1.5, 61, dtype=torch.float64)
along = lectures.loss_along(tiny_loss, theta_s, {"min": low.eigenvectors[0],
                                                 "max": top.eigenvectors[0]}, s_grid)
near_s = (s_grid.abs() >= 0.05) & (s_grid.abs() <= 0.5)
drop = -float(along["min"][near_s].min())
display(Markdown(
    f"Lanczos = dense: top-3 {top.eigenvalues.numpy().round(5)} in {top.n_hvp} HVPs. At the "
    f"**{saddle_name}** critical point ({crit_table.loc[saddle_name, 'kind']}; loss "
    f"{crit_table.loc[saddle_name, 'loss']:.4f}) λ_min = {lam_min:.4f}: stepping along its "
    f"eigenvector changes the loss by {-drop:+.4f} at best for |s| ≤ 0.5 (the quadratic model "
    f"predicts {0.5 * lam_min * 0.25:+.4f} at |s| = 0.5); along the eigenvector of λ_max = "
    f"{lam_max:.4f} it changes by {float(along['max'][near_s].max()):+.4f} at most."))

# %% [markdown]
# The same tools on the real model: the ResNet (3 blocks) after its training above, full training set, cross-entropy. Its $P \times P$ Hessian is never formed (`gradkit.lectures.hessian_summary`): Lanczos for the extreme eigenvalues, stochastic Lanczos quadrature (SLQ, several random probes) for the density, Hutchinson for the trace.

# %%
resnet = trained["ResNet, 3 blocks"].eval()
res = lectures.hessian_summary(HessianOperator(resnet, sample_loss, split.x_train, split.y_train),
                               n_probes=4, n_steps=20, n_trace=8)
display(Markdown(
    f"ResNet Hessian (P = {res.n_params}, {why.loc['ResNet, 3 blocks', 'converged']} after "
    f"{why.loc['ResNet, 3 blocks', 'epochs']} epochs, |∇L| = {res.grad_norm:.3f}): λ_max = {res.lam_max:.4f} "
    f"({res.n_hvp_max} HVPs), λ_min = {res.lam_min:.4f} ({res.n_hvp_min} HVPs), trace "
    f"{res.trace:.1f} ± {res.trace_se:.1f} (Hutchinson, {res.n_trace} probes). SLQ over "
    f"{len(res.per_probe)} probes puts {100 * res.near_zero:.1f} % of the spectral mass within "
    f"±{res.near:.0%} of λ_max around zero."))

# %%
fig = viz.lectures.plot_hessian_spectrum(
    {k: v[1].numpy() for k, v in critical.items()},
    {k: crit_table.loc[k, "kind"].split(" (")[0] for k in critical},
    {"s": s_grid.numpy(), "along_min": along["min"].numpy(), "along_max": along["max"].numpy(),
     "lam_min": lam_min, "lam_max": lam_max, "title": f"Leaving the critical point ({saddle_name})"},
    {"grid": res.grid.numpy(), "values": res.per_probe.numpy(), "lam_min": res.lam_min,
     "lam_max": res.lam_max, "sigma": res.sigma,
     "title": f"ResNet after {why.loc['ResNet, 3 blocks', 'epochs']} epochs: SLQ spectrum "
              f"(P = {res.n_params})"})
publish(fig, "hessian_spectrum.png")

# %% [markdown]
# ## 3. Batch size
#
# A mini-batch gradient $g_B$ is the mean of $B$ per-sample gradients, so it scatters around the full gradient $g$ with $\mathbb{E}\|g_B - g\|^2 = \operatorname{tr}\Sigma / B$ (the notes' "small batch = noisy"); drawn without replacement from $N$ samples, times $(N - B)/(N - 1)$. Measured with exact per-sample gradients of the ResNet at its current weights (`gradkit.lectures.noise_table`; z = (sampled − formula) / standard error).

# %%
G = per_sample_grads(resnet, sample_loss, split.x_train, split.y_train)
B_VALUES = sorted({b for b in (1, 2, 3, 4, 6, 9, 12, 18, 27) if b < N_TRAIN} | {BATCH, N_TRAIN})
N_DRAWS = 2000
noise = lectures.noise_table(G, B_VALUES, N_DRAWS)
display(noise)
tr_sigma = lectures.expected_minibatch_noise(G, 1)  # at B = 1 the formula is tr Σ itself
publish(viz.lectures.plot_minibatch_noise(noise, tr_sigma, N_TRAIN, N_DRAWS),
        "minibatch_noise.png")
z = noise.z.dropna().abs()
display(Markdown(
    f"Over the {len(z)} batch sizes below N the sampled value ({N_DRAWS} batches each) and the "
    f"formula differ by at most {z.max():.1f} standard errors (at B = {z.idxmax()}); at "
    f"B = N = {N_TRAIN} the formula gives exactly {noise.loc[N_TRAIN].iloc[2]:.0f} and the "
    f"draws {noise.loc[N_TRAIN].iloc[0]:.1e}."))

# %% [markdown]
# Small against large batches on the audio task. Per epoch the small batch takes more, noisier steps; the fair comparison is also made **at an equal number of updates** (`gradkit.lectures.at_equal_updates`).

# %%
SMALL_B = min(4, N_TRAIN)
h3 = histories["ResNet, 3 blocks"]
batch_runs = {BATCH: h3[h3.epoch <= EPOCHS]}  # its first EPOCHS epochs, as the other sizes train
for B in sorted({SMALL_B, N_TRAIN} - {BATCH}):
    batch_runs[B] = train_short(build_model(TrainConfig(), split), split, EPOCHS, B, LR)
batch_table = pd.DataFrame([{"batch size": B, "updates / epoch": math.ceil(N_TRAIN / B),
                             "s / epoch (median)": h.seconds.median(),
                             "train loss": h.train_loss.iloc[-1], "val acc": h.val_acc.iloc[-1]}
                            for B, h in sorted(batch_runs.items())]).set_index("batch size")
display(batch_table)
equal = lectures.at_equal_updates(batch_runs, N_TRAIN)
display(equal.rename(columns=lambda b: f"train loss, B = {b}"))
publish(viz.lectures.plot_batch_sizes(batch_runs, N_TRAIN), "batch_sizes.png")
small, large = batch_table.loc[SMALL_B], batch_table.loc[N_TRAIN]
display(Markdown(
    f"After {EPOCHS} epochs: B = {SMALL_B} training loss {small['train loss']:.3f}, B = {N_TRAIN} "
    f"{large['train loss']:.3f} ({math.ceil(N_TRAIN / SMALL_B) * EPOCHS} vs {EPOCHS} updates). "
    + (f"At the same {equal.index[-1]} updates: "
       + ", ".join(f"B = {b} {v:.3f}" for b, v in equal.iloc[-1].items())
       + ". One seed: differences of a few hundredths are within run-to-run noise."
       if len(equal) else "No common number of updates to compare at.")))

# %% [markdown]
# ## 4. Momentum, AdaGrad, RMSProp, Adam
#
# The update rules as the notes write them, in `gradkit.lectures.optimizers` (per coordinate $i$): momentum $d \leftarrow \mu d + g$, $\theta \leftarrow \theta - \eta d$; root mean square $\sigma_t = \sqrt{\operatorname{mean}_{s\le t} g_s^2}$, $\theta \leftarrow \theta - \eta g/\sigma_t$; AdaGrad the same with $\eta_t = \eta/\sqrt{t+1}$; RMSProp $\sigma_t^2 = \alpha\sigma_{t-1}^2 + (1-\alpha) g_t^2$; Adam = RMSProp + momentum, both bias-corrected. Each is run beside `torch.optim` on the 2-D surface below and on the tiny network of section 2 (`gradkit.lectures.rules_against_torch`), and the notes' variants beside what they should equal (`gradkit.lectures.variants_against_torch`); the unit tests assert these differences are rounding.

# %%
START = lectures.SADDLE_VALLEY_START
problems = {"2-D surface": (lectures.saddle_valley_grad, START, 60),
            "tiny network": (torch.func.grad(tiny_loss),
                             critical["random start (σ = 1), seed 0"][0] * 0.5, 15)}
agreement = lectures.rules_against_torch(problems, lr=0.02, beta=0.9)
variants = lectures.variants_against_torch(lectures.saddle_valley_grad, START, 150, lr=0.1,
                                           beta=0.9, warmup=20)
display(agreement, variants)
display(Markdown(
    f"The {len(agreement)} trajectories differ from `torch.optim`'s by at most "
    f"{agreement['max |ours − torch.optim|'].max():.1e}, the notes' variants from their twins "
    f"by at most {variants['max |difference|'].max():.1e}: the notes' RMSProp start σ₀ = |g₀| is "
    "PyTorch's seeded with g₀², the root-mean-square rule with η/√(t+1) is AdaGrad, and a "
    "scheduled Adam is `torch.optim.Adam` + `LambdaLR`."))

# %% [markdown]
# The 2-D surface $L(x, y) = (x^2 - 1)^2/4 + 20 y^2$: a **saddle** at (0, 0) (Hessian eigenvalues −1 and 40) between two minima at (±1, 0), in a **narrow valley**. Start at (0.01, 1). Plain gradient descent must keep $\eta < 2/40 = 0.05$ to stay in the valley and then crawls off the saddle; the adaptive rules divide each coordinate by its own gradient scale. Losses are drawn on a log axis without clamping: a step at exactly $L = 0$ is left out and counted in the legend.

# %%
STEPS, LR0, BETA0 = 150, 0.04, 0.9
paths = lectures.run_rules(lectures.saddle_valley_grad, START, STEPS, LR0, BETA0)
sq = lectures.moving_average(lectures.saddle_valley_grad(paths["RMSProp"][:-1]) ** 2, BETA0,
                             0.0)  # σ_t² of torch's RMSProp
publish(viz.optim.plot_rmsprop(paths, f"Trajectories, η = {LR0}, β = {BETA0}", LR0, sq),
        "RMSProp.png")
reach = {name: lectures.steps_to(path, 1e-3) for name, path in paths.items()}
display(pd.Series({k: (v if v is not None else f"not within {STEPS}") for k, v in reach.items()},
                  name="steps to L < 1e-3"))
rms_loss = lectures.saddle_valley(paths["RMSProp"])
best = int(rms_loss.argmin())
display(Markdown(
    f"RMSProp's loss falls to {float(rms_loss[best]):.1e} at step {best} and afterwards reaches "
    f"at most {float(rms_loss[best:].max()):.1e}; its effective learning rate for x grows to "
    f"{float(LR0 / (sq[-1, 0].sqrt() + 1e-8)):.2g} on the flat floor while the one for y stays "
    f"near {float(LR0 / (sq[:, 1].sqrt().max() + 1e-8)):.2g} on the steep walls. Near a minimum "
    "the gradient and σ shrink together, so η/σ grows and can kick θ out again: what "
    "learning-rate decay (section 5) is for."))

# %% [markdown]
# Move the sliders: the learning rate (all rules, β = 0.9), then β (momentum μ, RMSProp α, Adam β₁) at η = 0.02.

# %%
LRS, BETAS = [0.005, 0.01, 0.02, 0.04, 0.06], [0.0, 0.5, 0.9, 0.99]
lr_scrubber = Scrubber(viz.optim.draw_lr_frame, LRS, label="learning rate", figsize=(11, 4))
display(lr_scrubber)
display(Scrubber(viz.optim.draw_beta_frame, BETAS, label="beta", figsize=(11, 4)))
lr_scrubber.slider.value = LRS[-1]  # the live slider redraws through its callback: draw it here
lr_scrubber.slider.value = LRS[0]
display(Markdown(
    f"Gradient descent is stable across the valley only for η < 2/40 = 0.05 (on the slider: "
    f"{', '.join(str(lr) for lr in LRS if abs(1 - lr * 40) < 1)}); at η = {LRS[-1]} its "
    f"y-coordinate flips sign and grows by |1 − 40η| = {abs(1 - 40 * LRS[-1]):.1f} per step."))

# %% [markdown]
# ## 5. Learning-rate scheduling: warm-up and decay
#
# The final step of every coordinate is the product of three factors: $\eta$ (global) × $s(t)$ (the schedule: warm-up, then decay) × $1/\sigma_i(t)$ (the adaptive factor of RMSProp/Adam). `gradkit.lectures.warmup_cosine`: linear warm-up over $W$ steps, then cosine decay; `gradkit.lectures.torch_warmup_cosine` is PyTorch's `SequentialLR(LinearLR, CosineAnnealingLR)` of the same schedule.

# %%
T_STEPS = EPOCHS * math.ceil(N_TRAIN / BATCH)
W = max(1, T_STEPS // 5)  # warm-up over the first fifth of training
ours_lr = [lectures.warmup_cosine(t, W, T_STEPS) for t in range(T_STEPS)]
torch_lr = lectures.torch_warmup_cosine(W, T_STEPS)
adam_factors: dict = {}
lectures.adam(lectures.saddle_valley_grad, START, STEPS,
              lectures.warmup_cosine_schedule(20, STEPS, peak=0.1), history=adam_factors)
decayed_loss = lectures.saddle_valley(lectures.rmsprop(
    lectures.saddle_valley_grad, START, STEPS, lectures.warmup_cosine_schedule(10, STEPS, peak=LR0),
    alpha=BETA0))
publish(viz.optim.plot_schedules(ours_lr, torch_lr, adam_factors, rms_loss.numpy(),
                                 decayed_loss.numpy(), LR0, W), "lr_schedules.png")
b_dec = int(decayed_loss.argmin())
display(Markdown(
    f"Our schedule differs from PyTorch's `SequentialLR` by at most "
    f"{np.abs(np.subtract(ours_lr, torch_lr)).max():.1e} over its {T_STEPS} steps. RMSProp with "
    f"the decaying schedule reaches at most {float(decayed_loss[b_dec:].max()):.1e} after its "
    f"best step (constant η: {float(rms_loss[best:].max()):.1e})."))

# %% [markdown]
# Effect on the audio task: constant learning rate vs warm-up + cosine decay with the same peak, at a moderate and at a high peak learning rate (epochs and batch size as in section 1).

# %%
PEAKS, sched_runs = (3e-3, 1e-2), {}
decay = lectures.warmup_cosine_schedule(W, T_STEPS)  # a factor of the peak η, per step
for peak in PEAKS:
    for kind, schedule in (("constant", None), ("warm-up + cosine", decay)):
        sched_runs[(peak, kind)] = train_short(build_model(TrainConfig(), split), split, EPOCHS,
                                               BATCH, peak, schedule=schedule)
sched_table = pd.DataFrame([{"peak η": pk, "schedule": k, "final train loss": h.train_loss.iloc[-1],
                             "final val loss": h.val_loss.iloc[-1],
                             "final val acc": h.val_acc.iloc[-1]}
                            for (pk, k), h in sched_runs.items()]).set_index(["peak η", "schedule"])
display(sched_table)
publish(viz.optim.plot_schedule_runs(sched_runs, PEAKS), "lr_schedule_runs.png")
display(Markdown(
    "Final validation loss, constant vs warm-up + cosine: "
    + "; ".join(f"peak η = {pk}: {sched_table.loc[(pk, 'constant'), 'final val loss']:.3f} vs "
                f"{sched_table.loc[(pk, 'warm-up + cosine'), 'final val loss']:.3f}" for pk in PEAKS)
    + ". One seed each: differences of a few hundredths are within run-to-run noise, so no "
    "schedule is declared better here."))

# %% [markdown]
# ## 6. Classification: one-hot targets, softmax, MSE vs cross-entropy
#
# A class is a one-hot target $\hat y$; the network's logits $z$ become probabilities $y' = \operatorname{softmax}(z)$. Cross-entropy $e = -\sum_i \hat y_i \ln y'_i$ and MSE $e = \sum_i (\hat y_i - y'_i)^2$. With respect to the logits, $\partial e_\text{CE}/\partial z = y' - \hat y$ but $\partial e_\text{MSE}/\partial z = J^\top 2(y' - \hat y)$ with the softmax Jacobian $J = \operatorname{diag}(y') - y'y'^\top$, which vanishes when $y'$ saturates — even when the prediction is confidently wrong. Both formulas are compared with autograd (`gradkit.lectures.gradients_against_autograd`).

# %%
with torch.no_grad():
    probs_val = torch.softmax(resnet(split.x_val)[0], -1)
show = torch.argsort(split.y_val, stable=True)
publish(viz.lectures.plot_classification(
    F.one_hot(split.y_val[show], N_CLASSES).numpy(), probs_val[show].numpy(), split.classes,
    [f"val clip {int(i)}" for i in show]), "Classification.png")
formula_check = pd.Series(lectures.gradients_against_autograd(n=8, n_classes=N_CLASSES),
                          name="max |ours − PyTorch|")
display(formula_check.to_frame())
display(Markdown(
    f"Validation clips: the ResNet (3 blocks) puts on average "
    f"{float(probs_val.max(1).values.mean()):.2f} on its top class and "
    f"{float(probs_val.gather(1, split.y_val[:, None]).mean()):.2f} on the true one. Softmax, "
    f"cross-entropy and both gradient formulas differ from PyTorch's by at most "
    f"{formula_check.max():.1e}."))

# %%
margins = torch.linspace(-12, 12, 241, dtype=torch.float64)  # of a wrong class over the right one
probs_m, g_ce, g_mse = lectures.margin_sweep(margins)
curves = lectures.saturated_start_curves(feats, split.y_train, N_CLASSES, lr=0.5, steps=300)
publish(viz.optim.plot_softmax(margins.numpy(), probs_m.numpy(), g_ce.numpy(), g_mse.numpy(),
                               curves), "Softmax.png")
at_wrong = int((margins - 10).abs().argmin())
display(Markdown(
    f"At margin 10 (confidently wrong) the cross-entropy gradient has norm "
    f"{float(g_ce[at_wrong]):.2f}, the MSE gradient {float(g_mse[at_wrong]):.1e}. After "
    f"{len(curves['MSE'])} steps from the saturated start the training cross-entropy is "
    f"{curves['cross-entropy'][-1]:.3f} when trained with cross-entropy and "
    f"{curves['MSE'][-1]:.3f} when trained with MSE (start {curves['MSE'][0]:.3f})."))

# %% [markdown]
# ## 7. Feature normalisation
#
# For a linear model with squared error the Hessian is $H = X^\top X / N$, and gradient descent's speed is limited by its condition number $\kappa = \lambda_\max/\lambda_\min$: features on very different scales stretch the loss surface into a narrow valley (`gradkit.lectures.feature_norm`). Two time-averaged log-mel bands of the training clips, the second expressed on a 50× larger scale (as a feature in other units would be), predict the clip's angle.

# %%
bands2 = split.x_train.mean(-1).flatten(1)[:, [1, N_MELS // 2]].double().numpy()
raw = bands2 * np.array([1.0, 50.0]) + np.array([0.0, 20.0])
norm = lectures.standardise(raw)
angle = split.angles_train.double().numpy()
angle_t = (angle - angle.mean()) / angle.std()
surfaces = {label: lectures.surface_around_optimum(X, angle_t)
            for label, X in (("raw", raw), ("standardised", norm))}
publish(viz.lectures.plot_feature_norm(raw, norm, surfaces,
                                       ("band 1", f"band {N_MELS // 2} (× 50)")), "FeatureNorm.png")
display(Markdown(
    f"Condition number of the loss surface: {surfaces['raw'][3]:.3g} with the raw features, "
    f"{surfaces['standardised'][3]:.3g} after standardising: gradient descent's stable step is "
    "set by λ_max, its progress along the flattest direction by λ_min."))

# %% [markdown]
# ## 8. Hoeffding: how likely is a bad training set?
#
# Binary classification with thresholds $h \in H$ (predict 1 iff $x > h$), $x \sim U(0, 1)$, $y = 1[x > 1/2]$ with a share of labels flipped, 0/1 loss. A training set of $N$ samples is *bad* if some $h$ has $|L(h, D_\text{train}) - L(h, D_\text{all})| > \varepsilon$. Hoeffding plus a union bound: $P(\text{bad}) \le |H| \cdot 2 e^{-2N\varepsilon^2}$. Each simulated probability comes with its 95 % Wilson interval (`gradkit.lectures.bound_table`).

# %%
EPS, LABEL_NOISE, N_TRIALS = 0.1, 0.1, 20000
hoeff = lectures.bound_table([10, 20, 50, 100, 150, 200, 300, 400, 600], [1, 10, 100], EPS,
                             LABEL_NOISE, N_TRIALS)
display(hoeff.pivot(index="N", columns="|H|", values=["simulated P(bad)", "bound"]))
publish(viz.optim.plot_hoeffding(hoeff, EPS, N_TRIALS), "hoeffding.png")
at100 = hoeff[hoeff.N == 100].set_index("|H|")["simulated P(bad)"]
above = hoeff[~hoeff.consistent]
display(Markdown(
    f"ε = {EPS}, label noise {LABEL_NOISE:.0%}, {N_TRIALS} simulated training sets per point: in "
    f"{int(hoeff.consistent.sum())} of {len(hoeff)} points the simulated P(bad) is at most the "
    "bound within its 95 % interval"
    + (" (above it: " + ", ".join(f"|H| = {r['|H|']}, N = {r.N}" for _, r in above.iterrows())
       + ")" if len(above) else "")
    + f". At N = 100, |H| = 1 → 100 raises the simulated P(bad) from {at100.loc[1]:.3f} to "
    f"{at100.loc[100]:.3f}, against the ×100 of the union bound: neighbouring thresholds make "
    "almost the same mistakes."))

# %% [markdown]
# ## 9. Batch normalisation: training vs evaluation
#
# In training mode BatchNorm normalises with the mini-batch's mean and variance; for evaluation it uses moving averages kept during training, $\bar\mu \leftarrow p\,\bar\mu + (1 - p)\,\mu_t$. PyTorch's `momentum` is the weight of the *new* value, $1 - p$. Each mel band is a channel (`BatchNorm1d(n_mels)` over the time frames); `gradkit.lectures.running_stats_against_torch` runs our recursion beside the layer.

# %%
BN_EPOCHS, BN_BATCH, N_PROBES = 10, min(6, N_TRAIN), 40
bands = split.x_train[:, 0].double()  # [clips, mel bands, frames]
batches = lectures.training_stream(bands, BN_BATCH, BN_EPOCHS)
true_mean = bands.transpose(0, 1).reshape(N_MELS, -1).mean(1)
bn_runs = {p: lectures.running_stats_against_torch(batches, p) for p in (0.9, 0.99)}
bn_table = pd.DataFrame({f"p = {p}": {"max |ours − running_mean|": r.mean_diff,
                                      "max |ours − running_var|": r.var_diff,
                                      "max |ours − training output|": r.output_diff,
                                      "max |momentum read as p − ours|": r.other_convention_diff}
                         for p, r in bn_runs.items()})
display(bn_table)
print(f"BatchNorm1d({N_MELS}): {BN_EPOCHS} epochs of batches of {BN_BATCH} = {len(batches)} steps")

# %%
running = {p: r.mean for p, r in bn_runs.items()}
train_outs, eval_alone, eval_diff = lectures.output_spread(bn_runs[0.9].layer, bands[:1],
                                                           bands[1:], BN_BATCH, N_PROBES)
BAND, frame = int((true_mean - running[0.99][-1]).abs().argmax()), bands.shape[-1] // 2
errors = {p: (running[p] - true_mean).abs().mean(1).numpy() for p in running}
publish(viz.optim.plot_batchnorm(
    [float(b[:, BAND].mean()) for b in batches], {p: running[p][:, BAND].numpy() for p in running},
    float(true_mean[BAND]), errors,
    [0.99**t * float(true_mean.abs().mean()) for t in range(1, len(batches) + 1)],
    train_outs[:, BAND, frame].numpy(), float(eval_alone[BAND, frame]), BAND, frame), "BatchNorm.png")
display(Markdown(
    f"Our recursion differs from `nn.BatchNorm1d(momentum = 1 − p)` by at most "
    f"{bn_table.iloc[:3].max().max():.1e} over {len(batches)} steps, and by "
    f"{bn_table.iloc[3].min():.2f} or more if momentum is read as p. After {len(batches)} steps "
    f"the running mean is off by {errors[0.9][-1]:.3f} (p = 0.9) and {errors[0.99][-1]:.3f} "
    f"(p = 0.99): a weight 0.99^{len(batches)} = {0.99 ** len(batches):.2f} still sits on the "
    f"initial zero. In training mode the same clip's output varies with its batch (sd "
    f"{float(train_outs[:, BAND, frame].std()):.3f} over {N_PROBES} batches); in evaluation mode "
    f"it is one number (it changes by {eval_diff:.1e} when the clip shares a batch)."))

# %%
display(Markdown(f"Notebook 05 ran in {time.perf_counter() - T0:.0f} s (after the imports)."))
show_headlines(**{
    "ResNet Hessian λ_max / λ_min": f"{res.lam_max:.3f} / {res.lam_min:.3f} ({res.n_hvp_max} + "
                                    f"{res.n_hvp_min} HVPs)",
    "critical point reached (small net)": f"{crit_table.loc[saddle_name, 'kind']}, λ_min = {lam_min:.4f}",
    "batch size, small vs full (train loss)": f"{small['train loss']:.3f} vs {large['train loss']:.3f}",
    "diagnosis": "; ".join(f"{k}: {v.replace(chr(10), ', ')}" for k, v in leaves.items() if v),
})
