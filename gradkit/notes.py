"""Small computations behind notebook 05 (the optimisation lecture notes), each one tested.

- :func:`train_short`        a short, timed, seeded training of a model on an audio split
- :func:`plain_cnn`          a CNN without skip connections (deeper = harder to optimise)
- :func:`diagnose`           the notes' recipe: model bias, optimisation or overfitting?
- :func:`find_critical_point` Levenberg–Marquardt on the gradient: reaches ∇L = 0 of any kind
                              (of a flat loss such as :func:`gradkit.hessian.flat_loss`)
- :func:`classify_critical_point` minimum / maximum / saddle / degenerate from the eigenvalues
- :func:`minibatch_gradient_noise`, :func:`expected_minibatch_noise`  variance of g_B vs B
- :func:`softmax`, :func:`ce_grad_logits`, :func:`mse_grad_logits`  gradients w.r.t. logits
- :func:`hoeffding_bound`, :func:`simulate_bad_training_sets`  P(D_train is bad) vs N and |H|
- :func:`moving_average`, :func:`batchnorm_running_stats`  BatchNorm's running statistics
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradkit.gns import batch_deviations, batch_noise, trace_sigma

# ---------------------------------------------------------------------------------------------
# Short trainings on the audio task
# ---------------------------------------------------------------------------------------------


def _epoch_order(n: int, seed: int, epoch: int) -> Tensor:
    from gradkit.train import epoch_order  # same data order as gradkit.train's runs

    return epoch_order(n, seed, epoch)


def train_short(
    model: nn.Module,
    split: Any,
    epochs: int,
    batch_size: int,
    lr: float,
    schedule: Callable[[int], float] | None = None,
    optimizer: str = "adam",
    seed: int = 42,
    loss_fn: Callable[[Any, Tensor], Tensor] | None = None,
) -> pd.DataFrame:
    """Train ``model`` in place on ``split.x_train`` for ``epochs``; one row per epoch.

    Mini-batches of ``batch_size`` in the order of :func:`gradkit.train.epoch_order`; the
    optimiser is Adam or SGD (``optimizer="adam"|"sgd"``) with ``lr`` times ``schedule(step)``
    (a per-step factor, e.g. :func:`gradkit.optimizers.warmup_cosine`). ``loss_fn`` defaults to
    :func:`gradkit.train.sample_loss` (cross-entropy on the class logits). Columns: ``epoch``,
    ``train_loss``/``train_acc`` (the whole training set after the epoch, eval mode),
    ``val_loss``/``val_acc``, ``lr`` (at the epoch's last step), ``seconds`` (the epoch's
    optimisation steps, wall clock).
    """
    from gradkit.train import sample_loss

    loss_fn = loss_fn or sample_loss
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"need epochs ≥ 1, batch_size ≥ 1, lr > 0; got {epochs}, "
                         f"{batch_size}, {lr}")
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = (torch.optim.Adam(params, lr=lr) if optimizer == "adam"
           else torch.optim.SGD(params, lr=lr))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule) if schedule else None
    x, y = split.x_train, split.y_train
    rows = []
    for epoch in range(1, epochs + 1):
        order = _epoch_order(len(x), seed, epoch)
        model.train()
        start = time.perf_counter()
        for i in range(0, len(x), batch_size):
            idx = order[i:i + batch_size]
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
            if sched is not None:
                sched.step()
        seconds = time.perf_counter() - start
        lr_now = opt.param_groups[0]["lr"] if sched is None else sched.get_last_lr()[0]
        row = {"epoch": epoch, "seconds": seconds, "lr": lr_now}
        model.eval()
        with torch.no_grad():
            for part, xs, ys in (("train", x, y), ("val", split.x_val, split.y_val)):
                out = model(xs)
                logits = out[0] if isinstance(out, tuple) else out
                row[f"{part}_loss"] = float(loss_fn(out, ys))
                row[f"{part}_acc"] = float((logits.argmax(1) == ys).float().mean())
        rows.append(row)
    return pd.DataFrame(rows)


def plain_cnn(depth: int, width: int = 16, n_classes: int = 6, seed: int = 42) -> nn.Sequential:
    """A CNN with ``depth`` conv–ReLU layers and *no* skip connections and no normalisation.

    ``conv3x3(1→width)`` then ``depth − 1`` ``conv3x3(width→width)`` (layers 2 and 4 with
    stride 2), each followed by ReLU; global average pooling and a linear classifier. The
    textbook case in which a deeper network is harder to optimise than a shallower one (He et
    al., 2016); compare with :class:`gradkit.models.ResNetAudioRanker`. Seeded initial weights.
    """
    if depth < 1 or width < 1:
        raise ValueError(f"depth and width must be ≥ 1, got {depth}, {width}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Conv2d(1 if i == 0 else width, width, 3, 2 if i in (1, 3) else 1, 1),
                       nn.ReLU()]
        return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(width, n_classes))


def diagnose(names: Sequence[str], depths: Sequence[int], train_loss: Sequence[float],
             val_loss: Sequence[float], bias_level: float, gap_level: float) -> list[str]:
    """The notes' decision recipe, one verdict per model (listed shallow to deep).

    - **optimisation**: a deeper model reaches a *higher* training loss than a shallower one.
      A deeper model can represent everything the shallower one can (its extra blocks could
      be identities), so its higher loss is the optimiser's failure, not a lack of flexibility
      and not overfitting (overfitting shows on *validation* data, not training data).
    - **model bias**: the training loss stays above ``bias_level`` (e.g. a share of the
      chance-level loss) and no shallower model did better.
    - **overfitting**: training loss low but ``val_loss − train_loss > gap_level``.
    - **fine** otherwise.
    """
    n = len(names)
    if not n == len(depths) == len(train_loss) == len(val_loss):
        raise ValueError("names, depths, train_loss and val_loss must have the same length")
    verdicts = []
    for i in range(n):
        shallower = [j for j in range(n) if depths[j] < depths[i]]
        best = min(shallower, key=lambda j: train_loss[j], default=None)
        if best is not None and train_loss[i] > train_loss[best]:
            verdicts.append(
                f"{names[i]}: optimisation — training loss {train_loss[i]:.3f} is higher than "
                f"{train_loss[best]:.3f} of the shallower '{names[best]}'")
        elif train_loss[i] > bias_level:
            verdicts.append(f"{names[i]}: model bias (or too little training) — training loss "
                            f"{train_loss[i]:.3f} > {bias_level:.3f}")
        elif val_loss[i] - train_loss[i] > gap_level:
            verdicts.append(f"{names[i]}: overfitting — validation loss {val_loss[i]:.3f} exceeds "
                            f"training loss {train_loss[i]:.3f} by more than {gap_level:.3f}")
        else:
            verdicts.append(f"{names[i]}: fine — training loss {train_loss[i]:.3f}, validation "
                            f"loss {val_loss[i]:.3f}")
    return verdicts


# ---------------------------------------------------------------------------------------------
# Critical points
# ---------------------------------------------------------------------------------------------
def find_critical_point(loss: Callable[[Tensor], Tensor], theta0: Tensor, tol: float = 1e-9,
                        max_iter: int = 200, damping: float = 1e-3) -> tuple[Tensor, list[float]]:
    """A point with ``‖∇L(θ)‖ ≤ tol`` near ``theta0``, whatever its kind (minimum or saddle).

    Gradient descent is repelled by saddles; Newton's method is not, it solves ∇L(θ) = 0. Here
    Levenberg–Marquardt on the residual r(θ) = ∇L(θ) (Jacobian H, symmetric):
    ``δ = −(H² + λI)⁻¹ H ∇L``, accepted if it lowers ‖∇L‖ (then λ ← λ/3) else λ ← 10λ.
    Uses the dense Hessian (``torch.func.hessian``): tiny models only. Returns θ and the
    gradient norm after each accepted step (first entry: at θ0).
    """
    grad_fn, hess_fn = torch.func.grad(loss), torch.func.hessian(loss)
    theta = theta0.detach().clone()
    g = grad_fn(theta)
    norms = [float(g.norm())]
    lam, eye = damping, torch.eye(theta.numel(), dtype=theta.dtype)
    for _ in range(max_iter):
        if norms[-1] <= tol:
            break
        H = hess_fn(theta)
        step = -torch.linalg.solve(H @ H + lam * eye, H @ g)
        g_new = grad_fn(theta + step)
        if float(g_new.norm()) < norms[-1]:
            theta, g = theta + step, g_new
            norms.append(float(g.norm()))
            lam = max(lam / 3, 1e-12)
        else:
            lam *= 10
            if lam > 1e12:
                break  # no step lowers ‖∇L‖: a minimum of ‖∇L‖ that is not a critical point
    return theta, norms


def classify_critical_point(eigenvalues: Tensor, rel_tol: float = 1e-6) -> str:
    """From the Hessian's eigenvalues at a critical point (the notes' second-order test).

    Eigenvalues with ``|λ| ≤ rel_tol · max|λ|`` count as zero. All > 0: ``"local minimum"``;
    all < 0: ``"local maximum"``; both signs: ``"saddle point"``; no negative but some zero:
    ``"degenerate (flat directions; no negative curvature)"`` — the second-order test is
    inconclusive there.
    """
    ev = eigenvalues.detach().to(torch.float64)
    zero = rel_tol * float(ev.abs().max())
    neg, pos = int((ev < -zero).sum()), int((ev > zero).sum())
    if neg and pos:
        return "saddle point"
    if neg:
        return "local maximum" if neg == ev.numel() else "degenerate (flat directions)"
    if pos == ev.numel():
        return "local minimum"
    return "degenerate (flat directions; no negative curvature)"


# ---------------------------------------------------------------------------------------------
# Batch size: the noise of a mini-batch gradient
# ---------------------------------------------------------------------------------------------
def minibatch_gradient_noise(G: Tensor, batch_size: int, n_draws: int, seed: int = 0
                             ) -> tuple[float, float]:
    """Measured ``E‖g_B − g‖²`` over ``n_draws`` batches drawn without replacement, and its
    Monte-Carlo standard error.

    ``G [N, P]`` per-sample gradients, ``g = mean_i G_i``, ``g_B = mean_{i∈B} G_i``; the draws
    are :func:`gradkit.gns.batch_deviations` (from the N×N Gram matrix: no P-sized tensor per
    draw), the same sampler that checks the gradient noise scale of notebook 02.
    """
    if n_draws < 2:
        raise ValueError(f"n_draws must be ≥ 2, got {n_draws}")
    noise = batch_deviations(G, batch_size, n_draws, seed)
    return float(noise.mean()), float(noise.std() / n_draws**0.5)


def expected_minibatch_noise(G: Tensor, batch_size: int) -> float:
    """``E‖g_B − g‖² = (tr Σ / B) · (N − B)/(N − 1)`` for B samples drawn without replacement,
    with ``tr Σ = (1/N) Σ_i ‖G_i − g‖²``: the 1/B law times the finite-population correction
    (:func:`gradkit.gns.batch_noise` of :func:`gradkit.gns.trace_sigma`)."""
    return batch_noise(trace_sigma(G), G.shape[0], batch_size)


# ---------------------------------------------------------------------------------------------
# Classification: softmax, MSE vs cross-entropy
# ---------------------------------------------------------------------------------------------
def softmax(z: Tensor) -> Tensor:
    """``y'_i = exp(z_i) / Σ_j exp(z_j)`` along the last axis (shifted by max z for stability)."""
    e = torch.exp(z - z.max(-1, keepdim=True).values)
    return e / e.sum(-1, keepdim=True)


