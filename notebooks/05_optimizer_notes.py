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
# # Optimisation notes, computed live
#
# Critical points and the Hessian, batch size, momentum, AdaGrad / RMSProp / Adam, learning-rate schedules, softmax + cross-entropy, Hoeffding's bound and batch normalisation — each claim of the lecture notes checked on real tensors.

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
import math
import time

import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from gradkit.core.params import count_parameters
from gradkit.data.features import load_split
from gradkit.grads import hessian as hs
from gradkit.grads import per_sample_grads
from gradkit.lectures import batchnorm, critical_points, diagnosis, hoeffding, minibatch, softmax
from gradkit.lectures import optimizers as opt
from gradkit.models import cnn
from gradkit.training import TrainConfig, build_model, epoch_order, sample_loss, short
from gradkit.viz.figures import publish
from gradkit.viz.scrubber import Scrubber

# The models here are tiny: one CPU thread is as fast as two and never fights other processes
# for cores (gradkit.training trains single-threaded for the same reason).
torch.set_num_threads(1)
pd.set_option("display.precision", 4)
T0 = time.perf_counter()



def say(text):
    display(Markdown(text))


split = load_split("plastic", 3000)
N_TRAIN, N_CLASSES, N_MELS = len(split.y_train), len(split.classes), split.x_train.shape[2]
CHANCE = math.log(N_CLASSES)  # cross-entropy of a uniform guess
print(f"plastic / 3000 Hz: {N_TRAIN} training and {len(split.y_val)} validation clips of shape "
      f"{tuple(split.x_train.shape[1:])} ({N_MELS} mel bands), {N_CLASSES} angle classes "
      f"(chance loss ln {N_CLASSES} = {CHANCE:.3f})")

# %% [markdown]
# ## 1. Why training fails: model bias, optimisation or overfitting?
#
# The notes' recipe: if the loss on the **training** set is high, either the model is too simple (model bias) or gradient descent did not find a low loss (optimisation). They are told apart by changing the model: a deeper network can represent everything a shallower one can (its extra layers could be identities), so if the deeper one reaches a *higher training loss*, the optimiser failed — this is not overfitting, which shows only on *validation* data. We train, with the same budget (the same epochs, Adam learning rate, batch size and data order, printed below), two families: plain CNNs without skip connections, and `ResNetAudioRanker` at three depths.

# %%
EPOCHS, LR, BATCH = 25, 1e-3, 12
zoo = {  # name: (family, depth in conv layers / residual blocks, constructor)
    "plain CNN, 4 layers": ("plain CNN", 4, lambda: cnn.plain_cnn(4)),
    "plain CNN, 16 layers": ("plain CNN", 16, lambda: cnn.plain_cnn(16)),
    "ResNet, 1 block": ("ResNet", 1, lambda: build_model(TrainConfig(widths=(8,)), split)),
    "ResNet, 3 blocks": ("ResNet", 3, lambda: build_model(TrainConfig(), split)),
    "ResNet, 6 blocks": ("ResNet", 6,
                         lambda: build_model(TrainConfig(widths=(8, 8, 16, 16, 32, 32)), split)),
}
histories, trained, rows = {}, {}, []
for name, (family, depth, make) in zoo.items():
    model = make()
    hist = short.train_short(model, split, EPOCHS, BATCH, LR)
    histories[name], trained[name] = hist, model
    last = hist.iloc[-1]
    rows.append({"model": name, "family": family, "depth": depth,
                 "parameters": count_parameters(model), "train loss": last.train_loss,
                 "val loss": last.val_loss, "train acc": last.train_acc, "val acc": last.val_acc,
                 "s / epoch": hist.seconds.median()})
why = pd.DataFrame(rows).set_index("model")
print(f"budget: {EPOCHS} epochs, Adam, learning rate {LR:g}, batches of {BATCH}")
display(why)

fig, ax = plt.subplots(figsize=(7, 3.5))
for name, hist in histories.items():
    ax.plot(hist.epoch, hist.train_loss, ls="--" if "plain" in name else "-", label=name)
ax.axhline(CHANCE, color="grey", lw=0.8, ls=":", label=f"chance (ln {N_CLASSES})")
ax.set(xlabel="epoch", ylabel="training cross-entropy (nats)",
       title="Training loss of deeper vs shallower networks (same budget)")
ax.legend(fontsize=8)
plt.show()

BIAS_LEVEL, GAP_LEVEL = 0.5 * CHANCE, 0.5
verdicts = []
for _family, group in why.groupby("family", sort=False):
    verdicts += diagnosis.diagnose(list(group.index), list(group.depth), list(group["train loss"]),
                               list(group["val loss"]), BIAS_LEVEL, GAP_LEVEL)
say("**Diagnosis** (model bias: training loss above half the chance loss, "
    f"{BIAS_LEVEL:.3f}; overfitting: validation loss more than {GAP_LEVEL} above training loss):\n\n"
    + "\n".join(f"- {v}" for v in verdicts))
opt_failures = [v.split(":")[0] for v in verdicts if ": optimisation" in v]
say(f"Deeper but worse on the training set: **{', '.join(opt_failures)}** — an optimisation "
    "problem, by the recipe." if opt_failures else
    "No deeper model had a higher training loss than a shallower one of its family: no sign of "
    "an optimisation problem in these runs.")
say("Skip connections make the difference here: " + (
    "the deepest ResNet trains at least as well as the shallower ones, while the deep plain CNN "
    "does not." if why.loc["ResNet, 6 blocks", "train loss"]
    <= why.loc["ResNet, 1 block", "train loss"]
    and why.loc["plain CNN, 16 layers", "train loss"] > why.loc["plain CNN, 4 layers", "train loss"]
    else "this comparison does not show it (see the table)."))

# %% [markdown]
# ## 2. Critical points: where the gradient vanishes
#
# Near a critical point θ' (∇L = 0), `L(θ) ≈ L(θ') + ½ (θ−θ')ᵀ H (θ−θ')`: all eigenvalues of the Hessian H positive → local minimum; all negative → local maximum; both signs → saddle point, and moving along an eigenvector u of a negative eigenvalue λ lowers the loss by about ½|λ|s².
#
# Gradient descent is repelled by saddles, so to *reach* critical points of any kind we solve ∇L(θ) = 0 with Levenberg–Marquardt (a damped Newton method, `gradkit.lectures.critical_points.find_critical_point`) on a network small enough for its dense Hessian: the time-averaged log-mel bands → 4 tanh units → one output per class, float64, the training clips (sizes printed below).

# %%
feats = split.x_train.mean(-1).flatten(1).double()  # [N_TRAIN, N_MELS]: time-averaged bands
feats = (feats - feats.mean(0)) / feats.std(0)
tiny = torch.nn.Sequential(torch.nn.Linear(N_MELS, 4), torch.nn.Tanh(),
                           torch.nn.Linear(4, N_CLASSES)).double()
