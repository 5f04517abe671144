"""Two proportions from independent samples (e.g. the accuracies of two runs on two test sets).

For ``k₁`` successes out of ``n₁`` and ``k₂`` out of ``n₂`` (``p̂ᵢ = kᵢ / nᵢ``):

- ``diff = p̂₁ - p̂₂``
- ``p_value``   the two-sided pooled two-proportion z-test,
  ``z = diff / sqrt(p̄ (1 - p̄) (1/n₁ + 1/n₂))`` with ``p̄ = (k₁ + k₂) / (n₁ + n₂)``,
  ``p = 2 Φ(-|z|)`` (Agresti 2013, *Categorical Data Analysis*, §3.1); ``p = 1`` when
  ``p̄ ∈ {0, 1}`` (both samples all failures or all successes). It equals Pearson's χ² test of
  the 2 × 2 table without continuity correction; being discrete, its exact size oscillates
  around ``α`` (slightly above it for some ``n`` and true proportions)
- ``ci``        Newcombe's hybrid score interval for ``diff`` at ``1 - α`` (Newcombe 1998,
  "Interval estimation for the difference between independent proportions", *Statistics in
  Medicine* 17, method 10), built from the Wilson intervals ``(lᵢ, uᵢ)`` of each proportion:
  ``(diff - sqrt((p̂₁ - l₁)² + (u₂ - p̂₂)²),  diff + sqrt((u₁ - p̂₁)² + (p̂₂ - l₂)²))``
- ``verdict``   ``"better"`` / ``"worse"`` (sample 1 relative to sample 2, respecting
  ``higher_is_better``) only when ``p < α`` *and* the interval excludes 0, else
  ``"no detectable difference"``. The two procedures agree except at the margin; where they
  do not, no difference is called (``reason`` says so).

Both samples must be independent. When the two proportions come from the same items (two
models on one test set) or the same seeds, the measurements are paired: use
:func:`gradkit.stats.compare_paired` on the per-item or per-seed scores instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import special

from .chance import check_count, wilson_interval
from .text import number, p_text, with_unit

__all__ = ["ProportionComparison", "compare_proportions"]


@dataclass(frozen=True)
class ProportionComparison:
    """The comparison of two independent proportions (see module doc)."""

    diff: float
    ci: tuple[float, float]
    p_value: float
    verdict: str
    p1: float
    p2: float
    n1: int
    n2: int
    label_1: str = "a"
    label_2: str = "b"
    higher_is_better: bool = True
    alpha: float = 0.05
    reason: str = ""

    def sentence(self, digits: int = 1, scale: float = 100.0, unit: str = "pp") -> str:
        """E.g. ``a − b = 12.0 pp [2.3, 21.2] (62.0 % of 100 vs 50.0 % of 100), p = 0.088: ...``
        (differences in percentage points by default)."""
        lo, hi = self.ci
        verdict = self.verdict if self.verdict.startswith("no ") else (
            f"{self.label_1} {self.verdict}")
        pct = "%" if scale == 100.0 else ""
        return (f"{self.label_1} \u2212 {self.label_2} = "
                f"{with_unit(number(self.diff * scale, digits), unit)} "
                f"[{number(lo * scale, digits)}, {number(hi * scale, digits)}] "
                f"({with_unit(number(self.p1 * scale, digits), pct)} of {self.n1} vs "
                f"{with_unit(number(self.p2 * scale, digits), pct)} of {self.n2}), "
                f"{p_text(self.p_value, self.alpha)}: {verdict}")


def compare_proportions(k1: int, n1: int, k2: int, n2: int, alpha: float = 0.05,
                        higher_is_better: bool = True, label_1: str = "a",
                        label_2: str = "b") -> ProportionComparison:
    """Compare ``k1/n1`` with ``k2/n2`` (independent samples; see module doc)."""
    k1, n1 = check_count(k1, n1, "k1")
    k2, n2 = check_count(k2, n2, "k2")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    p1, p2 = k1 / n1, k2 / n2
    diff = p1 - p2
    pooled = (k1 + k2) / (n1 + n2)
    if pooled in (0.0, 1.0):
        p_value = 1.0
    else:
        z = diff / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        p_value = float(2 * special.ndtr(-abs(z)))

    l1, u1 = wilson_interval(k1, n1, 1 - alpha)
    l2, u2 = wilson_interval(k2, n2, 1 - alpha)
    lo = diff - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    hi = diff + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)

    excludes = lo > 0 or hi < 0
    significant = p_value < alpha
    reason = ""
    if significant != excludes:
        reason = (f"z-test p {'<' if significant else '≥'} {alpha} but the interval "
                  f"{'includes' if significant else 'excludes'} 0: not called")
    if significant and excludes:
        better = (diff > 0) == bool(higher_is_better)
        verdict = "better" if better else "worse"
    else:
        verdict = "no detectable difference"
    return ProportionComparison(diff=diff, ci=(lo, hi), p_value=p_value, verdict=verdict,
                                p1=p1, p2=p2, n1=n1, n2=n2, label_1=label_1, label_2=label_2,
                                higher_is_better=bool(higher_is_better), alpha=float(alpha),
                                reason=reason)
