"""One observation against a control: by how much does it exceed what the control gives?

For an observed value ``o`` and ``R`` control values ``c_1 … c_R`` drawn independently from the
distribution ``o`` would have if nothing but the control's mechanism were at work (e.g. the same
statistic of runs trained on permuted labels):

- ``excess = o - c̄``                        with ``c̄`` the mean and ``s`` the sd of the ``c_r``
- ``t = excess / (s · √(1 + 1/R))``          with ``R - 1`` degrees of freedom: under the null
  ``o - c̄ ~ N(0, σ² (1 + 1/R))``, and ``s²`` estimates ``σ²`` from the controls alone
- ``p = 2 P(T_{R-1} > |t|)``                 two-sided
- ``ci = excess ± t_{1-α/2, R-1} · s · √(1 + 1/R)``  the excess of ``o`` over the control's
  level at ``1 - α``; ``p < α`` exactly when it excludes 0
- ``verdict``  ``"exceeds its control"`` / ``"lies below its control"`` when ``p < α``, else
  ``"at its control level"``

This is the test of one individual against a small normative sample (Crawford & Howell 1998,
"Comparing an individual's test score against norms derived from small samples", *The Clinical
Neuropsychologist* 12(4)): the two-sample t-test with a group of one, whose variance comes from
the control group. Unlike the one-sample t-interval of ``c̄`` it counts the observation's own
spread (the ``1`` in ``1 + 1/R``), so that an observation drawn from the control distribution is
called "exceeds" at rate ``α``, not more. It assumes roughly normal control values.

Degenerate inputs, decided before the formulas: ``R < 2`` gives no spread (``p``, ``ci`` NaN,
``"not testable"``). Controls all equal (``s = 0``, a discrete statistic such as a share of
pairs often is) give no spread for the t-test to stand on; the exact rank test of the
observation among the ``R + 1`` exchangeable values is used instead: ``p = 1`` and
``ci = (0, 0)`` when ``o`` equals them, else ``p = 2 / (R + 1)`` (two-sided, as the t-test:
the observation the most extreme of all, on either side) and ``ci`` NaN. Below ``R = 40`` that
never falls under ``α = 0.05``: a control without spread cannot show an excess.

>>> r = compare_to_control(0.9, [0.30, 0.35, 0.28, 0.33], label="label-permuted control",
...                        what="permutations")
>>> r.verdict, round(r.excess, 2)
('exceeds its control', 0.58)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from .paired import as_finite_vector
from .text import number, p_text, with_unit

__all__ = ["CONTROL_VERDICTS", "ControlComparison", "compare_to_control"]

CONTROL_VERDICTS = ("exceeds its control", "lies below its control", "at its control level",
                    "not testable")


@dataclass(frozen=True)
class ControlComparison:
    """An observation's excess over its control (see module doc)."""

    observed: float
    control_mean: float
    control_sd: float
    n_control: int
    excess: float
    ci: tuple[float, float]
    p_value: float
    verdict: str
    control: str = "control"
    what: str = "control draws"
    unit: str = ""
    alpha: float = 0.05

    @property
    def detected(self) -> bool:
        """True when the observation exceeds or lies below its control."""
        return self.verdict in CONTROL_VERDICTS[:2]

    def sentence(self, digits: int = 2, scale: float = 1.0) -> str:
        """E.g. ``exceeds its label-permuted control by 0.31 [0.12, 0.50] (control 0.30 ± 0.04
        over 4 permutations, p = 0.003)`` or ``is at its label-permuted control level (excess
        0.01 [−0.10, 0.12] ...)``, to follow the statistic's name: the excess, never the
        observed value alone."""
        n = lambda v: number(v * scale, digits)  # noqa: E731
        lo, hi = self.ci
        spread = (f"{self.control} {with_unit(n(self.control_mean), self.unit)} \u00b1 "
                  f"{n(self.control_sd)} over {self.n_control} {self.what}")
        if self.verdict == "not testable":
            return (f"is not testable against its {self.control} (excess "
                    f"{with_unit(n(self.excess), self.unit)}; {spread}: no spread)")
        interval = f"[{n(lo)}, {n(hi)}]"
        tail = f"({spread}, {p_text(self.p_value, self.alpha)})"
        if self.verdict == "at its control level":
            where = (f"; {spread}" if self.control_sd > 0 or self.excess == 0 else
                     f"; all {self.n_control} {self.what} gave "
                     f"{with_unit(n(self.control_mean), self.unit)}, rank test")
            shown = "" if math.isnan(lo) else f" {interval}"
            return (f"is at its {self.control} level (excess {with_unit(n(self.excess), self.unit)}"
                    f"{shown}{where}, {p_text(self.p_value, self.alpha)})")
        word = "exceeds" if self.verdict == "exceeds its control" else "lies below"
        size = abs(self.excess)
        bounds = interval if self.excess > 0 else f"[{n(-hi)}, {n(-lo)}]"
        return f"{word} its {self.control} by {with_unit(n(size), self.unit)} {bounds} {tail}"


def compare_to_control(observed: float, control, alpha: float = 0.05, label: str = "control",
                       unit: str = "", what: str = "control draws") -> ControlComparison:
    """The excess of ``observed`` over the ``control`` values, tested (see module doc).

    ``label`` names the control in the sentence (``"label-permuted control"``), ``what`` its
    draws (``"permutations"``). Raises ValueError for a non-finite ``observed`` or control value
    (naming the index) or ``alpha`` outside (0, 1).
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    o = float(observed)
    if not math.isfinite(o):
        raise ValueError(f"observed is {observed}: it must be finite")
    c = as_finite_vector(control, "control")
    r = int(c.size)
    if r == 0:
        raise ValueError("control is empty: compare_to_control needs at least one control value")
    mean = float(c.mean())
    excess = o - mean
    keep = dict(control=label, what=what, unit=unit, alpha=float(alpha))
    if r < 2:
        return ControlComparison(o, mean, math.nan, r, excess, (math.nan, math.nan), math.nan,
                                 "not testable", **keep)
    sd = float(c.std(ddof=1))
    if np.all(c == c[0]):
        sd, p = 0.0, (1.0 if excess == 0 else min(1.0, 2 / (r + 1)))
        ci = (0.0, 0.0) if excess == 0 else (math.nan, math.nan)
    else:
        se = sd * math.sqrt(1 + 1 / r)
        p = float(2 * sps.t.sf(abs(excess) / se, r - 1))
        half = float(sps.t.ppf(1 - alpha / 2, r - 1)) * se
        ci = (excess - half, excess + half)
    verdict = (CONTROL_VERDICTS[2] if p >= alpha else
               CONTROL_VERDICTS[0] if excess > 0 else CONTROL_VERDICTS[1])
    return ControlComparison(o, mean, sd, r, excess, ci, p, verdict, **keep)