tiny_loss, _ = hs.flat_loss(tiny, torch.nn.functional.cross_entropy, feats, split.y_train)
P_TINY = sum(p.numel() for p in tiny.parameters())
hessian_of = torch.func.hessian(tiny_loss)
print(f"tiny network {N_MELS} → 4 → {N_CLASSES}: P = {P_TINY} parameters, {N_TRAIN} clips")

starts = {"small random start (σ = 0.1)": (0, 0.1), "random start (σ = 1), seed 0": (0, 1.0),
          "random start (σ = 1), seed 1": (1, 1.0)}
critical, rows = {}, []
for name, (seed, scale) in starts.items():
    theta0 = torch.randn(P_TINY, generator=torch.Generator().manual_seed(seed),
                         dtype=torch.float64) * scale
    theta, norms = critical_points.find_critical_point(tiny_loss, theta0, tol=1e-8, max_iter=200)
    ev = torch.linalg.eigvalsh(hessian_of(theta))
    zero = 1e-6 * float(ev.abs().max())
    critical[name] = (theta, ev)
    rows.append({"start": name, "LM steps": len(norms) - 1, "|∇L| at start": norms[0],
                 "|∇L| reached": norms[-1], "loss": float(tiny_loss(theta)),
                 "λ_min": float(ev[0]), "λ_max": float(ev[-1]), "# λ<0": int((ev < -zero).sum()),
                 "# λ≈0": int((ev.abs() <= zero).sum()), "# λ>0": int((ev > zero).sum()),
                 "kind": critical_points.classify_critical_point(ev)})
crit_table = pd.DataFrame(rows).set_index("start")
display(crit_table)
assert (crit_table["|∇L| reached"] < 1e-5).all(), "a start did not reach a critical point"

# %% [markdown]
# Lanczos (`gradkit.grads.hessian`, Hessian-vector products only) must find the same extreme eigenvalues as the dense matrix. Then we step along the eigenvector of the most negative eigenvalue at the lowest saddle.

# %%
saddles = crit_table[crit_table.kind == "saddle point"]
assert len(saddles), "no saddle point reached: the demonstration below needs one"
saddle_name = saddles.loss.idxmin()
theta_s, ev_s = critical[saddle_name]
torch.nn.utils.vector_to_parameters(theta_s, tiny.parameters())
op_tiny = hs.HessianOperator(tiny, torch.nn.functional.cross_entropy, feats, split.y_train)
top = hs.top_eigenvalues(None, None, None, None, k=3, tol=1e-10, hvp=op_tiny)
low = hs.min_eigenvalue(None, None, None, None, tol=1e-10, hvp=op_tiny)
assert torch.allclose(top.eigenvalues, ev_s.flip(0)[:3], rtol=1e-6, atol=1e-9)
assert torch.allclose(low.eigenvalues, ev_s[:1], rtol=1e-6, atol=1e-9)
print(f"Lanczos = dense: top-3 {top.eigenvalues.numpy().round(5)} in {top.n_hvp} HVPs, "
      f"λ_min {float(low.eigenvalues[0]):.5f} in {low.n_hvp} HVPs (P = {P_TINY})")

u_min, u_max = low.eigenvectors[0], top.eigenvectors[0]
lam_min, lam_max = float(low.eigenvalues[0]), float(top.eigenvalues[0])
s_grid = torch.linspace(-1.5, 1.5, 61, dtype=torch.float64)
L0 = float(tiny_loss(theta_s))
along_min = torch.stack([tiny_loss(theta_s + s * u_min) for s in s_grid]).detach()
along_max = torch.stack([tiny_loss(theta_s + s * u_max) for s in s_grid]).detach()
small = (s_grid.abs() >= 0.05) & (s_grid.abs() <= 0.5)  # the grid's middle point is ~1e-16
assert bool((along_min[small] < L0).all()), "a step along u_min did not lower the loss"
assert bool((along_max[small] > L0).all())
drop = L0 - float(along_min[small].min())
say(f"At the **{saddle_name}** critical point (loss {L0:.4f}, |∇L| = "
    f"{crit_table.loc[saddle_name, '|∇L| reached']:.1e}) the Hessian has "
    f"{crit_table.loc[saddle_name, '# λ<0']} negative eigenvalues (λ_min = {lam_min:.4f}): a "
    f"saddle point. Stepping along the eigenvector of λ_min lowers the loss in both directions, "
    f"by {drop:.4f} at |s| = 0.5 (the quadratic model predicts {-0.5 * lam_min * 0.25:.4f}); "
    f"along the eigenvector of λ_max = {lam_max:.4f} it rises.")

# %% [markdown]
# The same tools on the real model: the ResNet (3 blocks) after its training above, full training set, cross-entropy. Its P × P Hessian (P printed below) is never formed: Lanczos for the extreme eigenvalues, stochastic Lanczos quadrature (SLQ) for the density, Hutchinson for the trace.

# %%
resnet = trained["ResNet, 3 blocks"].eval()
t_h = time.perf_counter()
op_res = hs.HessianOperator(resnet, sample_loss, split.x_train, split.y_train)
res_top = hs.top_eigenvalues(None, None, None, None, k=1, tol=1e-4, hvp=op_res)
res_low = hs.min_eigenvalue(None, None, None, None, tol=1e-3, max_iter=80, hvp=op_res)
res_dens = hs.spectral_density(None, None, None, None, n_steps=20, n_vectors=1, hvp=op_res)
res_tr = hs.hutchinson_trace(None, None, None, None, n_samples=8, hvp=op_res)
grad_norm = float(op_res.grad.detach().norm())
print(f"ResNet Hessian (P = {op_res.n_params}): λ_max = {float(res_top.eigenvalues[0]):.4f} "
      f"({res_top.n_hvp} HVPs, converged {res_top.converged}), λ_min = "
      f"{float(res_low.eigenvalues[0]):.4f} ({res_low.n_hvp} HVPs, converged {res_low.converged}), "
      f"trace (Hutchinson, {res_tr.n_hvp} probes) {res_tr.trace:.1f} ± {res_tr.std_error:.1f}; "
      f"|∇L| = {grad_norm:.3f}; {op_res.n_hvp} HVPs in {time.perf_counter() - t_h:.1f} s")
assert res_top.converged and res_low.converged, "Lanczos did not converge: raise max_iter"
lam_top, lam_low = float(res_top.eigenvalues[0]), float(res_low.eigenvalues[0])
near_zero = float(res_dens.weights[res_dens.nodes.abs() < 0.05 * lam_top].sum()
                  / res_dens.weights.sum())
res_kind = ("negative curvature: not a minimum" if lam_low < -1e-3 * lam_top
            else "no noticeable negative curvature")
say(f"After {EPOCHS} epochs the ResNet is {'not ' if grad_norm > 1e-3 else ''}at a critical point "
    f"(|∇L| = {grad_norm:.3f}); its curvature ranges from λ_min = {lam_low:.4f} to λ_max = "
    f"{lam_top:.3f} ({res_kind}; λ_min needed {res_low.n_hvp} products, λ_max only "
    f"{res_top.n_hvp}). SLQ puts {100 * near_zero:.1f} % of the spectral mass within "
    f"±5 % of λ_max around zero.")

