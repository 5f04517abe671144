"""The DDP run's noise scale against the exact one from per-sample gradients.

The hook (:class:`~gradkit.distributed.DDPNoiseScale`) estimates ``B_simple = tr Σ / |G|²`` from
two batch sizes at every step, along the training trajectory. The exact value at one point of
that trajectory comes from the per-sample gradients ``G_i`` of the training loss on the whole
training split at a checkpoint (:func:`gradkit.grads.noise_scale`, with its bootstrap interval).

- :func:`pooled_b_simple`: the hook's estimate over the steps of the last epochs,
  ``mean(trace_sigma) / mean(grad_sq)`` (numerator and denominator averaged separately, as the
  EMA does), with a percentile bootstrap interval over the epoch's steps.
- :func:`exact_b_simple`: the exact ``B_simple`` at the checkpoint of that epoch.
- :func:`agreement`: whether the two intervals overlap (:func:`gradkit.stats.interval_change`),
  as a sentence.
- :func:`short_ddp_study`: all of it for notebook 02: a short 2-process run
  (:func:`~gradkit.distributed.train.run_short_ddp`), its last epoch pooled, the exact value at
  its last checkpoint, the advice and the sentence.

The two differ in what they average: the hook's over the epoch's changing weights, the exact one
at the weights at the end of the epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gradkit.core.checkpoint import load_checkpoint
from gradkit.grads import NoiseScale, noise_scale, per_sample_grads
from gradkit.models import ResNetAudioRanker
from gradkit.stats import interval_change

__all__ = ["DDPStudy", "agreement", "exact_b_simple", "pooled_b_simple", "short_ddp_study"]


def pooled_b_simple(history: pd.DataFrame, epochs: int = 1, n_boot: int = 2000,
                    seed: int = 0, confidence: float = 0.95) -> tuple[float, tuple[float, float]]:
    """``(B_simple, (low, high))`` of the hook's steps in the last ``epochs`` epochs."""
    if history.empty:
        raise ValueError("the DDP history holds no step")
    last = int(history["epoch"].max())
    part = history[history["epoch"] > last - int(epochs)]
    if len(part) < 2:
        raise ValueError(f"the last {epochs} epoch(s) hold {len(part)} steps; need at least 2")
    tr, gsq = part["trace_sigma"].to_numpy(float), part["grad_sq"].to_numpy(float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(part), size=(n_boot, len(part)))
    num, den = tr[idx].mean(axis=1), gsq[idx].mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        boot = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.inf)
    q = [(1 - confidence) / 2, (1 + confidence) / 2]
    low, high = (float(v) for v in np.quantile(boot, q, method="inverted_cdf"))
    estimate = float(tr.mean() / gsq.mean()) if gsq.mean() > 0 else math.inf
    return estimate, (low, high)


def exact_b_simple(checkpoint, x, y, loss_fn, batch_size: int, n_boot: int = 1000,
                   seed: int = 0) -> NoiseScale:
    """The exact noise scale of ``loss_fn`` on ``(x, y)`` at a DDP checkpoint file."""
    payload = load_checkpoint(checkpoint)
    model = ResNetAudioRanker(**payload["arch"])
    model.load_state_dict(payload["model"])
    G = per_sample_grads(model.eval(), loss_fn, x, y)
    return noise_scale(G, batch_size, n_boot=n_boot, seed=seed)


def agreement(pooled: tuple[float, tuple[float, float]], exact: NoiseScale) -> str:
    """A sentence: do the hook's and the exact 95 % intervals of ``B_simple`` overlap?"""
    estimate, (low, high) = pooled
    word = interval_change((estimate, (low, high)), (exact.b_simple, exact.b_simple_ci))
    same = word == "no detectable change"
    return (f"DDP's two-batch estimate over the last epochs, B_simple ≈ {estimate:.3g} "
            f"[{low:.3g}, {high:.3g}], and the exact per-sample value at the last checkpoint, "
            f"{exact.b_simple:.3g} [{exact.b_simple_ci[0]:.3g}, {exact.b_simple_ci[1]:.3g}], "
            + ("agree: their 95 % intervals overlap." if same else
               f"disagree: the exact value is {word} and the intervals do not overlap."))


@dataclass(frozen=True)
class DDPStudy:
    """What :func:`short_ddp_study` recorded (``history``: one row per step, rank 0)."""

    history: pd.DataFrame
    global_batch: int
    pooled: tuple[float, tuple[float, float]]
    exact: NoiseScale
    advice: str
    sentence: str
    seconds: float


def short_ddp_study(epochs: int = 6, clips: int = 600, batch_size: int = 8, seed: int = 42,
                    pool_epochs: int = 3, n_boot: int = 1000) -> DDPStudy:
    """Train two gloo processes for ``epochs`` (``batch_size`` per rank), then compare the
    hook's ``B_simple`` over the last ``pool_epochs`` epochs with the exact one at the last
    checkpoint. Each step's two-batch estimate of ``|G|²`` is noisy when ``B_simple`` exceeds
    the global batch, so the pool needs a hundred steps or so (the defaults give ~100)."""
    import time

    from gradkit.distributed.noise_hook import critical_batch_advice
    from gradkit.distributed.train import DDPConfig, ranker_loss, run_short_ddp, training_split

    start = time.perf_counter()
    cfg = DDPConfig(epochs=epochs, batch_size=batch_size, clips=clips, seed=seed, verbose=False)
    history = run_short_ddp(clips=clips, epochs=epochs, batch_size=batch_size, seed=seed)
    global_batch = 2 * batch_size
    pooled = pooled_b_simple(history, min(pool_epochs, epochs))
    x, y = training_split(cfg)
    exact = exact_b_simple(cfg.out_dir / "checkpoints" / f"ddp_epoch_{epochs:03d}.pt", x, y,
                           ranker_loss, global_batch, n_boot=n_boot, seed=seed)
    advice = critical_batch_advice(pooled[0], global_batch,
                                   f"last {pool_epochs} epochs, DDP hook")
    return DDPStudy(history, global_batch, pooled, exact, advice, agreement(pooled, exact),
                    time.perf_counter() - start)
