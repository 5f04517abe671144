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
from gradkit.core.device import pick_device
from gradkit.core.params import count_parameters
from gradkit.core.paths import figures_dir
from gradkit.data import load_split
from gradkit.grads import hessian as hs
from gradkit.grads import per_sample_grads
from gradkit.lectures import (
    batchnorm,
    critical_points,
    diagnosis,
    feature_norm,
    hoeffding,
    minibatch,
    softmax,
)
from gradkit.lectures import optimizers as opt
from gradkit.models import plain_cnn
from gradkit.report.headlines import show_headlines
from gradkit.training import TrainConfig, build_model, epoch_order, sample_loss, train_short
from gradkit.viz import lectures as vlec
from gradkit.viz import optim as vopt
from gradkit.viz.figures import publish
from gradkit.viz.scrubber import Scrubber

# %%
print(f"gradkit {gradkit.__version__}, torch {torch.__version__}, device {pick_device()}; "
      f"figures go to {figures_dir()}")
torch.set_num_threads(1)  # tiny models: one thread is as fast and never fights other processes
pd.set_option("display.precision", 4)
T0 = time.perf_counter()
say = lambda text: display(Markdown(text))  # noqa: E731

split = load_split(MATERIAL, FREQ_HZ, root=DATA_ROOT)
N_TRAIN, N_CLASSES, N_MELS = len(split.y_train), len(split.classes), split.x_train.shape[2]
CHANCE = math.log(N_CLASSES)  # cross-entropy of a uniform guess
print(f"{MATERIAL} / {FREQ_HZ} Hz: {N_TRAIN} training and {len(split.y_val)} validation clips "
      f"of shape {tuple(split.x_train.shape[1:])}, {N_CLASSES} angle classes "
      f"(chance loss ln {N_CLASSES} = {CHANCE:.3f})")

# %% [markdown]
# ## 1. Why training fails: model bias, optimisation or overfitting?
#
# The notes' recipe: if the loss on the **training** set is high, either the model is too simple (model bias) or gradient descent did not find a low loss (optimisation). They are told apart by changing the model: a deeper network can represent everything a shallower one can, so if the deeper one reaches a *higher training loss*, the optimiser failed — not overfitting, which shows only on *validation* data. The recipe is only applied to a model that has finished training: a model whose training loss still falls over its last 10 epochs (OLS slope test, `gradkit.lectures.diagnosis.training_trend`) is **under-trained**, and said so. Candidates: plain CNNs without skip connections and `ResNetAudioRanker` at three depths, all with the same budget (printed below).

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
histories, trained, rows = {}, {}, []
for name, (family, depth, make) in zoo.items():
    trained[name] = make()
    h = histories[name] = train_short(trained[name], split, EPOCHS, BATCH, LR)
    rows.append({"model": name, "family": family, "depth": depth,
                 "parameters": count_parameters(trained[name]), "train loss": h.train_loss.iloc[-1],
                 "val loss": h.val_loss.iloc[-1], "train acc": h.train_acc.iloc[-1],
                 "val acc": h.val_acc.iloc[-1], "training loss trend":
                 diagnosis.training_trend(h.train_loss.to_numpy()), "s / epoch": h.seconds.median()})
why = pd.DataFrame(rows).set_index("model")
print(f"budget: {EPOCHS} epochs, Adam, learning rate {LR:g}, batches of {BATCH}")
display(why)
publish(vlec.plot_training_losses(histories, CHANCE, N_CLASSES), "training_losses.png")

# %%
BIAS_LEVEL, GAP_LEVEL = 0.5 * CHANCE, 0.5
verdicts = []
for _family, group in why.groupby("family", sort=False):
    verdicts += diagnosis.diagnose(list(group.index), list(group.depth), list(group["train loss"]),
                                   list(group["val loss"]), BIAS_LEVEL, GAP_LEVEL,
                                   trends=list(group["training loss trend"]))
say("**Diagnosis** (model bias: training loss above half the chance loss, "
    f"{BIAS_LEVEL:.3f}, after a plateau; overfitting: validation loss more than {GAP_LEVEL} "
    "above training loss):\n\n" + "\n".join(f"- {v}" for v in verdicts))
kinds = ("under-trained", "optimisation", "model bias", "overfitting", "fine")
leaves = {k: "\n".join(v.split(":")[0] for v in verdicts if f": {k}" in v) for k in kinds}
opt_failures = leaves["optimisation"].split("\n") if leaves["optimisation"] else []
publish(vlec.plot_decision_diagram(leaves), "Problem-in-training.svg")

# %% [markdown]
# ## 2. Critical points: where the gradient vanishes
#
# Near a critical point $\theta'$ ($\nabla L = 0$), $L(\theta) \approx L(\theta') + \tfrac12 (\theta-\theta')^\top H (\theta-\theta')$: all eigenvalues of the Hessian $H$ positive → local minimum; all negative → local maximum; both signs → saddle point, and moving along an eigenvector $u$ of a negative eigenvalue $\lambda$ lowers the loss by about $\tfrac12|\lambda|s^2$.
#
# Gradient descent is repelled by saddles, so to *reach* critical points of any kind we solve $\nabla L(\theta) = 0$ with Levenberg–Marquardt (`gradkit.lectures.critical_points.find_critical_point`) on a network small enough for its dense Hessian: the time-averaged log-mel bands → 4 tanh units → one output per class, float64, the training clips.