def ce_grad_logits(z: Tensor, target: Tensor) -> Tensor:
    """``∂e/∂z`` of ``e = −Σ_i ŷ_i ln y'_i`` (one-hot ŷ, y' = softmax z): ``y' − ŷ``."""
    return softmax(z) - F.one_hot(target, z.shape[-1]).to(z.dtype)


def mse_grad_logits(z: Tensor, target: Tensor) -> Tensor:
    """``∂e/∂z`` of ``e = Σ_i (ŷ_i − y'_i)²``: ``J ᵀ 2(y' − ŷ)`` with the softmax Jacobian
    ``J = diag(y') − y'y'ᵀ``. J → 0 when y' saturates (one y'_i → 1), so the gradient vanishes
    even when the prediction is confidently *wrong*."""
    p = softmax(z)
    r = 2 * (p - F.one_hot(target, z.shape[-1]).to(z.dtype))
    return p * r - p * (p * r).sum(-1, keepdim=True)


# ---------------------------------------------------------------------------------------------
# Hoeffding: when is a training set "bad"?
# ---------------------------------------------------------------------------------------------
def hoeffding_bound(n: int | np.ndarray, eps: float, n_hypotheses: int) -> np.ndarray:
    """``P(D_train is bad) ≤ |H| · 2 exp(−2 N ε²)`` (union bound over H), capped at 1."""
    return np.minimum(1.0, n_hypotheses * 2 * np.exp(-2 * np.asarray(n, dtype=float) * eps**2))


