"""Did an estimate change between two checkpoints? Non-overlap of two confidence intervals.

For two estimates with intervals ``before = (e₁, (l₁, h₁))`` and ``after = (e₂, (l₂, h₂))``:

- ``"higher"``                when ``l₂ > h₁`` (the intervals do not overlap, after above)
- ``"lower"``                 when ``h₂ < l₁``
- ``"no detectable change"``  otherwise (intervals that touch count as overlapping)

Non-overlap is a conservative test of a difference: for two independent estimates with
symmetric normal 95 % intervals of equal width, non-overlap means ``|e₂ - e₁| > 3.92 se``
while the difference has standard error ``√2 se``, i.e. ``z > 2.77``, a two-sided level of
about 0.006 rather than 0.05 (Schenker & Gentleman 2001, "On judging the significance of
differences by examining the overlap between confidence intervals", *The American
Statistician* 55(3); Cumming & Finch 2005). Overlapping intervals therefore do not show that
nothing changed. It is the test to use when only the two intervals are at hand (e.g. bootstrap
intervals of a gradient noise scale at two checkpoints).
"""

from __future__ import annotations

import math

__all__ = ["CHANGES", "interval_change"]

CHANGES = ("higher", "lower", "no detectable change")


def _check(est, name: str) -> tuple[float, float, float]:
    try:
        value, (low, high) = est
        value, low, high = float(value), float(low), float(high)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be (estimate, (low, high)), got {est!r}") from err
    if any(math.isnan(v) for v in (value, low, high)):
        raise ValueError(f"{name} contains NaN: {est!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} needs low ≤ estimate ≤ high, got estimate {value} with "
                         f"interval ({low}, {high})")
    return value, low, high


def interval_change(before, after) -> str:
    """``"higher"`` / ``"lower"`` / ``"no detectable change"`` of ``after`` relative to
    ``before``, each an ``(estimate, (low, high))`` pair (see module doc)."""
    _, low1, high1 = _check(before, "before")
    _, low2, high2 = _check(after, "after")
    if low2 > high1:
        return "higher"
    if high2 < low1:
        return "lower"
    return "no detectable change"