# %%
feats = split.x_train.mean(-1).flatten(1).double()  # [N_TRAIN, N_MELS]: time-averaged bands
feats = (feats - feats.mean(0)) / feats.std(0).clamp_min(1e-12)
tiny = torch.nn.Sequential(torch.nn.Linear(N_MELS, 4), torch.nn.Tanh(),
                           torch.nn.Linear(4, N_CLASSES)).double()
tiny_loss, _ = hs.flat_loss(tiny, F.cross_entropy, feats, split.y_train)
P_TINY = sum(p.numel() for p in tiny.parameters())
hessian_of = torch.func.hessian(tiny_loss)
starts = {"small random start (σ = 0.1)": (0, 0.1), "random start (σ = 1), seed 0": (0, 1.0),
          "random start (σ = 1), seed 1": (1, 1.0)}
critical, rows = {}, []
for name, (seed, scale) in starts.items():
    theta0 = torch.randn(P_TINY, generator=torch.Generator().manual_seed(seed),
                         dtype=torch.float64) * scale
    theta, norms = critical_points.find_critical_point(tiny_loss, theta0, tol=1e-8, max_iter=200)
    ev = torch.linalg.eigvalsh(hessian_of(theta))
    critical[name] = (theta, ev)
    zero = 1e-6 * float(ev.abs().max())
    rows.append({"start": name, "LM steps": len(norms) - 1, "|∇L| reached": norms[-1],
                 "loss": float(tiny_loss(theta)), "λ_min": float(ev[0]), "λ_max": float(ev[-1]),
                 "# λ<0": int((ev < -zero).sum()), "# λ>0": int((ev > zero).sum()),
                 "kind": critical_points.classify_critical_point(ev)})
crit_table = pd.DataFrame(rows).set_index("start")
display(crit_table)
print(f"tiny network {N_MELS} → 4 → {N_CLASSES}: P = {P_TINY} parameters, {N_TRAIN} clips")

# %% [markdown]
# Lanczos (`gradkit.grads.hessian`, Hessian-vector products only) must find the same extreme eigenvalues as the dense matrix. Then we step along the eigenvector of the most negative eigenvalue at the lowest saddle (if one was reached).

# %%
saddles = crit_table[crit_table.kind == "saddle point"]
saddle_name = saddles.loss.idxmin() if len(saddles) else crit_table.loss.idxmin()
theta_s, ev_s = critical[saddle_name]
torch.nn.utils.vector_to_parameters(theta_s, tiny.parameters())
op_tiny = hs.HessianOperator(tiny, F.cross_entropy, feats, split.y_train)
top = hs.top_eigenvalues(None, None, None, None, k=3, tol=1e-10, hvp=op_tiny)
low = hs.min_eigenvalue(None, None, None, None, tol=1e-10, hvp=op_tiny)
assert torch.allclose(top.eigenvalues, ev_s.flip(0)[:3], rtol=1e-6, atol=1e-9)
assert torch.allclose(low.eigenvalues, ev_s[:1], rtol=1e-6, atol=1e-9)
u_min, u_max = low.eigenvectors[0], top.eigenvectors[0]
lam_min, lam_max = float(low.eigenvalues[0]), float(top.eigenvalues[0])
s_grid = torch.linspace(-1.5, 1.5, 61, dtype=torch.float64)
L0 = float(tiny_loss(theta_s))
along = {k: torch.stack([tiny_loss(theta_s + s * u) for s in s_grid]).detach() - L0
         for k, u in (("min", u_min), ("max", u_max))}
small = (s_grid.abs() >= 0.05) & (s_grid.abs() <= 0.5)
drop = -float(along["min"][small].min())
say(f"Lanczos = dense: top-3 {top.eigenvalues.numpy().round(5)} in {top.n_hvp} HVPs. At the "
    f"**{saddle_name}** critical point ({crit_table.loc[saddle_name, 'kind']}; loss {L0:.4f}) "
    f"λ_min = {lam_min:.4f}: stepping along its eigenvector changes the loss by {-drop:+.4f} at "
    f"best for |s| ≤ 0.5 (the quadratic model predicts {0.5 * lam_min * 0.25:+.4f} at |s| = 0.5); "
    f"along the eigenvector of λ_max = {lam_max:.4f} it rises.")

# %% [markdown]
# The same tools on the real model: the ResNet (3 blocks) after its training above, full training set, cross-entropy. Its $P \times P$ Hessian is never formed: Lanczos for the extreme eigenvalues, stochastic Lanczos quadrature (SLQ, several random probes) for the density, Hutchinson for the trace.

# %%
resnet = trained["ResNet, 3 blocks"].eval()
op_res = hs.HessianOperator(resnet, sample_loss, split.x_train, split.y_train)
res_top = hs.top_eigenvalues(None, None, None, None, k=1, tol=1e-4, hvp=op_res)
res_low = hs.min_eigenvalue(None, None, None, None, tol=1e-3, max_iter=80, hvp=op_res)
N_PROBES_SLQ = 4
res_dens = hs.spectral_density(None, None, None, None, n_steps=20, n_vectors=N_PROBES_SLQ,
                               hvp=op_res)