# %%
fig, axes = plt.subplots(1, 3, figsize=(15, 4))
for name, (_theta, ev) in critical.items():
    axes[0].plot(np.arange(1, P_TINY + 1), ev.numpy(), ".", ms=3,
                 label=f"{name}: {crit_table.loc[name, 'kind'].split(' (')[0]}")
axes[0].axhline(0, color="k", lw=0.6)
axes[0].set_yscale("symlog", linthresh=1e-3)
axes[0].set(xlabel="eigenvalue index (ascending)", ylabel="Hessian eigenvalue λ (symlog)",
            title=f"Tiny network ({P_TINY} parameters): spectra at critical points")
axes[0].legend(fontsize=7)
axes[1].plot(s_grid, along_min - L0, label=f"along u_min (λ = {lam_min:.3f})")
axes[1].plot(s_grid, 0.5 * lam_min * s_grid**2, "--", label="½ λ_min s²")
axes[1].plot(s_grid, along_max - L0, label=f"along u_max (λ = {lam_max:.3f})")
axes[1].plot(s_grid, 0.5 * lam_max * s_grid**2, ":", label="½ λ_max s²")
axes[1].set_ylim(1.6 * 0.5 * lam_min * 1.5**2, -0.8 * 0.5 * lam_min * 1.5**2)
axes[1].set(xlabel="step s along the unit eigenvector", ylabel="L(θ' + s u) − L(θ') (nats)",
            title=f"Escaping the saddle ({saddle_name})")
axes[1].legend(fontsize=7)
grid = torch.linspace(float(res_dens.nodes.min()) - 1, float(res_dens.nodes.max()) + 1, 400)
sigma = 0.01 * (lam_top - lam_low)
axes[2].semilogy(grid, res_dens.density(grid, sigma=sigma).clamp_min(1e-6),
                 label=f"SLQ density ({res_dens.nodes.shape[1]} nodes, 1 probe)")
axes[2].axvline(lam_top, color="C3", ls="--", label=f"Lanczos λ_max = {lam_top:.2f}")
axes[2].axvline(lam_low, color="C2", ls="--", label=f"Lanczos λ_min = {lam_low:.2f}")
axes[2].set(xlabel="eigenvalue λ", ylabel=f"density (Gaussian σ = {sigma:.2f})",
            title=f"ResNet after {EPOCHS} epochs: spectrum (P = {op_res.n_params})")
axes[2].legend(fontsize=7)
fig.tight_layout()
publish(fig, "hessian_spectrum.png")

# %% [markdown]
# ## 3. Batch size
#
# A mini-batch gradient `g_B` is the mean of B per-sample gradients, so it scatters around the full gradient `g` with `E‖g_B − g‖² = tr Σ / B` (the notes' "small batch = noisy"); drawn without replacement from N samples, times `(N − B)/(N − 1)`. Measured with exact per-sample gradients of the ResNet at its current weights (`gradkit.grads.per_sample_grads`).

# %%
G = per_sample_grads(resnet, sample_loss, split.x_train, split.y_train)
B_VALUES = sorted({b for b in (1, 2, 3, 4, 6, 9, 12, 18, 27) if b < N_TRAIN} | {BATCH, N_TRAIN})
N_DRAWS = 2000
rows = []
for B in B_VALUES:
    measured, se = minibatch.minibatch_gradient_noise(G, B, n_draws=N_DRAWS, seed=B)
    expected = minibatch.expected_minibatch_noise(G, B)
    assert abs(measured - expected) <= 5 * se + 1e-9 * expected + 1e-12, (B, measured, expected)
    rows.append({"B": B, "measured E‖g_B − g‖²": measured, "± s.e.": se,
                 "trΣ/B·(N−B)/(N−1)": expected, "trΣ/B (with replacement)": expected
                 * (N_TRAIN - 1) / (N_TRAIN - B) if B < N_TRAIN else float("nan")})
noise = pd.DataFrame(rows).set_index("B")
display(noise)
tr_sigma = minibatch.expected_minibatch_noise(G, 1)
fig, ax = plt.subplots(figsize=(6, 3.8))
ax.errorbar(noise.index[:-1], noise.iloc[:-1, 0], yerr=2 * noise.iloc[:-1, 1], fmt="o",
            label=f"measured ({N_DRAWS} random batches, ±2 s.e.)")
Bs = np.arange(1, N_TRAIN)
ax.plot(Bs, tr_sigma / Bs, "--", label="tr Σ / B")
ax.plot(Bs, tr_sigma / Bs * (N_TRAIN - Bs) / (N_TRAIN - 1), label="tr Σ / B · (N−B)/(N−1)")
ax.set(xscale="log", yscale="log", xlabel="batch size B",
       ylabel="E‖g_B − g‖² (squared gradient units)",
       title=f"Mini-batch gradient noise, ResNet, N = {N_TRAIN}")
ax.legend(fontsize=8)
plt.show()
say(f"All {len(B_VALUES)} measurements agree with the formula within 5 standard errors; from "
    f"B = 1 to B = {BATCH} the noise falls by a factor "
    f"{noise.iloc[0, 0] / noise.loc[BATCH].iloc[0]:.1f} (1/B alone would give {BATCH}, the "
    f"finite-population factor {(N_TRAIN - 1) / (N_TRAIN - BATCH):.2f} the rest), and it is "
    f"exactly {noise.loc[N_TRAIN].iloc[0]:.0f} at B = N = {N_TRAIN}.")

# %% [markdown]
# Small against large batches on the audio task, same number of epochs (so the small batch takes more, noisier steps):

# %%
SMALL_B = 4
batch_runs = {BATCH: histories["ResNet, 3 blocks"]}
for B in (SMALL_B, N_TRAIN):
    batch_runs[B] = short.train_short(build_model(TrainConfig(), split), split, EPOCHS, B, LR)
rows = []
for B, hist in sorted(batch_runs.items()):
    last = hist.iloc[-1]
    rows.append({"batch size": B, "updates / epoch": math.ceil(N_TRAIN / B),
                 "s / epoch (median)": hist.seconds.median(), "train loss": last.train_loss,
                 "val loss": last.val_loss, "val acc": last.val_acc})
batch_table = pd.DataFrame(rows).set_index("batch size")
display(batch_table)
fig, ax = plt.subplots(figsize=(6, 3.5))
for B, hist in sorted(batch_runs.items()):
    ax.plot(hist.epoch, hist.train_loss, label=f"B = {B}")
ax.set(xlabel="epoch", ylabel="training cross-entropy (nats)",
       title="ResNet: small vs large batches, same epochs")
