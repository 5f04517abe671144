"""Batch size: the noise of a mini-batch gradient against the 1/B law."""

from __future__ import annotations

from torch import Tensor

from gradkit.grads.noise import batch_deviations, batch_noise, trace_sigma

__all__ = ["at_equal_updates", "expected_minibatch_noise", "minibatch_gradient_noise",
           "noise_table"]


def minibatch_gradient_noise(G: Tensor, batch_size: int, n_draws: int, seed: int = 0
                             ) -> tuple[float, float]:
    """Measured ``E‖g_B − g‖²`` over ``n_draws`` batches drawn without replacement, and its
    Monte-Carlo standard error.

    ``G [N, P]`` per-sample gradients, ``g = mean_i G_i``, ``g_B = mean_{i∈B} G_i``; the draws
    are :func:`gradkit.grads.noise.batch_deviations` (from the N×N Gram matrix: no P-sized
    tensor per draw), the same sampler that checks the gradient noise scale of notebook 02.
    """
    if n_draws < 2:
        raise ValueError(f"n_draws must be ≥ 2, got {n_draws}")
    noise = batch_deviations(G, batch_size, n_draws, seed)
    return float(noise.mean()), float(noise.std() / n_draws**0.5)


def expected_minibatch_noise(G: Tensor, batch_size: int) -> float:
    """``E‖g_B − g‖² = (tr Σ / B) · (N − B)/(N − 1)`` for B samples drawn without replacement,
    with ``tr Σ = (1/N) Σ_i ‖G_i − g‖²``: the 1/B law times the finite-population correction
    (:func:`gradkit.grads.noise.batch_noise` of :func:`gradkit.grads.noise.trace_sigma`)."""
    return batch_noise(trace_sigma(G), G.shape[0], batch_size)


def noise_table(G: Tensor, batch_sizes, n_draws: int):
    """For each batch size B: the sampled ``E‖g_B − g‖²`` (:func:`minibatch_gradient_noise`,
    ``n_draws`` batches, seeded with B), its standard error, the closed form
    (:func:`expected_minibatch_noise`) and ``z = (sampled − closed form) / s.e.`` (``nan`` at
    B = N, where every draw is the full gradient and both are 0 up to rounding). Indexed by
    ``B``."""
    import math

    import pandas as pd

    rows = []
    for b in batch_sizes:
        sampled, se = minibatch_gradient_noise(G, int(b), n_draws=n_draws, seed=int(b))
        expected = expected_minibatch_noise(G, int(b))
        rows.append({"B": int(b), "sampled E‖g_B − g‖²": sampled, "± s.e.": se,
                     "trΣ/B·(N−B)/(N−1)": expected,
                     "z": (sampled - expected) / se if b < G.shape[0] and se > 0
                     else math.nan})
    return pd.DataFrame(rows).set_index("B")


def at_equal_updates(histories: dict, n_train: int, column: str = "train_loss"):
    """Per batch size ``B`` (``histories[B]``: one row per epoch, ``epoch`` from 1), the value
    of ``column`` after the same number of optimiser updates: ``u = epoch · ceil(N / B)``, at
    every ``u`` that every run has reached at the end of one of its epochs. Returns a table
    indexed by ``u`` with one column per ``B`` (empty when no common ``u`` exists)."""
    import math

    import pandas as pd

    by_updates = {b: pd.Series(h[column].to_numpy(),
                               index=h.epoch.to_numpy() * math.ceil(n_train / b))
                  for b, h in histories.items()}
    common = sorted(set.intersection(*(set(s.index) for s in by_updates.values())))
    return pd.DataFrame({b: s.loc[common] for b, s in by_updates.items()},
                        index=pd.Index(common, name="updates"))