res_tr = hs.hutchinson_trace(None, None, None, None, n_samples=8, hvp=op_res)
grad_norm = float(op_res.grad.detach().norm())
lam_top, lam_low = float(res_top.eigenvalues[0]), float(res_low.eigenvalues[0])
grid = torch.linspace(float(res_dens.nodes.min()) - 1, float(res_dens.nodes.max()) + 1, 400)
sigma = 0.01 * (lam_top - lam_low)
per_probe = torch.stack([hs.DensityResult(res_dens.nodes[i:i + 1], res_dens.weights[i:i + 1], 0,
                                          op_res.n_params).density(grid, sigma)
                         for i in range(N_PROBES_SLQ)])
near_zero = float(res_dens.weights[res_dens.nodes.abs() < 0.05 * lam_top].sum()
                  / res_dens.weights.sum())
say(f"ResNet Hessian (P = {op_res.n_params}, {why.loc['ResNet, 3 blocks', 'training loss trend']} "
    f"after {EPOCHS} epochs, |∇L| = {grad_norm:.3f}): λ_max = {lam_top:.4f} ({res_top.n_hvp} HVPs), "
    f"λ_min = {lam_low:.4f} ({res_low.n_hvp} HVPs), trace {res_tr.trace:.1f} ± "
    f"{res_tr.std_error:.1f} (Hutchinson, {res_tr.n_hvp} probes). SLQ over {N_PROBES_SLQ} probes "
    f"puts {100 * near_zero:.1f} % of the spectral mass within ±5 % of λ_max around zero.")

# %%
fig = vlec.plot_hessian_spectrum(
    {k: v[1].numpy() for k, v in critical.items()},
    {k: crit_table.loc[k, "kind"].split(" (")[0] for k in critical},
    {"s": s_grid.numpy(), "along_min": along["min"].numpy(), "along_max": along["max"].numpy(),
     "lam_min": lam_min, "lam_max": lam_max, "title": f"Leaving the critical point ({saddle_name})"},
    {"grid": grid.numpy(), "values": per_probe.numpy(), "lam_min": lam_low, "lam_max": lam_top,
     "sigma": sigma, "title": f"ResNet after {EPOCHS} epochs: SLQ spectrum (P = {op_res.n_params})"})
publish(fig, "hessian_spectrum.png")

# %% [markdown]
# ## 3. Batch size
#
# A mini-batch gradient $g_B$ is the mean of $B$ per-sample gradients, so it scatters around the full gradient $g$ with $\mathbb{E}\|g_B - g\|^2 = \operatorname{tr}\Sigma / B$ (the notes' "small batch = noisy"); drawn without replacement from $N$ samples, times $(N - B)/(N - 1)$. Measured with exact per-sample gradients of the ResNet at its current weights.

# %%
G = per_sample_grads(resnet, sample_loss, split.x_train, split.y_train)
B_VALUES = sorted({b for b in (1, 2, 3, 4, 6, 9, 12, 18, 27) if b < N_TRAIN} | {BATCH, N_TRAIN})
N_DRAWS, rows = 2000, []
for B in B_VALUES:
    measured, se = minibatch.minibatch_gradient_noise(G, B, n_draws=N_DRAWS, seed=B)
    expected = minibatch.expected_minibatch_noise(G, B)
    assert abs(measured - expected) <= 5 * se + 1e-9 * expected + 1e-12, (B, measured, expected)
    rows.append({"B": B, "measured E‖g_B − g‖²": measured, "± s.e.": se,
                 "trΣ/B·(N−B)/(N−1)": expected})
noise = pd.DataFrame(rows).set_index("B")
display(noise)
tr_sigma = minibatch.expected_minibatch_noise(G, 1)
publish(vlec.plot_minibatch_noise(noise, tr_sigma, N_TRAIN, N_DRAWS), "minibatch_noise.png")
say(f"All {len(B_VALUES)} measurements agree with the formula within 5 standard errors; it is "
    f"exactly {noise.loc[N_TRAIN].iloc[0]:.0f} at B = N = {N_TRAIN}.")

# %% [markdown]
# Small against large batches on the audio task. Per epoch the small batch takes more, noisier steps; the fair comparison is also made **at an equal number of updates** (`gradkit.lectures.minibatch.at_equal_updates`).

# %%
SMALL_B = min(4, N_TRAIN)
batch_runs = {BATCH: histories["ResNet, 3 blocks"]}
for B in sorted({SMALL_B, N_TRAIN} - {BATCH}):
    batch_runs[B] = train_short(build_model(TrainConfig(), split), split, EPOCHS, B, LR)
batch_table = pd.DataFrame([{"batch size": B, "updates / epoch": math.ceil(N_TRAIN / B),
                             "s / epoch (median)": h.seconds.median(),
                             "train loss": h.train_loss.iloc[-1], "val acc": h.val_acc.iloc[-1]}
                            for B, h in sorted(batch_runs.items())]).set_index("batch size")
