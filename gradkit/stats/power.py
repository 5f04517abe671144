"""The smallest true mean difference a paired design detects.

For ``n`` paired differences with standard deviation ``σ``, the two-sided one-sample t-test at
level ``α`` rejects when ``|T| > t*``, ``t* = t_{1-α/2, n-1}``. When the true mean difference is
``δ``, ``T`` follows the noncentral t distribution with ``n - 1`` degrees of freedom and
noncentrality ``λ = δ √n / σ``, so the power is

    ``power(λ) = P(T' > t*) + P(T' < -t*)``,  ``T' ~ nct(n - 1, λ)``.

- ``detectable_noncentrality(n, alpha, power)``  the ``λ`` at which ``power(λ)`` reaches the
  target (Brent's root finding on ``scipy.stats.nct``); it depends on ``n`` and ``α`` only
- ``detectable_difference(n, sd, alpha, power)``  ``δ_min = λ σ / √n``, the smallest ``|δ|``
  detected with the target power (80 % by default) by a design of ``n`` pairs and spread ``σ``

With the sample standard deviation plugged in for ``σ`` this is the usual "minimal detectable
effect" of a design (Cohen 1988, *Statistical Power Analysis for the Behavioral Sciences*,
ch. 2): an interval around zero that a null result cannot rule out.
"""

from __future__ import annotations

import math
from functools import lru_cache

from scipy import optimize
from scipy import stats as sps

__all__ = ["detectable_difference", "detectable_noncentrality", "t_power"]


def t_power(noncentrality: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided one-sample t-test on ``n`` values at noncentrality ``λ ≥ 0``."""
    df = n - 1
    t_crit = sps.t.ppf(1 - alpha / 2, df)
    upper = float(sps.nct.sf(t_crit, df, noncentrality))
    if not math.isfinite(upper):
        upper = 1.0 - float(sps.nct.cdf(t_crit, df, noncentrality))
    lower = float(sps.nct.cdf(-t_crit, df, noncentrality))
    if not math.isfinite(lower):
        # scipy's far lower tail can come back NaN (seen at λ ≥ 8); T' < -t* < 0 needs
        # Z + λ < 0, so this tail is at most Φ(-λ) < 1e-15 there.
        lower = 0.0
    return upper + lower


@lru_cache(maxsize=256)
def detectable_noncentrality(n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The noncentrality ``λ ≥ 0`` at which the two-sided t-test on ``n`` values has ``power``.

    NaN for ``n < 2`` (no degrees of freedom). Requires ``alpha < power < 1``.
    """
    if n < 2:
        return math.nan
    if not (0 < alpha < 1 and alpha < power < 1):
        raise ValueError(f"need 0 < alpha < power < 1, got alpha={alpha}, power={power}")
    hi = 1.0
    while t_power(hi, n, alpha) < power:
        hi *= 2.0
    return float(optimize.brentq(lambda lam: t_power(lam, n, alpha) - power, 0.0, hi,
                                 xtol=1e-12, rtol=1e-12))


def detectable_difference(n: int, sd: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """``δ_min = λ σ / √n``: the smallest ``|true mean difference|`` detected with ``power``.

    NaN when ``n < 2`` or ``sd`` is NaN; ``0`` when ``sd = 0`` (a spread-free design detects any
    non-zero difference).
    """
    if n < 2 or math.isnan(sd):
        return math.nan
    return detectable_noncentrality(int(n), float(alpha), float(power)) * float(sd) / math.sqrt(n)
