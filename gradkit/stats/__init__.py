"""gradkit.stats: every "is this difference real" decision of the workbook, in one place.

Each function returns a frozen result (or a word) with a verdict and a one-line
:func:`sentence` for the notebooks. Built on numpy and scipy only; imports no other gradkit module.

Paired conditions (same seed / fold / split), :mod:`.paired` and :mod:`.ttest`:

- ``compare_paired(a, b, higher_is_better=True, alpha=0.05, label_a="a", label_b="b",
  unit="", what="pairs") -> PairedComparison``
  the paired t-test of ``mean(a - b)``; fields ``diff``, ``ci``, ``p_value``, ``n``, ``sd``,
  ``min_detectable``, ``wins``/``losses``/``ties``, ``verdict`` (``"better"``, ``"worse"``,
  ``"no detectable difference"``, A relative to B), ``reason``; ``.as_row(scale)``, ``.sentence()``
- ``paired_t(diffs[..., n], alpha) -> PairedT``  the same test on many designs at once
- ``detectable_difference(n, sd, alpha=0.05, power=0.8) -> float``  the smallest true mean
  difference a design detects with ``power`` (noncentral t), :mod:`.power`

Accuracies against chance, proportions, :mod:`.chance` and :mod:`.proportions`:

- ``wilson_interval(successes, n, confidence=0.95) -> (low, high)``
- ``above_chance(successes, n, chance, alpha=0.05) -> ChanceResult``  one-sided exact binomial
  test; fields ``p_value``, ``accuracy``, ``ci`` (Wilson), ``chance``, ``verdict``
  (``"above chance"`` / ``"at chance"``)
- ``compare_proportions(k1, n1, k2, n2, alpha=0.05, higher_is_better=True, label_1="a",
  label_2="b") -> ProportionComparison``  independent samples: pooled two-proportion z-test
  and Newcombe's (Wilson-based) interval of ``k1/n1 - k2/n2``

Training curves, :mod:`.plateau`:

- ``plateau_test(values, last=10, higher_is_better=True, alpha=0.05, unit="", step="step")
  -> PlateauResult``  OLS slope of the last points; fields ``slope``, ``ci``, ``p_value``,
  ``n``, ``verdict`` (``"still improving"``, ``"plateaued"``, ``"getting worse"``)

Two estimates with intervals, :mod:`.intervals`:

- ``interval_change(before, after) -> str``  ``"higher"`` / ``"lower"`` only when the intervals
  do not overlap (a conservative test), else ``"no detectable change"``

One observation against a control, :mod:`.control`:

- ``compare_to_control(observed, control, alpha=0.05, label="control", unit="",
  what="control draws") -> ControlComparison``  the excess of one observation over ``R``
  control draws (the t-test of one against a small sample, Crawford & Howell 1998); fields
  ``excess``, ``ci``, ``p_value``, ``control_mean``, ``control_sd``, ``verdict``
  (``"exceeds its control"``, ``"lies below its control"``, ``"at its control level"``)

Rendering, :mod:`.text`:

- ``sentence(result, digits=None, scale=None) -> str``  e.g. ``GHM − raw = −4.1 pp [−9.8, 1.6]
  over 15 seed×fold pairs, p = 0.14: no detectable difference; this design detects ≥ 6.2 pp``
  (``scale=100`` with ``unit="pp"`` for accuracies)
"""

from .chance import ChanceResult, above_chance, wilson_interval
from .control import ControlComparison, compare_to_control
from .intervals import interval_change
from .paired import PairedComparison, compare_paired
from .plateau import PlateauResult, plateau_test
from .power import detectable_difference
from .proportions import ProportionComparison, compare_proportions
from .text import sentence
from .ttest import PairedT, paired_t

__all__ = [
    "ChanceResult",
    "ControlComparison",
    "PairedComparison",
    "PairedT",
    "PlateauResult",
    "ProportionComparison",
    "above_chance",
    "compare_paired",
    "compare_proportions",
    "compare_to_control",
    "detectable_difference",
    "interval_change",
    "paired_t",
    "plateau_test",
    "sentence",
    "wilson_interval",
]