display(batch_table)
equal = minibatch.at_equal_updates(batch_runs, N_TRAIN)
display(equal.rename(columns=lambda b: f"train loss, B = {b}"))
publish(vlec.plot_batch_sizes(batch_runs, N_TRAIN), "batch_sizes.png")
small, large = batch_table.loc[SMALL_B], batch_table.loc[N_TRAIN]
say(f"After {EPOCHS} epochs: B = {SMALL_B} training loss {small['train loss']:.3f}, B = {N_TRAIN} "
    f"{large['train loss']:.3f} ({math.ceil(N_TRAIN / SMALL_B) * EPOCHS} vs {EPOCHS} updates). "
    + (f"At the same {equal.index[-1]} updates: "
       + ", ".join(f"B = {b} {v:.3f}" for b, v in equal.iloc[-1].items())
       + ". One seed: differences of a few hundredths are within run-to-run noise."
       if len(equal) else "No common number of updates to compare at."))

# %% [markdown]
# ## 4. Momentum, AdaGrad, RMSProp, Adam
#
# The update rules as the notes write them, in `gradkit.lectures.optimizers` (per coordinate $i$): momentum $d \leftarrow \mu d + g$, $\theta \leftarrow \theta - \eta d$; root mean square $\sigma_t = \sqrt{\operatorname{mean}_{s\le t} g_s^2}$, $\theta \leftarrow \theta - \eta g/\sigma_t$; AdaGrad the same with $\eta_t = \eta/\sqrt{t+1}$; RMSProp $\sigma_t^2 = \alpha\sigma_{t-1}^2 + (1-\alpha) g_t^2$; Adam = RMSProp + momentum, both bias-corrected. Each is asserted equal to `torch.optim` on the 2-D surface below and on the tiny network of section 2.

# %%
START = torch.tensor([0.01, 1.0], dtype=torch.float64)
tiny_theta0 = critical["random start (σ = 1), seed 0"][0] * 0.5


def pairs(lr, beta):
    """(ours, torch's) optimiser for each rule at learning rate ``lr`` and ``beta``."""
    T = torch.optim
    return {"gradient descent": (lambda g, t, n: opt.gradient_descent(g, t, n, lr),
                                 lambda ps: T.SGD(ps, lr=lr)),
            "momentum": (lambda g, t, n: opt.momentum(g, t, n, lr, mu=beta),
                         lambda ps: T.SGD(ps, lr=lr, momentum=beta)),
            "AdaGrad": (lambda g, t, n: opt.adagrad(g, t, n, lr), lambda ps: T.Adagrad(ps, lr=lr)),
            "RMSProp": (lambda g, t, n: opt.rmsprop(g, t, n, lr, alpha=beta),
                        lambda ps: T.RMSprop(ps, lr=lr, alpha=beta)),
            "Adam": (lambda g, t, n: opt.adam(g, t, n, lr, betas=(beta, 0.999)),
                     lambda ps: T.Adam(ps, lr=lr, betas=(beta, 0.999)))}

# %%
rows = []
for problem, grad_fn, theta0, steps in [("2-D surface", opt.saddle_valley_grad, START, 60),
                                        ("tiny network", torch.func.grad(tiny_loss), tiny_theta0, 15)]:
    for name, (ours, theirs) in pairs(0.02, 0.9).items():
        a, b = ours(grad_fn, theta0, steps), opt.torch_path(theirs, grad_fn, theta0, steps)
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12), (problem, name)
        rows.append({"problem": problem, "rule": name, "steps": steps,
                     "max |ours − torch.optim|": float((a - b).abs().max())})
display(pd.DataFrame(rows))

# %%
notes_rms = opt.rmsprop(opt.saddle_valley_grad, START, 60, 0.02, alpha=0.9, start="notes")
seeded_rms = opt.torch_path(lambda ps: torch.optim.RMSprop(ps, lr=0.02, alpha=0.9),
                            opt.saddle_valley_grad, START, 60,
                            init_state=lambda g: {"step": torch.tensor(0.0), "square_avg": g**2})
assert torch.allclose(notes_rms, seeded_rms, rtol=1e-9, atol=1e-12)
rms_decay = opt.root_mean_square(opt.saddle_valley_grad, START, 60,
                                 lambda t: 0.02 / math.sqrt(t + 1))
assert torch.allclose(rms_decay, opt.adagrad(opt.saddle_valley_grad, START, 60, 0.02, eps=0.0),
                      rtol=1e-9, atol=1e-12)
say(f"All {len(rows)} trajectories equal `torch.optim`'s (largest difference "
    f"{max(r['max |ours − torch.optim|'] for r in rows):.1e}); the notes' RMSProp start "
    "σ₀ = |g₀| equals PyTorch's seeded with g₀², and the root-mean-square rule with "
    "η/√(t+1) equals AdaGrad.")

# %% [markdown]
# The 2-D surface $L(x, y) = (x^2 - 1)^2/4 + 20 y^2$: a **saddle** at (0, 0) (Hessian eigenvalues −1 and 40) between two minima at (±1, 0), in a **narrow valley**. Start at (0.01, 1). Plain gradient descent must keep $\eta < 2/40 = 0.05$ to stay in the valley and then crawls off the saddle; the adaptive rules divide each coordinate by its own gradient scale. Losses are drawn on a log axis without clamping: a step at exactly $L = 0$ is left out and counted in the legend.