ax.legend()
plt.show()
small, large = batch_table.loc[SMALL_B], batch_table.loc[N_TRAIN]
say(f"Per epoch, B = {N_TRAIN} took {large['s / epoch (median)']:.3f} s and B = {SMALL_B} "
    f"{small['s / epoch (median)']:.3f} s (" + (
        f"{small['s / epoch (median)'] / large['s / epoch (median)']:.1f}× longer: "
        f"{math.ceil(N_TRAIN / SMALL_B)} small steps cost more than one big one, even on a CPU"
        if small["s / epoch (median)"] > large["s / epoch (median)"] else
        "no slower: on this CPU the big batch gains nothing from parallelism") + "). After "
    f"{EPOCHS} epochs the small batch reached training loss {small['train loss']:.3f} and "
    f"validation accuracy {small['val acc']:.2f}, the full batch {large['train loss']:.3f} and "
    f"{large['val acc']:.2f}: " + (
        "the small, noisy batches trained better per epoch, as the notes say."
        if small["train loss"] < large["train loss"] else
        "here the large batch did as well or better per epoch.") + " (One seed: differences of a "
    "few hundredths are within run-to-run noise.)")

# %% [markdown]
# ## 4. Momentum, AdaGrad, RMSProp, Adam
#
# The update rules as the notes write them, in `gradkit.lectures.optimizers` (a few lines each; all per coordinate i):
#
# | rule | update |
# |---|---|
# | momentum | `d ← μ d + g`, `θ ← θ − η d` (the notes' `θ − α(v + β∇L)` with v = μ·last step, β = 1) |
# | root mean square | `σ_t = √(mean_{s≤t} g_s²)`, `θ ← θ − η/σ_t · g` |
# | AdaGrad | the same with `η_t = η/√(t+1)`, i.e. `σ_t = √(Σ_{s≤t} g_s²)` |
# | RMSProp | `σ_t² = α σ_{t−1}² + (1−α) g_t²`, `θ ← θ − η/σ_t · g` (notes: σ_0 = \|g_0\|; PyTorch: σ_{−1} = 0) |
# | Adam | RMSProp + momentum, both bias-corrected |
#
# Each is asserted equal to `torch.optim` on two problems: the 2-D surface below and the tiny network of section 2 (all its parameters; steps listed in the table).

# %%
START = torch.tensor([0.01, 1.0], dtype=torch.float64)
tiny_theta0 = critical["random start (σ = 1), seed 0"][0] * 0.5
tiny_grad = torch.func.grad(tiny_loss)


def pairs(lr, beta):
    """(ours, torch's) optimiser for each rule at learning rate ``lr`` and ``beta``."""
    T = torch.optim
    return {
        "gradient descent": (lambda g, t, n: opt.gradient_descent(g, t, n, lr),
                             lambda ps: T.SGD(ps, lr=lr)),
        "momentum": (lambda g, t, n: opt.momentum(g, t, n, lr, mu=beta),
                     lambda ps: T.SGD(ps, lr=lr, momentum=beta)),
        "AdaGrad": (lambda g, t, n: opt.adagrad(g, t, n, lr), lambda ps: T.Adagrad(ps, lr=lr)),
        "RMSProp": (lambda g, t, n: opt.rmsprop(g, t, n, lr, alpha=beta),
                    lambda ps: T.RMSprop(ps, lr=lr, alpha=beta)),
        "Adam": (lambda g, t, n: opt.adam(g, t, n, lr, betas=(beta, 0.999)),
                 lambda ps: T.Adam(ps, lr=lr, betas=(beta, 0.999))),
    }


rows = []
for problem, grad_fn, theta0, steps in [("2-D surface", opt.saddle_valley_grad, START, 60),
                                        ("tiny network", tiny_grad, tiny_theta0, 15)]:
    for name, (ours, theirs) in pairs(0.02, 0.9).items():
        a, b = ours(grad_fn, theta0, steps), opt.torch_path(theirs, grad_fn, theta0, steps)
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12), (problem, name)
        rows.append({"problem": problem, "rule": name, "steps": steps,
                     "max |ours − torch.optim|": float((a - b).abs().max()),
                     "distance travelled": float((a[-1] - a[0]).norm())})
# the notes' RMSProp start = torch's with its running average seeded with g_0²
notes_rms = opt.rmsprop(opt.saddle_valley_grad, START, 60, 0.02, alpha=0.9, start="notes")
seeded = opt.torch_path(lambda ps: torch.optim.RMSprop(ps, lr=0.02, alpha=0.9),
                        opt.saddle_valley_grad, START, 60,
                        init_state=lambda g: {"step": torch.tensor(0.0), "square_avg": g**2})
assert torch.allclose(notes_rms, seeded, rtol=1e-9, atol=1e-12)
# the notes' root mean square with η/√(t+1) is AdaGrad
rms_decay = opt.root_mean_square(opt.saddle_valley_grad, START, 60, lambda t: 0.02 / math.sqrt(t + 1))
assert torch.allclose(rms_decay, opt.adagrad(opt.saddle_valley_grad, START, 60, 0.02, eps=0.0),
                      rtol=1e-9, atol=1e-12)
rows.append({"problem": "2-D surface", "rule": "RMSProp, notes' start σ_0 = |g_0| vs seeded torch",
             "steps": 60, "max |ours − torch.optim|": float((notes_rms - seeded).abs().max()),
             "distance travelled": float((notes_rms[-1] - START).norm())})
display(pd.DataFrame(rows))
say(f"All {len(rows)} trajectories equal `torch.optim`'s (largest difference "
    f"{max(r['max |ours − torch.optim|'] for r in rows):.1e}), and the notes' root-mean-square rule "
    "with η_t = η/√(t+1) equals AdaGrad.")

# %% [markdown]
# The 2-D surface `L(x, y) = (x² − 1)²/4 + 20 y²`: a **saddle** at (0, 0) (Hessian eigenvalues −1 and 40) between two minima at (±1, 0), in a **narrow valley** (the walls 20× steeper than the floor is curved). Start at (0.01, 1): high on the wall, almost exactly above the saddle. Plain gradient descent must keep η < 2/40 = 0.05 to stay in the valley and then crawls off the saddle; the adaptive rules divide each coordinate by its own gradient scale.

# %%
STEPS = 150
xs, ys = torch.meshgrid(torch.linspace(-1.6, 1.6, 200), torch.linspace(-1.3, 1.3, 200), indexing="xy")
surface = opt.saddle_valley(torch.stack([xs, ys], -1).double())


def run_all(lr, beta, steps=STEPS):
    return {name: ours(opt.saddle_valley_grad, START, steps) for name, (ours, _) in
            pairs(lr, beta).items()}


def steps_to(path, level=1e-3):
    below = (opt.saddle_valley(path) < level).nonzero()
    return int(below[0]) if len(below) else None


