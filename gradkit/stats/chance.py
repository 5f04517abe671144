"""Is a classifier's accuracy above chance? The Wilson interval and the exact binomial test.

For ``k`` correct answers out of ``n`` trials (``p̂ = k / n``) and ``z = Φ⁻¹(1 - (1 - c)/2)``:

- ``wilson_interval(k, n, c)``   the Wilson score interval at confidence ``c`` (Wilson 1927;
  Newcombe 1998, method 3):
  ``(2 n p̂ + z² ± z sqrt(4 n p̂ (1 - p̂) + z²)) / (2 (n + z²))``, with the lower end 0 at
  ``k = 0`` and the upper end 1 at ``k = n`` (as ``scipy.stats.binomtest(...).proportion_ci(
  method="wilson")``)
- ``above_chance(k, n, chance)``  the one-sided exact binomial test of ``H0: accuracy = chance``
  against ``accuracy > chance``: ``p = P(Bin(n, chance) ≥ k)`` (``scipy.stats.binomtest``,
  ``alternative="greater"``); verdict ``"above chance"`` when ``p < α``, else ``"at chance"``.

A run whose accuracy is not above chance has learned nothing measurable (a failed run); the
reported interval is the two-sided Wilson interval at ``1 - α``, for reading, while the verdict
comes from the exact test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import special
from scipy import stats as sps

from .text import number, p_text, with_unit

__all__ = ["ChanceResult", "above_chance", "check_count", "wilson_interval"]


def check_count(successes, n, name: str = "successes") -> tuple[int, int]:
    """``(successes, n)`` as ints with ``0 ≤ successes ≤ n`` and ``n ≥ 1``, else ValueError."""
    try:
        k_int, n_int = int(successes), int(n)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} and n must be integers, got {successes!r}, {n!r}") from err
    if k_int != successes or n_int != n:
        raise ValueError(f"{name} and n must be whole numbers, got {successes!r}, {n!r}")
    if n_int < 1:
        raise ValueError(f"n must be at least 1, got {n_int}")
    if not 0 <= k_int <= n_int:
        raise ValueError(f"{name} must lie in [0, n] = [0, {n_int}], got {k_int}")
    return k_int, n_int


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval ``(low, high)`` for a proportion ``successes / n``."""
    k, n = check_count(successes, n)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    p = k / n
    z = special.ndtri(0.5 + 0.5 * confidence)
    denom = 2 * (n + z**2)
    center = (2 * n * p + z**2) / denom
    delta = z / denom * math.sqrt(4 * n * p * (1 - p) + z**2)
    low = 0.0 if k == 0 else center - delta
    high = 1.0 if k == n else center + delta
    return float(low), float(high)


@dataclass(frozen=True)
class ChanceResult:
    """The exact one-sided test of an accuracy against chance (see module doc)."""

    p_value: float
    accuracy: float
    ci: tuple[float, float]
    chance: float
    verdict: str
    successes: int
    n: int
    alpha: float = 0.05

    def sentence(self, digits: int = 1, scale: float = 100.0, unit: str = "%") -> str:
        """E.g. ``accuracy 56.0 % [49.1, 62.7] over 200 trials vs chance 50.0 %, p = 0.047:
        above chance`` (in percent by default)."""
        lo, hi = self.ci
        acc = with_unit(number(self.accuracy * scale, digits), unit)
        chance = with_unit(number(self.chance * scale, digits), unit)
        return (f"accuracy {acc} [{number(lo * scale, digits)}, {number(hi * scale, digits)}] "
                f"over {self.n} trials vs chance {chance}, {p_text(self.p_value, self.alpha)}: "
                f"{self.verdict}")


def above_chance(successes: int, n: int, chance: float, alpha: float = 0.05) -> ChanceResult:
    """Exact one-sided binomial test of ``successes / n`` against the chance rate ``chance``."""
    k, n = check_count(successes, n)
    if not 0 < chance < 1:
        raise ValueError(f"chance must lie in (0, 1), got {chance}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    p = float(sps.binomtest(k, n, chance, alternative="greater").pvalue)
    return ChanceResult(p_value=p, accuracy=k / n, ci=wilson_interval(k, n, 1 - alpha),
                        chance=float(chance), verdict="above chance" if p < alpha else "at chance",
                        successes=k, n=n, alpha=float(alpha))