# %%
STEPS, LR0, BETA0 = 150, 0.04, 0.9
run_all = lambda lr, beta, steps=STEPS: {  # noqa: E731
    name: ours(opt.saddle_valley_grad, START, steps) for name, (ours, _) in pairs(lr, beta).items()}
paths = run_all(LR0, BETA0)
reach = {name: opt.steps_to(path, 1e-3) for name, path in paths.items()}
g_hist = opt.saddle_valley_grad(paths["RMSProp"][:-1])
sq = batchnorm.moving_average(g_hist**2, BETA0, 0.0)  # σ_t² of torch's RMSProp
publish(vopt.plot_rmsprop(paths, f"Trajectories, η = {LR0}, β = {BETA0}", LR0, sq), "RMSProp.png")
display(pd.Series({k: (v if v is not None else f"not within {STEPS}") for k, v in reach.items()},
                  name="steps to L < 1e-3"))
rms_loss = opt.saddle_valley(paths["RMSProp"])
best = int(rms_loss.argmin())
say(f"RMSProp's loss falls to {float(rms_loss[best]):.1e} at step {best} and afterwards reaches "
    f"at most {float(rms_loss[best:].max()):.1e}; its effective learning rate for x grows to "
    f"{float(LR0 / (sq[-1, 0].sqrt() + 1e-8)):.2g} on the flat floor while the one for y stays "
    f"near {float(LR0 / (sq[:, 1].sqrt().max() + 1e-8)):.2g} on the steep walls. Near a minimum the "
    "gradient and σ shrink together, so η/σ grows and can kick θ out again: what learning-rate "
    "decay (section 5) is for.")

# %% [markdown]
# Move the sliders: the learning rate (all rules, β = 0.9), then β (momentum μ, RMSProp α, Adam β₁) at η = 0.02.

# %%
LRS, BETAS = [0.005, 0.01, 0.02, 0.04, 0.06], [0.0, 0.5, 0.9, 0.99]
draw_lr = lambda fig, lr: vopt.draw_paths(*fig.subplots(1, 2), run_all(lr, 0.9, 100),  # noqa: E731
                                          f"η = {lr}, β = 0.9")
draw_beta = lambda fig, beta: vopt.draw_paths(  # noqa: E731
    *fig.subplots(1, 2), {k: v for k, v in run_all(0.02, beta, 100).items()
                          if k in ("momentum", "RMSProp", "Adam")}, f"η = 0.02, β = {beta}")
lr_scrubber = Scrubber(draw_lr, LRS, label="learning rate", figsize=(11, 4))
display(lr_scrubber)
display(Scrubber(draw_beta, BETAS, label="beta", figsize=(11, 4)))
lr_scrubber.slider.value = LRS[-1]  # the live slider redraws through its callback
assert lr_scrubber.shown == LRS[-1]
lr_scrubber.slider.value = LRS[0]
say(f"Gradient descent is stable across the valley only for η < 2/40 = 0.05 (on the slider: "
    f"{', '.join(str(lr) for lr in LRS if abs(1 - lr * 40) < 1)}); at η = {LRS[-1]} its "
    f"y-coordinate flips sign and grows by |1 − 40η| = {abs(1 - 40 * LRS[-1]):.1f} per step.")

# %% [markdown]
# ## 5. Learning-rate scheduling: warm-up and decay
#
# The final step of every coordinate is the product of three factors: $\eta$ (global) × $s(t)$ (the schedule: warm-up, then decay) × $1/\sigma_i(t)$ (the adaptive factor of RMSProp/Adam). `gradkit.lectures.optimizers.warmup_cosine`: linear warm-up over $W$ steps, then cosine decay.