def threshold_losses(thresholds: np.ndarray, noise: float) -> np.ndarray:
    """``L(h, D_all)`` of ``predict 1 iff x > h`` when x ~ U(0, 1) and y = 1[x > 1/2] flipped
    with probability ``noise``: ``noise + (1 − 2·noise)·|h − 1/2|``."""
    return noise + (1 - 2 * noise) * np.abs(np.asarray(thresholds) - 0.5)


def simulate_bad_training_sets(n: int, eps: float, thresholds: np.ndarray, noise: float = 0.1,
                               n_trials: int = 20000, seed: int = 0) -> float:
    """Share of training sets of size ``n`` that are bad: some threshold h in ``thresholds``
    has ``|L(h, D_train) − L(h, D_all)| > eps`` (0/1 loss, the set-up of
    :func:`threshold_losses`).

    A training set only matters through how many samples fall in each (interval between
    thresholds, label) cell, so each trial draws those counts from a multinomial directly.
    """
    t = np.sort(np.asarray(thresholds, dtype=float))
    if t.size == 0 or t.min() < 0 or t.max() > 1:
        raise ValueError("thresholds must be a non-empty array of numbers in [0, 1]")
    edges = np.concatenate([[0.0], t, [1.0]])
    lo, hi = edges[:-1], edges[1:]
    below = np.clip(np.minimum(hi, 0.5) - lo, 0, None)  # length of each interval under 1/2
    above = (hi - lo) - below
    p1 = below * noise + above * (1 - noise)  # P(x in interval, y = 1)
    p0 = (hi - lo) - p1
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, np.concatenate([p0, p1]), size=n_trials)
    c0, c1 = counts[:, : len(lo)], counts[:, len(lo):]
    # threshold k sits between interval k and k+1: errors = y=1 below it + y=0 above it
    ones_below = np.cumsum(c1, axis=1)[:, :-1]
    zeros_above = np.cumsum(c0[:, ::-1], axis=1)[:, ::-1][:, 1:]
    train_loss = (ones_below + zeros_above) / n
    bad = np.abs(train_loss - threshold_losses(t, noise)) > eps
    return float(bad.any(axis=1).mean())