def draw_paths(ax_map, ax_loss, paths, title):
    ax_map.contour(xs, ys, surface, levels=np.geomspace(1e-3, 40, 14), cmap="viridis",
                   linewidths=0.7, alpha=0.6)
    for name, path in paths.items():
        k = list(pairs(1.0, 0.9)).index(name)  # one colour per rule in every figure
        finite = torch.isfinite(path).all(1) & (path.abs() < 10).all(1)
        pth = path[finite]
        ax_map.plot(pth[:, 0], pth[:, 1], ".-", ms=2, lw=0.8, color=f"C{k}", label=name)
        ax_loss.semilogy(opt.saddle_valley(path).clamp(1e-12, 1e3), color=f"C{k}", label=name)
    ax_map.plot([0], [0], "kx", ms=8)
    ax_map.plot([-1, 1], [0, 0], "k*", ms=8)
    ax_map.set(xlim=(-1.6, 1.6), ylim=(-1.3, 1.3), xlabel="x", ylabel="y",
               title=f"{title} (× saddle, * minima)")
    ax_loss.set(xlabel="step", ylabel="L(x, y)", title="loss per step")
    ax_map.legend(fontsize=7, loc="lower left")


LR0, BETA0 = 0.04, 0.9
paths = run_all(LR0, BETA0)
reach = {name: steps_to(path) for name, path in paths.items()}
rms_hist = opt.rmsprop(opt.saddle_valley_grad, START, STEPS, LR0, alpha=BETA0)
g_hist = opt.saddle_valley_grad(rms_hist[:-1])
sq = batchnorm.moving_average(g_hist**2, BETA0, 0.0)  # σ_t² of torch's RMSProp
fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
draw_paths(axes[0], axes[1], paths, f"Trajectories, η = {LR0}, β = {BETA0}")
axes[2].semilogy(LR0 / (sq.sqrt() + 1e-8)[:, 0], label="η/σ for x (flat floor)")
axes[2].semilogy(LR0 / (sq.sqrt() + 1e-8)[:, 1], label="η/σ for y (steep walls)")
axes[2].set(xlabel="step", ylabel="effective learning rate η/σ_i",
            title="RMSProp: one learning rate per coordinate")
axes[2].legend(fontsize=8)
fig.tight_layout()
publish(fig, "RMSProp.png")
display(pd.Series({k: (v if v is not None else f"not within {STEPS}") for k, v in reach.items()},
                  name="steps to L < 1e-3"))
done = {k: v for k, v in reach.items() if v is not None}
fastest = min(done, key=done.get) if done else None
say(f"At η = {LR0}: " + (f"**{fastest}** reaches L < 10⁻³ first ({done[fastest]} steps)"
                         if fastest else "no rule reaches L < 10⁻³")
    + "; gradient descent " + (f"needs {reach['gradient descent']} steps"
                               if reach["gradient descent"] is not None else
                               f"is still near the saddle after {STEPS} steps")
    + f". RMSProp's effective learning rate for x grows to "
    f"{float(LR0 / (sq[-1, 0].sqrt() + 1e-8)):.2g} on the flat floor while the one for y stays "
    f"near {float(LR0 / (sq[:, 1].sqrt().max() + 1e-8)):.2g} on the steep walls.")


def rebound(path):
    """(best step, best loss, worst loss after the best step) of a trajectory."""
    loss = opt.saddle_valley(path)
    best = int(loss.argmin())
    return best, float(loss[best]), float(loss[best:].max())


rms_best, rms_min, rms_after = rebound(paths["RMSProp"])
if rms_after > 100 * max(rms_min, 1e-12) and rms_after > 1e-6:
    say(f"RMSProp's loss fell to {rms_min:.1e} at step {rms_best}, then jumped back up to "
        f"{rms_after:.1e}: near the minimum the gradient, and with it σ, shrinks, so η/σ blows up "
        "and kicks θ out again. This is what learning-rate decay (section 5) is for.")
else:
    say(f"RMSProp's loss fell to {rms_min:.1e} at step {rms_best} and stayed below {rms_after:.1e}.")

# %% [markdown]
# Move the sliders: the learning rate (all rules, β = 0.9), then β (momentum μ, RMSProp α, Adam β₁) at η = 0.02.

# %%
LRS = [0.005, 0.01, 0.02, 0.04, 0.06]
BETAS = [0.0, 0.5, 0.9, 0.99]


def draw_lr(fig, lr):
    ax_map, ax_loss = fig.subplots(1, 2)
    draw_paths(ax_map, ax_loss, run_all(lr, 0.9, 100), f"η = {lr}, β = 0.9")


def draw_beta(fig, beta):
    ax_map, ax_loss = fig.subplots(1, 2)
    ps = {k: v for k, v in run_all(0.02, beta, 100).items() if k in ("momentum", "RMSProp", "Adam")}
    draw_paths(ax_map, ax_loss, ps, f"η = 0.02, β = {beta}")


lr_scrubber = Scrubber(draw_lr, LRS, label="learning rate", figsize=(11, 4))
beta_scrubber = Scrubber(draw_beta, BETAS, label="beta", figsize=(11, 4))
display(lr_scrubber)
display(beta_scrubber)
lr_scrubber.slider.value = LRS[-1]  # the live slider redraws through its callback
assert lr_scrubber.shown == LRS[-1]
lr_scrubber.slider.value = LRS[0]
gd_stable = [lr for lr in LRS if abs(1 - lr * 40) < 1]
say(f"Gradient descent is stable across the valley only for η < 2/40 = 0.05 (on the slider: "
    f"{', '.join(map(str, gd_stable))}); at η = {LRS[-1]} its y-coordinate flips sign and grows "
    f"by |1 − 40η| = {abs(1 - 40 * LRS[-1]):.1f} per step, while the adaptive rules, whose steps "
    "are scaled by 1/σ, stay in the valley.")

# %% [markdown]
# ## 5. Learning-rate scheduling: warm-up and decay
#
# The final step of every coordinate is the product of three factors: `η` (global) × `s(t)` (the schedule: warm-up, then decay) × `1/σ_i(t)` (the adaptive factor of RMSProp/Adam, per coordinate). `gradkit.lectures.optimizers.warmup_cosine`: linear warm-up over W steps, then cosine decay.