# %%
T_STEPS = EPOCHS * math.ceil(N_TRAIN / BATCH)
W = max(1, T_STEPS // 5)  # warm-up over the first fifth of training
ours_lr = [opt.warmup_cosine(t, W, T_STEPS, 0.0) for t in range(T_STEPS)]
p = torch.nn.Parameter(torch.zeros(1))
sgd = torch.optim.SGD([p], lr=1.0)
seq = torch.optim.lr_scheduler.SequentialLR(
    sgd, [torch.optim.lr_scheduler.LinearLR(sgd, 1 / W, 1.0, total_iters=W - 1),
          torch.optim.lr_scheduler.CosineAnnealingLR(sgd, T_max=max(T_STEPS - W, 1))],
    milestones=[W])
torch_lr = []
for _ in range(T_STEPS):
    torch_lr.append(sgd.param_groups[0]["lr"])
    sgd.step()
    seq.step()
assert np.allclose(ours_lr, torch_lr, rtol=1e-9, atol=1e-12)
f = lambda t: opt.warmup_cosine(t, 20, STEPS, 0.05)  # noqa: E731
hist = {}
adam_sched = opt.adam(opt.saddle_valley_grad, START, STEPS, lambda t: 0.1 * f(t), history=hist)
adam_torch = opt.torch_path(lambda ps: torch.optim.Adam(ps, lr=0.1), opt.saddle_valley_grad, START,
                            STEPS, lambda o: torch.optim.lr_scheduler.LambdaLR(o, f))
assert torch.allclose(adam_sched, adam_torch, rtol=1e-9, atol=1e-12)
rms_decayed = opt.rmsprop(opt.saddle_valley_grad, START, STEPS,
                          lambda t: LR0 * opt.warmup_cosine(t, 10, STEPS, 0.0), alpha=BETA0)
decayed_loss = opt.saddle_valley(rms_decayed)
publish(vopt.plot_schedules(ours_lr, torch_lr, hist, rms_loss.numpy(), decayed_loss.numpy(), LR0,
                            W), "lr_schedules.png")

# %%
b_dec = int(decayed_loss.argmin())
say(f"Our schedule equals PyTorch's `SequentialLR` at all {T_STEPS} steps and scheduled Adam "
    "equals `torch.optim.Adam` + `LambdaLR`. RMSProp with the decaying schedule reaches at most "
    f"{float(decayed_loss[b_dec:].max()):.1e} after its best step (constant η: "
    f"{float(rms_loss[best:].max()):.1e}).")

# %% [markdown]
# Effect on the audio task: constant learning rate vs warm-up + cosine decay with the same peak, at a moderate and at a high peak learning rate (epochs and batch size as in section 1).

# %%
PEAKS, sched_runs = (3e-3, 1e-2), {}
for peak in PEAKS:
    for kind in ("constant", "warm-up + cosine"):
        schedule = (lambda t: opt.warmup_cosine(t, W, T_STEPS, 0.0)) if kind != "constant" else None
        sched_runs[(peak, kind)] = train_short(build_model(TrainConfig(), split), split, EPOCHS,
                                               BATCH, peak, schedule=schedule)
sched_table = pd.DataFrame([{"peak η": pk, "schedule": k, "final train loss": h.train_loss.iloc[-1],
                             "final val loss": h.val_loss.iloc[-1],
                             "final val acc": h.val_acc.iloc[-1]}
                            for (pk, k), h in sched_runs.items()]).set_index(["peak η", "schedule"])
display(sched_table)
publish(vopt.plot_schedule_runs(sched_runs, PEAKS), "lr_schedule_runs.png")
say("One seed each: the table gives the numbers; differences of a few hundredths are within "
    "run-to-run noise, so no schedule is declared better here.")

# %% [markdown]
# ## 6. Classification: one-hot targets, softmax, MSE vs cross-entropy
#
# A class is a one-hot target $\hat y$; the network's logits $z$ become probabilities $y' = \operatorname{softmax}(z)$. Cross-entropy $e = -\sum_i \hat y_i \ln y'_i$ and MSE $e = \sum_i (\hat y_i - y'_i)^2$. With respect to the logits, $\partial e_\text{CE}/\partial z = y' - \hat y$ but $\partial e_\text{MSE}/\partial z = J^\top 2(y' - \hat y)$ with the softmax Jacobian $J = \operatorname{diag}(y') - y'y'^\top$, which vanishes when $y'$ saturates — even when the prediction is confidently wrong.

# %%
with torch.no_grad():
    probs_val = torch.softmax(resnet(split.x_val)[0], -1)
show = torch.argsort(split.y_val, stable=True)
fig = vlec.plot_classification(F.one_hot(split.y_val[show], N_CLASSES).numpy(),
                               probs_val[show].numpy(), split.classes,
                               [f"val clip {int(i)}" for i in show])
publish(fig, "Classification.png")
z = torch.randn(8, N_CLASSES, dtype=torch.float64, requires_grad=True)
y_rand = torch.randint(0, N_CLASSES, (8,), generator=torch.Generator().manual_seed(0))
onehot = F.one_hot(y_rand, N_CLASSES).double()
assert torch.allclose(softmax.softmax(z), torch.softmax(z, -1))
ce = F.cross_entropy(z, y_rand, reduction="sum")
assert torch.allclose(ce, -(onehot * softmax.softmax(z).log()).sum())
assert torch.allclose(torch.autograd.grad(ce, z)[0], softmax.ce_grad_logits(z.detach(), y_rand))
mse = ((onehot - torch.softmax(z, -1)) ** 2).sum()
assert torch.allclose(torch.autograd.grad(mse, z)[0], softmax.mse_grad_logits(z.detach(), y_rand))
say(f"Validation clips: the ResNet (3 blocks) puts on average {float(probs_val.max(1).values.mean()):.2f} "
    f"on its top class and {float(probs_val.gather(1, split.y_val[:, None]).mean()):.2f} on the "
    "true one; both gradient formulas equal autograd's.")

# %%
m = torch.linspace(-12, 12, 241, dtype=torch.float64)  # margin of a wrong class over the right one
zs = torch.stack([-m / 2, m / 2, torch.zeros_like(m)], 1)
target = torch.zeros(len(m), dtype=torch.long)
g_ce = softmax.ce_grad_logits(zs, target).norm(dim=1)
g_mse = softmax.mse_grad_logits(zs, target).norm(dim=1)
# %%
lin0 = torch.nn.Linear(N_MELS, N_CLASSES).double()
with torch.no_grad():
    lin0.weight.copy_(0.01 * torch.randn(lin0.weight.shape, generator=torch.Generator().manual_seed(0)))
    lin0.bias.zero_()
    lin0.bias[0] = 10.0  # every clip predicted as class 0 with probability ≈ 1
onehot_train = F.one_hot(split.y_train, N_CLASSES).double()
losses = {"cross-entropy": lambda z_: F.cross_entropy(z_, split.y_train),
          "MSE": lambda z_: ((torch.softmax(z_, -1) - onehot_train) ** 2).sum(1).mean()}
curves = {}
for loss_name, loss_of in losses.items():
    lin = torch.nn.Linear(N_MELS, N_CLASSES).double()
    lin.load_state_dict(lin0.state_dict())
    curves[loss_name] = softmax.train_linear(lin, loss_of, feats, split.y_train, lr=0.5, steps=300)
publish(vopt.plot_softmax(m.numpy(), softmax.softmax(zs).numpy(), g_ce.numpy(), g_mse.numpy(),
                          curves), "Softmax.png")
at_wrong = int((m - 10).abs().argmin())
say(f"At margin 10 (confidently wrong) the cross-entropy gradient has norm {float(g_ce[at_wrong]):.2f}, "
    f"the MSE gradient {float(g_mse[at_wrong]):.1e}. After 300 steps from the saturated start "
    f"the training cross-entropy is {curves['cross-entropy'][-1]:.3f} when trained with "
    f"cross-entropy and {curves['MSE'][-1]:.3f} when trained with MSE (start "
    f"{curves['MSE'][0]:.3f}).")

# %% [markdown]
# ## 7. Feature normalisation
#
# For a linear model with squared error the Hessian is $H = X^\top X / N$, and gradient descent's speed is limited by its condition number $\kappa = \lambda_\max/\lambda_\min$: features on very different scales stretch the loss surface into a narrow valley (`gradkit.lectures.feature_norm`). Two time-averaged log-mel bands of the training clips, the second expressed on a 50× larger scale (as a feature in other units would be), predict the clip's angle.

# %%
bands2 = split.x_train.mean(-1).flatten(1)[:, [1, N_MELS // 2]].double().numpy()
raw = bands2 * np.array([1.0, 50.0]) + np.array([0.0, 20.0])
norm = feature_norm.standardise(raw)
angle = split.angles_train.double().numpy()
angle_t = (angle - angle.mean()) / angle.std()
surfaces = {}
for label, X in (("raw", raw), ("standardised", norm)):
    w_opt = np.linalg.lstsq(X, angle_t, rcond=None)[0]
    half = 3 * np.abs(w_opt) + 0.5 / X.std(0)
    w1, w2 = (np.linspace(w_opt[k] - half[k], w_opt[k] + half[k], 120) for k in range(2))
    surfaces[label] = (w1, w2, feature_norm.loss_surface(X, angle_t, w1, w2),
                       feature_norm.condition_number(X))
publish(vlec.plot_feature_norm(raw, norm, surfaces, ("band 1", f"band {N_MELS // 2} (× 50)")),
        "FeatureNorm.png")
say(f"Condition number of the loss surface: {surfaces['raw'][3]:.3g} with the raw features, "
    f"{surfaces['standardised'][3]:.3g} after standardising: gradient descent's stable step is "
    "set by λ_max, its progress along the flattest direction by λ_min.")

# %% [markdown]
# ## 8. Hoeffding: how likely is a bad training set?
#
# Binary classification with thresholds $h \in H$ (predict 1 iff $x > h$), $x \sim U(0, 1)$, $y = 1[x > 1/2]$ with a share of labels flipped, 0/1 loss. A training set of $N$ samples is *bad* if some $h$ has $|L(h, D_\text{train}) - L(h, D_\text{all})| > \varepsilon$. Hoeffding plus a union bound: $P(\text{bad}) \le |H| \cdot 2 e^{-2N\varepsilon^2}$.

# %%
EPS, LABEL_NOISE, N_TRIALS = 0.1, 0.1, 20000
N_VALUES, H_SIZES, rows = [10, 20, 50, 100, 150, 200, 300, 400, 600], [1, 10, 100], []
for size in H_SIZES:
    thresholds = np.array([0.3]) if size == 1 else np.linspace(0.5 / size, 1 - 0.5 / size, size)
    for n in N_VALUES:
        p_bad = hoeffding.simulate_bad_training_sets(n, EPS, thresholds, noise=LABEL_NOISE,
                                                     n_trials=N_TRIALS, seed=n)
        bound = float(hoeffding.hoeffding_bound(n, EPS, size))
        se = math.sqrt(max(p_bad * (1 - p_bad), 1 / N_TRIALS) / N_TRIALS)
        assert p_bad <= bound + 5 * se, (size, n, p_bad, bound)
        rows.append({"|H|": size, "N": n, "simulated P(bad)": p_bad, "bound": bound})
hoeff = pd.DataFrame(rows)
display(hoeff.pivot(index="N", columns="|H|", values=["simulated P(bad)", "bound"]))
publish(vopt.plot_hoeffding(hoeff, EPS, N_TRIALS), "hoeffding.png")
at100 = hoeff[hoeff.N == 100].set_index("|H|")["simulated P(bad)"]
say(f"ε = {EPS}, label noise {LABEL_NOISE:.0%}, {N_TRIALS} simulated training sets per point: "
    f"every simulated probability lies under the bound. At N = 100, |H| = 1 → 100 raises the "
    f"simulated P(bad) from {at100.loc[1]:.3f} to {at100.loc[100]:.3f}, far less than the ×100 "
    "of the union bound: neighbouring thresholds make almost the same mistakes.")

# %% [markdown]
# ## 9. Batch normalisation: training vs evaluation
#
# In training mode BatchNorm normalises with the mini-batch's mean and variance; for evaluation it uses moving averages kept during training, $\bar\mu \leftarrow p\,\bar\mu + (1 - p)\,\mu_t$. PyTorch's `momentum` is the weight of the *new* value, $1 - p$. Each mel band is a channel (`BatchNorm1d(n_mels)` over the time frames).

# %%
BN_EPOCHS, BN_BATCH, N_PROBES = 10, min(6, N_TRAIN), 40
bands = split.x_train[:, 0].double()  # [clips, mel bands, frames]
batches = [bands[order[i:i + BN_BATCH]] for e in range(1, BN_EPOCHS + 1)
           for order in [epoch_order(N_TRAIN, 0, e)] for i in range(0, N_TRAIN, BN_BATCH)]
true_mean = bands.transpose(0, 1).reshape(N_MELS, -1).mean(1)
running, bn_layers = {}, {}
for p_ in (0.9, 0.99):
    bn = torch.nn.BatchNorm1d(N_MELS, momentum=1 - p_).double()
    with torch.no_grad():
        torch_means = []
        for b in batches:
            out = bn(b)
            assert torch.allclose(out, batchnorm.batchnorm_output(b, *batchnorm.batch_stats(b),
                                                                  bn.weight, bn.bias))
            torch_means.append(bn.running_mean.clone())
    ours_mean, ours_var = batchnorm.batchnorm_running_stats(batches, p_)
    assert torch.allclose(ours_mean, torch.stack(torch_means))
    assert torch.allclose(ours_var[-1], bn.running_var)
    assert not torch.allclose(batchnorm.batchnorm_running_stats(batches, 1 - p_)[0], ours_mean)
    running[p_], bn_layers[p_] = ours_mean, bn.eval()
print(f"BatchNorm1d({N_MELS}): {BN_EPOCHS} epochs of batches of {BN_BATCH} = {len(batches)} steps")

# %%
bn, x0 = bn_layers[0.9], bands[:1]
with torch.no_grad():
    eval_alone = bn(x0)
    assert torch.allclose(eval_alone, bn(torch.cat([x0, bands[1:BN_BATCH]]))[:1])
gen = torch.Generator().manual_seed(0)
with batchnorm.probing(bn):  # train mode for the probe; running statistics restored afterwards
    train_outs = torch.stack([bn(torch.cat([x0, bands[torch.randperm(N_TRAIN - 1, generator=gen)
                                                      [:BN_BATCH - 1] + 1]]))[0]
                              for _ in range(N_PROBES)])
BAND, frame = int((true_mean - running[0.99][-1]).abs().argmax()), bands.shape[-1] // 2
errors = {p_: (running[p_] - true_mean).abs().mean(1).numpy() for p_ in (0.9, 0.99)}
fig = vopt.plot_batchnorm([float(b[:, BAND].mean()) for b in batches],
                          {p_: running[p_][:, BAND].numpy() for p_ in running},
                          float(true_mean[BAND]), errors,
                          [0.99**t * float(true_mean.abs().mean()) for t in range(1, len(batches) + 1)],
                          train_outs[:, BAND, frame].numpy(), float(eval_alone[0, BAND, frame]),
                          BAND, frame)
publish(fig, "BatchNorm.png")
say(f"Our recursion equals `nn.BatchNorm1d(momentum = 1 − p)` at all {len(batches)} steps (and "
    f"differs if momentum is read as p). After {len(batches)} steps the running mean is off by "
    f"{errors[0.9][-1]:.3f} (p = 0.9) and {errors[0.99][-1]:.3f} (p = 0.99): a weight "
    f"0.99^{len(batches)} = {0.99 ** len(batches):.2f} still sits on the initial zero. In training "
    f"mode the same clip's output varies with its batch (sd {float(train_outs[:, BAND, frame].std()):.3f} "
    f"over {N_PROBES} batches); in evaluation mode it is one number.")

# %%
say(f"Notebook 05 ran in {time.perf_counter() - T0:.0f} s (after the imports).")
show_headlines(**{
    "ResNet Hessian λ_max / λ_min": f"{lam_top:.3f} / {lam_low:.3f} ({res_top.n_hvp} + "
                                    f"{res_low.n_hvp} HVPs)",
    "critical point reached (small net)": f"{crit_table.loc[saddle_name, 'kind']}, λ_min = {lam_min:.4f}",
    "batch size, small vs full (train loss)": f"{small['train loss']:.3f} vs {large['train loss']:.3f}",
    "diagnosis": "; ".join(f"{k}: {v.replace(chr(10), ', ')}" for k, v in leaves.items() if v),
})
