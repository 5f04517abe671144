"""Hoeffding: when is a training set "bad"?"""

from __future__ import annotations

import numpy as np

from gradkit.stats import wilson_interval

__all__ = ["bound_table", "evenly_spaced_thresholds", "hoeffding_bound",
           "simulate_bad_training_sets", "threshold_losses"]


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


def evenly_spaced_thresholds(size: int) -> np.ndarray:
    """``|H| = size`` thresholds: the midpoints of ``size`` equal cells of [0, 1]; a single
    hypothesis is the threshold 0.3 (a wrong one, so its loss is not the minimum)."""
    if size < 1:
        raise ValueError(f"size must be ≥ 1, got {size}")
    return np.array([0.3]) if size == 1 else np.linspace(0.5 / size, 1 - 0.5 / size, size)


def bound_table(n_values, h_sizes, eps: float, noise: float = 0.1, n_trials: int = 20000):
    """For every ``|H|`` in ``h_sizes`` (:func:`evenly_spaced_thresholds`) and training-set size
    N in ``n_values``: the simulated P(bad) (:func:`simulate_bad_training_sets`, seeded with N),
    its 95 % Wilson interval (:func:`gradkit.stats.wilson_interval`) and the bound
    (:func:`hoeffding_bound`). ``consistent`` says the interval reaches down to the bound or
    below it: the simulation does not contradict the bound."""
    import pandas as pd

    rows = []
    for size in h_sizes:
        thresholds = evenly_spaced_thresholds(size)
        for n in n_values:
            p_bad = simulate_bad_training_sets(n, eps, thresholds, noise=noise,
                                               n_trials=n_trials, seed=n)
            low, high = wilson_interval(round(p_bad * n_trials), n_trials)
            bound = float(hoeffding_bound(n, eps, size))
            rows.append({"|H|": size, "N": n, "simulated P(bad)": p_bad, "95 % CI low": low,
                         "95 % CI high": high, "bound": bound, "consistent": low <= bound})
    return pd.DataFrame(rows)
