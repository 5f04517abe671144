"""Has a training curve stopped improving? The OLS slope over its last points.

For the last ``n`` values ``y_0 … y_{n-1}`` of a curve (one per step: epoch, evaluation) and
``x_j = j``:

- ``slope``      the ordinary least-squares slope of ``y`` on ``x``, per step
- ``ci``         ``slope ± t_{1-α/2, n-2} · se(slope)``, the t-interval at ``1 - α``
- ``p_value``    the two-sided t-test of ``slope = 0`` (``scipy.stats.linregress``)
- ``verdict``    ``"still improving"`` when ``p < α`` and the slope points in the improving
  direction (up when ``higher_is_better``), ``"getting worse"`` when ``p < α`` the other way,
  else ``"plateaued"`` (no detectable trend; a constant curve has ``p = 1``)

The test assumes independent, equal-variance noise around a straight line over the window
(Wasserman 2004, *All of Statistics*, §13.1). Epoch-to-epoch noise of a training curve is
positively autocorrelated, which makes the test too eager to see a trend; a window of 10 to 20
points where the curve has bent over is its intended use.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from .paired import as_finite_vector
from .text import number, p_text, with_unit

__all__ = ["PlateauResult", "plateau_test"]


@dataclass(frozen=True)
class PlateauResult:
    """The trend test over the last ``n`` points of a curve (see module doc)."""

    slope: float
    ci: tuple[float, float]
    p_value: float
    n: int
    verdict: str
    higher_is_better: bool = True
    alpha: float = 0.05
    unit: str = ""
    step: str = "step"

    def sentence(self, digits: int = 2, scale: float = 1.0) -> str:
        """E.g. ``over the last 10 steps the slope is 0.31 pp/step [0.12, 0.50], p = 0.004:
        still improving``."""
        lo, hi = self.ci
        per = f"{self.unit}/{self.step}" if self.unit else f"per {self.step}"
        return (f"over the last {self.n} {self.step}s the slope is "
                f"{with_unit(number(self.slope * scale, digits), per)} "
                f"[{number(lo * scale, digits)}, {number(hi * scale, digits)}], "
                f"{p_text(self.p_value, self.alpha)}: {self.verdict}")


def plateau_test(values, last: int = 10, higher_is_better: bool = True, alpha: float = 0.05,
                 unit: str = "", step: str = "step") -> PlateauResult:
    """Test the trend of the last ``last`` points of ``values`` (all of them if fewer).

    Raises ValueError when fewer than 3 points are used (no degrees of freedom for the slope's
    standard error), for NaN / inf (naming the index), or ``alpha`` outside (0, 1).
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    if int(last) != last or last < 3:
        raise ValueError(f"last must be a whole number ≥ 3, got {last!r}")
    y = as_finite_vector(values, "values")[-int(last):]
    n = int(y.size)
    if n < 3:
        raise ValueError(f"plateau_test needs at least 3 points, got {n}")
    x = np.arange(n, dtype=float)
    if np.all(y == y[0]):
        slope, se, p = 0.0, 0.0, 1.0
    else:
        fit = sps.linregress(x, y)
        slope, se, p = float(fit.slope), float(fit.stderr), float(fit.pvalue)
    half = float(sps.t.ppf(1 - alpha / 2, n - 2)) * se
    if p < alpha:
        improving = (slope > 0) == bool(higher_is_better)
        verdict = "still improving" if improving else "getting worse"
    else:
        verdict = "plateaued"
    return PlateauResult(slope=slope, ci=(slope - half, slope + half), p_value=p, n=n,
                         verdict=verdict, higher_is_better=bool(higher_is_better),
                         alpha=float(alpha), unit=unit, step=step)