# ---------------------------------------------------------------------------------------------
# Batch normalisation: moving averages
# ---------------------------------------------------------------------------------------------
def moving_average(values: Tensor, p: float, init: float | Tensor = 0.0) -> Tensor:
    """``μ̄_t = p μ̄_{t−1} + (1 − p) μ_t`` for each row μ_t of ``values``; μ̄_{−1} = ``init``.

    Returns ``[T, ...]``: μ̄ after each step. PyTorch's BatchNorm ``momentum`` is ``1 − p``.
    """
    if not 0 <= p <= 1:
        raise ValueError(f"p must be in [0, 1], got {p}")
    avg = torch.as_tensor(init, dtype=values.dtype).expand_as(values[0]).clone()
    out = []
    for v in values:
        avg = p * avg + (1 - p) * v
        out.append(avg)
    return torch.stack(out)


def batchnorm_running_stats(batches: Sequence[Tensor], p: float) -> tuple[Tensor, Tensor]:
    """Running mean and variance ``[T, C]`` after each batch ``[B, C, *]`` of a stream, as
    ``nn.BatchNorm(momentum=1 − p)`` keeps them (mean from 0, variance from 1, and the batch
    variance is the *unbiased* one, ``B·L/(B·L − 1)`` times the one used to normalise)."""
    means, variances = [], []
    for b in batches:
        flat = b.transpose(0, 1).reshape(b.shape[1], -1)  # [C, B·L]
        means.append(flat.mean(1))
        variances.append(flat.var(1, unbiased=True))
    return (moving_average(torch.stack(means), p, 0.0),
            moving_average(torch.stack(variances), p, 1.0))


def batchnorm_output(x: Tensor, mean: Tensor, var: Tensor, weight: Tensor, bias: Tensor,
                     eps: float = 1e-5) -> Tensor:
    """``γ (x − μ)/√(σ² + ε) + β`` per channel (axis 1) of ``x [B, C, *]``."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return ((x - mean.view(shape)) / torch.sqrt(var.view(shape) + eps) * weight.view(shape)
            + bias.view(shape))


def batch_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and *biased* variance of ``x [B, C, *]`` (what training mode uses)."""
    flat = x.transpose(0, 1).reshape(x.shape[1], -1)
    return flat.mean(1), flat.var(1, unbiased=False)

