"""The paired t-test, vectorised over many designs at once.

For the differences ``d_1 … d_n`` of one design (``d_i = a_i - b_i``):

- ``mean = (1/n) Σ d_i``,  ``sd = sqrt(Σ (d_i - mean)² / (n - 1))``,  ``se = sd / √n``
- ``t = mean / se`` with ``n - 1`` degrees of freedom
- ``p = 2 P(T_{n-1} > |t|)``                              the two-sided p-value
- ``ci = mean ± t_{1-α/2, n-1} · se``                      the t-interval at level ``1 - α``
- ``sign = ±1`` when ``p < α`` (the sign of ``mean``), else ``0``

These are the definitions of ``scipy.stats.ttest_rel`` and its ``confidence_interval()``
(Student 1908; any textbook, e.g. Wasserman 2004, *All of Statistics*, §10.2). ``p < α``
holds exactly when the interval excludes 0, both being ``|t| > t_{1-α/2, n-1}``.

Degenerate designs, decided before the formulas (``scipy`` would return NaN or warn):

- ``n < 2``                     no spread to test against: ``p``, ``ci``, ``sd`` are NaN, sign 0
- all ``d_i`` exactly zero      ``p = 1``, ``ci = (0, 0)``, ``sd = 0``, sign 0
- all ``d_i`` equal to ``c ≠ 0``  ``p = 0``, ``ci = (c, c)``, ``sd = 0``, sign of ``c``

:func:`paired_t` is the one implementation: :func:`gradkit.stats.compare_paired` calls it on a
single design, simulations call it on thousands.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import stats as sps

__all__ = ["PairedT", "paired_t"]


class PairedT(NamedTuple):
    """Per-design arrays (shape ``diffs.shape[:-1]``) of the paired t-test."""

    mean: np.ndarray
    sd: np.ndarray
    p_value: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    sign: np.ndarray       # +1 mean significantly > 0, -1 significantly < 0, 0 otherwise
    all_zero: np.ndarray   # bool: every difference is exactly 0
    constant: np.ndarray   # bool: every difference equals the first one, not all zero


def paired_t(diffs, alpha: float = 0.05) -> PairedT:
    """The paired t-test on each row of ``diffs[..., n]`` (the last axis holds the pairs).

    ``diffs`` must be finite; validation of user input is done by the caller.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    d = np.asarray(diffs, dtype=float)
    if d.ndim == 0:
        raise ValueError("diffs needs a last axis of pairs")
    n = d.shape[-1]
    shape = d.shape[:-1]
    if n == 0:
        mean = np.full(shape, np.nan)
    else:
        mean = d.mean(axis=-1)
    if n < 2:
        nan = np.full(shape, np.nan)
        false = np.zeros(shape, dtype=bool)
        return PairedT(mean, nan, nan.copy(), nan.copy(), nan.copy(),
                       np.zeros(shape, dtype=int), false, false.copy())

    first = d[..., :1]
    identical = np.all(d == first, axis=-1)
    all_zero = identical & (first[..., 0] == 0)
    constant = identical & ~all_zero

    sd = d.std(axis=-1, ddof=1)
    se = sd / np.sqrt(n)
    df = n - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        t = mean / se
    p = 2.0 * sps.t.sf(np.abs(t), df)
    half = sps.t.ppf(1.0 - alpha / 2.0, df) * se
    lo = mean - half
    hi = mean + half

    # Spread-free designs: exact values instead of 0/0 or c/0.
    c = first[..., 0]
    sd = np.where(identical, 0.0, sd)
    mean = np.where(identical, c, mean)
    p = np.where(all_zero, 1.0, np.where(constant, 0.0, p))
    lo = np.where(identical, c, lo)
    hi = np.where(identical, c, hi)

    sign = np.where(p < alpha, np.sign(mean), 0.0).astype(int)
    return PairedT(mean, sd, p, lo, hi, sign, all_zero, constant)
