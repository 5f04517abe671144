"""Paired comparison of two conditions observed on the same units (seed, fold, split).

For measurements ``a_i``, ``b_i`` of conditions A and B on unit ``i`` (``i = 1 … n``):

- ``diff = mean(a_i - b_i)``                the estimated effect of A relative to B
- ``ci``, ``p_value``                       the paired t-test and its t-interval at ``1 - α``
  (:mod:`gradkit.stats.ttest`, ``scipy.stats.ttest_rel`` semantics)
- ``min_detectable``                        the smallest ``|true diff|`` this ``n`` and this
  spread detect with 80 % power at ``α`` (:mod:`gradkit.stats.power`, noncentral t, with the
  sample ``sd`` standing in for the true spread); NaN when ``n < 2``
- ``wins`` / ``losses`` / ``ties``          units on which A is better / worse / equal
- ``verdict``                               ``"better"`` / ``"worse"`` (A relative to B) when
  ``p < α`` (equivalently: the interval excludes 0), else ``"no detectable difference"``

Why the paired t-test: it is exactly calibrated when the differences are normal, at every
``n ≥ 2``, and it can call a consistent win at the tiny ``n`` of a seed study. A sign-flip
permutation test cannot: at ``n = 5`` its smallest two-sided p-value is ``2/2⁵ = 1/16 > 0.05``,
so five wins out of five with nearly equal differences would never count.

Limits: the calibration rests on roughly normal differences. Skewed differences at small ``n``
inflate the false-positive rate, almost all of it in the direction opposite to the skew: for
centred exponential differences (skewness 2) at ``α = 0.05`` the two-sided rate is about 0.12
at ``n = 3 … 5``, 0.10 at ``n = 10`` and 0.07 at ``n = 30``. Heavy tails do the opposite
(one outlying unit inflates ``sd`` and hides a real effect). With a handful of pairs, look at
the differences themselves (``wins``/``losses``) before trusting a verdict.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .power import detectable_difference
from .text import number, p_text, with_unit
from .ttest import paired_t

__all__ = ["PairedComparison", "compare_paired", "as_finite_vector", "VERDICTS"]

VERDICTS = ("better", "worse", "no detectable difference")


def as_finite_vector(x, name: str) -> np.ndarray:
    """``x`` as a 1-D float array; ValueError naming ``name`` and the index of a NaN / inf."""
    arr = np.asarray(x, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        i = int(bad[0])
        more = f" (and {bad.size - 1} more)" if bad.size > 1 else ""
        raise ValueError(f"{name}[{i}] is {arr[i]}{more}: every measurement must be finite")
    return arr


@dataclass(frozen=True)
class PairedComparison:
    """The paired comparison of condition ``label_a`` against ``label_b`` (see module doc)."""

    diff: float
    ci: tuple[float, float]
    p_value: float
    n: int
    sd: float
    min_detectable: float
    wins: int
    losses: int
    ties: int
    verdict: str
    label_a: str = "a"
    label_b: str = "b"
    higher_is_better: bool = True
    alpha: float = 0.05
    unit: str = ""
    what: str = "pairs"
    reason: str = ""

    @property
    def detected(self) -> bool:
        """True when the verdict is ``"better"`` or ``"worse"``."""
        return self.verdict != "no detectable difference"

    def as_row(self, scale: float = 1.0) -> dict:
        """One table row; ``diff``, ``ci``, ``sd``, ``min_detectable`` multiplied by ``scale``."""
        row = asdict(self)
        lo, hi = self.ci
        row.pop("ci")
        row.update(comparison=f"{self.label_a} \u2212 {self.label_b}", diff=self.diff * scale,
                   ci_low=lo * scale, ci_high=hi * scale, sd=self.sd * scale,
                   min_detectable=self.min_detectable * scale)
        order = ["comparison", "diff", "ci_low", "ci_high", "p_value", "n", "sd",
                 "min_detectable", "wins", "losses", "ties", "verdict", "unit", "what",
                 "label_a", "label_b", "higher_is_better", "alpha", "reason"]
        return {k: row[k] for k in order}

    def sentence(self, digits: int = 1, scale: float = 1.0) -> str:
        """E.g. ``GHM − raw = −4.1 pp [−9.8, 1.6] over 15 seed×fold pairs, p = 0.14: no
        detectable difference; this design detects ≥ 6.2 pp``."""
        head = (f"{self.label_a} \u2212 {self.label_b} = "
                f"{with_unit(number(self.diff * scale, digits), self.unit)}")
        if math.isnan(self.p_value):
            return f"{head} over {self.n} {self.what}: not testable ({self.reason})"
        lo, hi = self.ci
        verdict = (self.verdict if not self.detected else f"{self.label_a} {self.verdict}")
        md = with_unit(number(self.min_detectable * scale, digits), self.unit)
        return (f"{head} [{number(lo * scale, digits)}, {number(hi * scale, digits)}] over "
                f"{self.n} {self.what}, {p_text(self.p_value, self.alpha)}: {verdict}; "
                f"this design detects \u2265 {md}")


def compare_paired(a, b, higher_is_better: bool = True, alpha: float = 0.05,
                   label_a: str = "a", label_b: str = "b", unit: str = "",
                   what: str = "pairs") -> PairedComparison:
    """Compare paired measurements ``a[i]``, ``b[i]`` with the paired t-test (see module doc).

    ``higher_is_better`` says which direction of the measurement is good (accuracy: True,
    loss: False); ``diff`` is always ``mean(a - b)``, the verdict is A relative to B. ``unit``
    and ``what`` (the name of the units, e.g. ``"seed×fold pairs"``) are for :meth:`sentence`.

    Raises ValueError for unequal lengths, non-1-D input, NaN or inf (naming the argument and
    the index), or ``alpha`` outside (0, 1).
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    a_arr = as_finite_vector(a, "a")
    b_arr = as_finite_vector(b, "b")
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"a and b must pair up one to one: len(a) = {a_arr.size}, "
                         f"len(b) = {b_arr.size}")
    n = int(a_arr.size)
    res = paired_t((a_arr - b_arr)[None, :], alpha)
    mean, sd, p = float(res.mean[0]), float(res.sd[0]), float(res.p_value[0])
    ci = (float(res.ci_low[0]), float(res.ci_high[0]))
    good = 1 if higher_is_better else -1
    sign = int(res.sign[0]) * good
    verdict = {1: "better", -1: "worse", 0: "no detectable difference"}[sign]

    if n < 2:
        reason = f"n = {n} < 2 {what}: no spread to test against"
    elif res.all_zero[0]:
        reason = "all differences are exactly zero"
    elif res.constant[0]:
        reason = "all differences are identical (sd = 0): p = 0 by convention"
    else:
        reason = ""

    wins = int(np.sum(a_arr > b_arr) if higher_is_better else np.sum(a_arr < b_arr))
    ties = int(np.sum(a_arr == b_arr))
    return PairedComparison(
        diff=mean, ci=ci, p_value=p, n=n, sd=sd,
        min_detectable=detectable_difference(n, sd, alpha) if n >= 2 else math.nan,
        wins=wins, losses=n - wins - ties, ties=ties, verdict=verdict,
        label_a=label_a, label_b=label_b, higher_is_better=bool(higher_is_better),
        alpha=float(alpha), unit=unit, what=what, reason=reason)