# %%
W, T_STEPS, FLOOR = 15, EPOCHS * math.ceil(N_TRAIN / BATCH), 0.0
ours_lr = [opt.warmup_cosine(t, W, T_STEPS, FLOOR) for t in range(T_STEPS)]
p = torch.nn.Parameter(torch.zeros(1))
sgd = torch.optim.SGD([p], lr=1.0)
seq = torch.optim.lr_scheduler.SequentialLR(
    sgd, [torch.optim.lr_scheduler.LinearLR(sgd, 1 / W, 1.0, total_iters=W - 1),
          torch.optim.lr_scheduler.CosineAnnealingLR(sgd, T_max=T_STEPS - W, eta_min=FLOOR)],
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
step_pred = -torch.tensor(hist["lr"], dtype=torch.float64)[:, None] * torch.stack(
    hist["adaptive"]) * torch.stack(hist["m_hat"])
assert torch.allclose(adam_sched.diff(dim=0), step_pred, rtol=1e-9, atol=1e-15)
adaptive = torch.stack(hist["adaptive"])
rms_decayed = opt.rmsprop(opt.saddle_valley_grad, START, STEPS,
                          lambda t: LR0 * opt.warmup_cosine(t, 10, STEPS, 0.0), alpha=BETA0)
dec_best, dec_min, dec_after = rebound(rms_decayed)
fig, axes = plt.subplots(1, 3, figsize=(17, 3.6))
axes[0].plot(ours_lr, label="ours: warmup_cosine")
axes[0].plot(torch_lr, "--", label="torch SequentialLR(LinearLR, CosineAnnealingLR)")
axes[0].set(xlabel="optimiser step", ylabel="schedule factor s(t)",
            title=f"Warm-up ({W} steps) + cosine decay over {T_STEPS} steps")
axes[0].legend(fontsize=8)
axes[1].semilogy(hist["lr"], "k", label="η·s(t) (global)")
axes[1].semilogy(np.array(hist["lr"]) * adaptive[:, 0].numpy(), label="η·s(t)/(√v̂+ε), x")
axes[1].semilogy(np.array(hist["lr"]) * adaptive[:, 1].numpy(), label="η·s(t)/(√v̂+ε), y")
axes[1].set(xlabel="step", ylabel="factor multiplying m̂",
            title="Adam on the 2-D surface: combined update factor")
axes[1].legend(fontsize=8)
axes[2].semilogy(opt.saddle_valley(paths["RMSProp"]).clamp_min(1e-14), label=f"constant η = {LR0}")
axes[2].semilogy(opt.saddle_valley(rms_decayed).clamp_min(1e-14),
                 label=f"η = {LR0} × warm-up (10) + cosine")
axes[2].set(xlabel="step", ylabel="L(x, y)", title="RMSProp on the 2-D surface: with decay")
axes[2].legend(fontsize=8)
fig.tight_layout()
plt.show()
ratio = adaptive[:, 0] / adaptive[:, 1]
say(f"Our schedule equals PyTorch's `SequentialLR` at all {T_STEPS} steps, scheduled Adam equals "
    "`torch.optim.Adam` + `LambdaLR`, and every step equals −η·s(t)·(1/(√v̂+ε))·m̂. The adaptive "
    f"factor of x ends {float(ratio[-1]):.3g}× that of y: the schedule sets the overall size, "
    "the adaptive factor the balance between coordinates. RMSProp with the decaying schedule "
    + (f"does not jump back (worst loss after its best step {dec_after:.1e}, vs {rms_after:.1e} "
       "at constant η)." if dec_after < rms_after else
       f"still jumps back ({dec_after:.1e} vs {rms_after:.1e} at constant η)."))

# %% [markdown]
# Effect on the audio task: constant learning rate vs warm-up + cosine decay with the same peak, at a moderate and at a high peak learning rate (epochs and batch size as in section 1).

# %%
sched_runs, rows = {}, []
for peak in (3e-3, 1e-2):
    for kind in ("constant", "warm-up + cosine"):
        schedule = (lambda t: opt.warmup_cosine(t, W, T_STEPS, FLOOR)) if kind != "constant" else None
        hist = short.train_short(build_model(TrainConfig(), split), split, EPOCHS, BATCH, peak,
                                 schedule=schedule)
        sched_runs[(peak, kind)] = hist
        rows.append({"peak η": peak, "schedule": kind, "final train loss": hist.train_loss.iloc[-1],
                     "max train loss after epoch 1": hist.train_loss.iloc[1:].max(),
                     "final val loss": hist.val_loss.iloc[-1], "final val acc": hist.val_acc.iloc[-1]})
sched_table = pd.DataFrame(rows).set_index(["peak η", "schedule"])
display(sched_table)
fig, axes = plt.subplots(1, 2, figsize=(12, 3.5), sharey=True)
for ax, peak in zip(axes, (3e-3, 1e-2), strict=True):
    for kind in ("constant", "warm-up + cosine"):
        h = sched_runs[(peak, kind)]
        ax.plot(h.epoch, h.train_loss, label=f"{kind}: train")
        ax.plot(h.epoch, h.val_loss, "--", label=f"{kind}: validation")
    ax.set(xlabel="epoch", ylabel="cross-entropy (nats)", title=f"ResNet, peak η = {peak}")
    ax.legend(fontsize=8)
fig.tight_layout()
plt.show()
lines = []
for peak in (3e-3, 1e-2):
    c, w = sched_table.loc[(peak, "constant")], sched_table.loc[(peak, "warm-up + cosine")]
    better = w["final train loss"] < c["final train loss"]
    lines.append(f"- peak η = {peak}: warm-up + cosine ended at training loss "
                 f"{w['final train loss']:.3f} vs {c['final train loss']:.3f} constant "
                 f"({'helped' if better else 'did not help'}; validation accuracy "
                 f"{w['final val acc']:.2f} vs {c['final val acc']:.2f}).")
say("\n".join(lines) + "\n\nOne seed each: treat differences of a few hundredths as noise.")

# %% [markdown]
# ## 6. Classification: softmax, MSE vs cross-entropy
#
# `y' = softmax(z)`; cross-entropy `e = −Σ ŷ_i ln y'_i` (PyTorch's `cross_entropy` applies the softmax itself) and MSE `e = Σ (ŷ_i − y'_i)²`. With respect to the logits, `∂e_CE/∂z = y' − ŷ` but `∂e_MSE/∂z = J ᵀ 2(y' − ŷ)` with the softmax Jacobian `J = diag(y') − y'y'ᵀ`, which vanishes when y' saturates — even when the prediction is confidently wrong.

# %%
z = torch.randn(8, N_CLASSES, dtype=torch.float64, requires_grad=True)
y_rand = torch.randint(0, N_CLASSES, (8,))
onehot = torch.nn.functional.one_hot(y_rand, N_CLASSES).double()
assert torch.allclose(softmax.softmax(z), torch.softmax(z, -1))
ce = torch.nn.functional.cross_entropy(z, y_rand, reduction="sum")
assert torch.allclose(ce, -(onehot * softmax.softmax(z).log()).sum())
assert torch.allclose(torch.autograd.grad(ce, z)[0], softmax.ce_grad_logits(z.detach(), y_rand))
mse = ((onehot - torch.softmax(z, -1)) ** 2).sum()
assert torch.allclose(torch.autograd.grad(mse, z)[0], softmax.mse_grad_logits(z.detach(), y_rand))

m = torch.linspace(-12, 12, 241, dtype=torch.float64)  # margin of a wrong class over the right one
zs = torch.stack([-m / 2, m / 2, torch.zeros_like(m)], 1)
target = torch.zeros(len(m), dtype=torch.long)
probs = softmax.softmax(zs)
g_ce, g_mse = softmax.ce_grad_logits(zs, target).norm(dim=1), softmax.mse_grad_logits(zs, target).norm(dim=1)

# training from a saturated, wrong start: a linear classifier on the time-averaged bands
torch.manual_seed(0)
lin0 = torch.nn.Linear(N_MELS, N_CLASSES).double()
with torch.no_grad():
    lin0.weight.mul_(0.01)
    lin0.bias.zero_()
    lin0.bias[0] = 10.0  # every clip predicted as deg000 with probability ≈ 1
curves = {}
for loss_name in ("cross-entropy", "MSE"):
    lin = torch.nn.Linear(N_MELS, N_CLASSES).double()
    lin.load_state_dict(lin0.state_dict())
    sgd = torch.optim.SGD(lin.parameters(), lr=0.5)
    ce_curve = []
    for _ in range(300):
        logits = lin(feats)
        if loss_name == "MSE":
            loss = ((torch.softmax(logits, -1) - torch.nn.functional.one_hot(split.y_train, N_CLASSES)) ** 2).sum(1).mean()
        else:
            loss = torch.nn.functional.cross_entropy(logits, split.y_train)
        ce_curve.append(float(torch.nn.functional.cross_entropy(logits.detach(), split.y_train)))
        sgd.zero_grad()
        loss.backward()
        sgd.step()
    curves[loss_name] = ce_curve
with torch.no_grad():
    z0 = lin0(feats)
start_ce = float(softmax.ce_grad_logits(z0, split.y_train).norm(dim=1).mean())
start_mse = float(softmax.mse_grad_logits(z0, split.y_train).norm(dim=1).mean())

fig, axes = plt.subplots(1, 3, figsize=(16, 4))
for k in range(3):
    axes[0].plot(m, probs[:, k], label=f"y'_{k}" + (" (target)" if k == 0 else ""))
axes[0].set(xlabel="margin m = z₁ − z₀ of a wrong class (logits (−m/2, m/2, 0))",
            ylabel="softmax probability", title="Softmax")
axes[0].legend(fontsize=8)
axes[1].semilogy(m, g_ce, label="cross-entropy: ‖y' − ŷ‖")
axes[1].semilogy(m, g_mse.clamp_min(1e-12), label="MSE: ‖Jᵀ 2(y' − ŷ)‖")
axes[1].set(xlabel="margin m (right: confidently wrong)", ylabel="‖∂e/∂z‖",
            title="Gradient w.r.t. the logits")
axes[1].legend(fontsize=8)
for name, curve in curves.items():
    axes[2].plot(curve, label=f"trained with {name}")
axes[2].set(xlabel="SGD step (η = 0.5, full batch)", ylabel="cross-entropy on training set (nats)",
            title="Linear classifier from a saturated wrong start")
axes[2].legend(fontsize=8)
fig.tight_layout()
publish(fig, "Softmax.png")
at_wrong = int((m - 10).abs().argmin())
say(f"At margin 10 (confidently wrong) the cross-entropy gradient has norm {float(g_ce[at_wrong]):.2f}, "
    f"the MSE gradient {float(g_mse[at_wrong]):.1e}. From the saturated start of the linear "
    f"classifier the mean gradient norms are {start_ce:.2f} (CE) vs {start_mse:.1e} (MSE); after "
    f"300 steps the training cross-entropy is {curves['cross-entropy'][-1]:.3f} when trained with "
    f"cross-entropy and {curves['MSE'][-1]:.3f} when trained with MSE "
    + ("(MSE barely moved: stuck on the plateau)." if curves["MSE"][-1] > 0.9 * curves["MSE"][0]
       else "(MSE escaped the plateau, but more slowly)." if curves["MSE"][-1] > curves["cross-entropy"][-1]
       else "(here MSE did not fall behind)."))

# %% [markdown]
# ## 7. Hoeffding: how likely is a bad training set?
#
# Binary classification with thresholds h ∈ H (predict 1 iff x > h), x ~ U(0, 1), y = 1[x > ½] with a share of labels flipped (label noise), 0/1 loss. A training set of N samples is *bad* if some h ∈ H has |L(h, D_train) − L(h, D_all)| > ε. Hoeffding plus a union bound: `P(bad) ≤ |H| · 2 exp(−2Nε²)`. Simulated training sets per point, noise level and ε: printed below.

# %%
EPS, LABEL_NOISE, N_TRIALS = 0.1, 0.1, 20000
print(f"ε = {EPS}, label noise {LABEL_NOISE:.0%}, {N_TRIALS} simulated training sets per point")
N_VALUES = [10, 20, 50, 100, 150, 200, 300, 400, 600]
H_SIZES = [1, 10, 100]
rows = []
for size in H_SIZES:
    thresholds = np.array([0.3]) if size == 1 else np.linspace(0.5 / size, 1 - 0.5 / size, size)
    for n in N_VALUES:
        sim = hoeffding.simulate_bad_training_sets(n, EPS, thresholds, noise=LABEL_NOISE,
                                               n_trials=N_TRIALS, seed=n)
        bound = float(hoeffding.hoeffding_bound(n, EPS, size))
        se = math.sqrt(max(sim * (1 - sim), 1 / N_TRIALS) / N_TRIALS)
        assert sim <= bound + 5 * se, (size, n, sim, bound)
        rows.append({"|H|": size, "N": n, "simulated P(bad)": sim, "bound": bound})
hoeff = pd.DataFrame(rows)
display(hoeff.pivot(index="N", columns="|H|", values=["simulated P(bad)", "bound"]))
fig, ax = plt.subplots(figsize=(7, 4))
for k, size in enumerate(H_SIZES):
    part = hoeff[hoeff["|H|"] == size]
    ax.semilogy(part.N, part["simulated P(bad)"].clip(lower=1e-5), "o-", color=f"C{k}",
                label=f"simulated, |H| = {size}")
    ax.semilogy(part.N, part.bound, "--", color=f"C{k}", label=f"bound |H|·2exp(−2Nε²), |H| = {size}")
ax.set(xlabel="training set size N", ylabel="P(training set is bad)",
       title=f"Bad training sets, ε = {EPS} ({N_TRIALS} simulated sets per point)")
ax.legend(fontsize=7)
plt.show()


def n_needed(frame, column, level=0.05):
    ok = frame[frame[column] <= level]
    return int(ok.N.min()) if len(ok) else None


need = {size: (n_needed(hoeff[hoeff["|H|"] == size], "simulated P(bad)"),
               math.ceil(math.log(2 * size / 0.05) / (2 * EPS**2))) for size in H_SIZES}
at100 = hoeff[hoeff.N == 100].set_index("|H|")
say("Every simulated probability lies under the bound. N for P(bad) ≤ 0.05: "
    + "; ".join(f"|H| = {s}: simulated from N = {v[0] if v[0] else '>' + str(N_VALUES[-1])} on "
                f"(first grid point), the bound needs N ≥ {v[1]}" for s, v in need.items())
    + f". At N = 100, going from |H| = 1 to 100 raises the simulated P(bad) from "
    f"{at100.loc[1, 'simulated P(bad)']:.3f} to {at100.loc[100, 'simulated P(bad)']:.3f} "
    f"(×{at100.loc[100, 'simulated P(bad)'] / max(at100.loc[1, 'simulated P(bad)'], 1e-9):.1f}), far "
    "less than the ×100 of the union bound: neighbouring thresholds make almost the same mistakes. "
    "Larger N or smaller |H| makes bad training sets rarer, as the notes say.")

# %% [markdown]
# ## 8. Batch normalisation: training vs evaluation
#
# In training mode BatchNorm normalises with the mini-batch's mean and variance; for evaluation it uses moving averages kept during training, `μ̄ ← p·μ̄ + (1 − p)·μ_t`. PyTorch's `momentum` is the weight of the *new* value, `1 − p`. Here each mel band is a channel (`BatchNorm1d(n_mels)` over the time frames), fed a few epochs of small batches of training clips (printed below).

# %%
BN_EPOCHS, BN_BATCH, N_PROBES = 10, 6, 40
bands = split.x_train[:, 0].double()  # [clips, mel bands, frames]
batches = [bands[order[i:i + BN_BATCH]] for e in range(1, BN_EPOCHS + 1)
           for order in [epoch_order(N_TRAIN, 0, e)] for i in range(0, N_TRAIN, BN_BATCH)]
print(f"BatchNorm1d({N_MELS}): {BN_EPOCHS} epochs of batches of {BN_BATCH} clips = "
      f"{len(batches)} steps")
true_mean = bands.transpose(0, 1).reshape(N_MELS, -1).mean(1)
running, bn_layers = {}, {}
for p_ in (0.9, 0.99):
    bn = torch.nn.BatchNorm1d(N_MELS, momentum=1 - p_).double()
    torch_means = []
    for b in batches:
        out = bn(b)
        mu_b, var_b = batchnorm.batch_stats(b)
        assert torch.allclose(out, batchnorm.batchnorm_output(b, mu_b, var_b, bn.weight, bn.bias))
        torch_means.append(bn.running_mean.clone())
    ours_mean, ours_var = batchnorm.batchnorm_running_stats(batches, p_)
    assert torch.allclose(ours_mean, torch.stack(torch_means))
    assert torch.allclose(ours_var[-1], bn.running_var)
    wrong_mean, _ = batchnorm.batchnorm_running_stats(batches, 1 - p_)  # momentum read as p
    assert not torch.allclose(wrong_mean, ours_mean)
    running[p_], bn_layers[p_] = ours_mean, bn.eval()

# evaluation mode: the running statistics, whatever the rest of the batch
torch.set_grad_enabled(False)
bn = bn_layers[0.9]
x0 = bands[:1]
eval_alone = bn(x0)
eval_in_batch = bn(torch.cat([x0, bands[10:10 + BN_BATCH - 1]]))[:1]
assert torch.allclose(eval_alone, eval_in_batch)
assert torch.allclose(eval_alone, batchnorm.batchnorm_output(x0, bn.running_mean, bn.running_var,
                                                         bn.weight, bn.bias))
gen = torch.Generator().manual_seed(0)
train_outs = []
bn.train()
saved = (bn.running_mean.clone(), bn.running_var.clone())
for _ in range(N_PROBES):
    others = torch.randperm(N_TRAIN - 1, generator=gen)[:BN_BATCH - 1] + 1
    train_outs.append(bn(torch.cat([x0, bands[others]]))[0])
bn.running_mean.copy_(saved[0])  # these batches were only a probe: undo their update
bn.running_var.copy_(saved[1])
bn.eval()
torch.set_grad_enabled(True)
train_outs = torch.stack(train_outs)  # [N_PROBES batches, mel bands, frames]
BAND = int((true_mean - running[0.99][-1]).abs().argmax())
fig, axes = plt.subplots(1, 3, figsize=(16, 4))
steps_axis = np.arange(1, len(batches) + 1)
axes[0].plot(steps_axis, [float(b[:, BAND].mean()) for b in batches], ".", color="grey",
             label="batch mean μ_t")
for p_ in (0.9, 0.99):
    axes[0].plot(steps_axis, running[p_][:, BAND], label=f"μ̄, p = {p_} (torch momentum {1 - p_:.2f})")
axes[0].axhline(float(true_mean[BAND]), color="k", ls=":", label="training-set mean")
axes[0].set(xlabel="training step", ylabel=f"mean of band {BAND} (normalised log-mel)",
            title="Moving average of the batch means")
axes[0].legend(fontsize=7)
for p_ in (0.9, 0.99):
    axes[1].semilogy(steps_axis, (running[p_] - true_mean).abs().mean(1), label=f"p = {p_}")
axes[1].semilogy(steps_axis, [0.99**t * float(true_mean.abs().mean()) for t in steps_axis], "k:",
                 label="0.99^t × initial error")
axes[1].set(xlabel="training step", ylabel="mean |μ̄ − training-set mean| over bands",
            title="How fast the running mean forgets its start (0)")
axes[1].legend(fontsize=7)
frame = bands.shape[-1] // 2  # the middle frame
axes[2].hist(train_outs[:, BAND, frame].numpy(), bins=15, alpha=0.7,
             label=f"training mode, {N_PROBES} random batches")
axes[2].axvline(float(eval_alone[0, BAND, frame]), color="C3", lw=2,
                label="evaluation mode (any batch)")
axes[2].set(xlabel=f"BatchNorm output, clip 0, band {BAND}, frame {frame}", ylabel="count",
            title="Same clip: train mode depends on its batch")
axes[2].legend(fontsize=7)
fig.tight_layout()
publish(fig, "BatchNorm.png")
err = {p_: float((running[p_][-1] - true_mean).abs().mean()) for p_ in (0.9, 0.99)}
spread = float(train_outs[:, BAND, frame].std())
say(f"Our recursion equals `nn.BatchNorm1d(momentum = 1 − p)` at all {len(batches)} steps (and "
    f"differs if momentum is read as p). After {len(batches)} steps the running mean is off the "
    f"training-set mean by {err[0.9]:.3f} (p = 0.9) and {err[0.99]:.3f} (p = 0.99) on average: "
    f"with p = 0.99 a weight 0.99^{len(batches)} = {0.99 ** len(batches):.2f} still sits on the "
    f"initial zero, so a freshly trained network with p = 0.99 evaluates with biased statistics. "
    f"In training mode the same clip's output varies with its batch (standard deviation "
    f"{spread:.3f} across {N_PROBES} batches); in evaluation mode it is one fixed number.")

# %%
say(f"Notebook 05 ran in {time.perf_counter() - T0:.0f} s (after the imports).")

# %%
from gradkit.report.headlines import show_headlines

show_headlines(**{
    "ResNet Hessian λ_max / λ_min": f"{lam_top:.3f} / {lam_low:.3f} ({res_top.n_hvp} + {res_low.n_hvp} HVPs)",
    "saddle found (small net)": f"λ_min = {lam_min:.4f}",
    "batch size, small vs full": f"val acc {small['val acc']:.2f} vs {large['val acc']:.2f}",
    "diagnosis": ", ".join(opt_failures) + " → optimisation" if opt_failures else "no optimisation failure",
})
