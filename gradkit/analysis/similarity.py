"""Notebook 03's reading of similarity statistics over epochs: phases, trends and the words
that name a silhouette or a mean cosine.

- :func:`phases`      the checkpoints cut into up to three consecutive phases (early, middle,
  late), so the phases follow the run's length instead of fixed epochs;
- :func:`phase_table` the mean of every statistic per phase;
- :func:`trend_word`  ``"rose"`` / ``"fell"`` / ``"shows no detectable trend"`` over a series of
  checkpoints, from :func:`gradkit.stats.plateau_test` (OLS slope over all the points, two-sided
  at ``alpha``); ``"cannot be tested"`` with fewer than 3 points;
- :func:`structure`   the silhouette's usual reading (Kaufman & Rousseeuw 1990): above 0.70
  strong, 0.51–0.70 reasonable, 0.26–0.50 weak, otherwise no substantial structure;
- :func:`agreement`   a mean cosine above 0.5 "mostly agree", above 0.2 "partly agree", above
  −0.2 "are nearly unrelated", else "mostly disagree".
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from gradkit.stats import plateau_test

__all__ = ["agreement", "phase_table", "phases", "structure", "trend_word"]

PHASE_NAMES = ("early", "middle", "late")


def phases(epochs) -> dict[str, tuple[int, int]]:
    """Up to three phases of consecutive checkpoints, as equal in size as possible:
    ``{name: (first epoch, last epoch)}`` (one phase per checkpoint when there are fewer)."""
    e = sorted(int(v) for v in epochs)
    if not e:
        raise ValueError("phases needs at least one checkpoint epoch")
    parts = [p for p in np.array_split(np.array(e), min(3, len(e))) if len(p)]
    names = PHASE_NAMES if len(parts) == 3 else PHASE_NAMES[::2][:len(parts)]
    return {name: (int(p[0]), int(p[-1])) for name, p in zip(names, parts, strict=True)}


def trend_word(values, alpha: float = 0.05) -> str:
    """The direction of a series over checkpoints by the OLS slope test (module docstring)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size < 3:
        return "cannot be tested"
    verdict = plateau_test(v, last=v.size, higher_is_better=True, alpha=alpha).verdict
    return {"still improving": "rose", "getting worse": "fell"}.get(verdict,
                                                                     "shows no detectable trend")


def structure(s: float) -> str:
    """The silhouette's usual reading (module docstring)."""
    if math.isnan(s):
        return "undefined"
    return ("strong" if s > 0.70 else "reasonable" if s > 0.50 else "weak" if s > 0.25
            else "no substantial")


def agreement(c: float) -> str:
    """A mean cosine in words (module docstring)."""
    return ("mostly agree" if c > 0.5 else "partly agree" if c > 0.2 else
            "are nearly unrelated" if c > -0.2 else "mostly disagree")


def phase_table(stats: pd.DataFrame, phases: dict[str, tuple[int, int]],
                epoch_col: str = "epoch") -> pd.DataFrame:
    """Per phase (name -> inclusive epoch range): the mean of every numeric column over the
    phase's epochs, and how many epochs it holds. Raises if a phase holds no epoch."""
    rows = {}
    for name, (lo, hi) in phases.items():
        part = stats[(stats[epoch_col] >= lo) & (stats[epoch_col] <= hi)]
        if part.empty:
            raise ValueError(f"phase {name!r} ({lo}-{hi}) holds none of the epochs "
                             f"{sorted(stats[epoch_col].tolist())}")
        means = part.drop(columns=[epoch_col]).mean(numeric_only=True)
        rows[name] = {"epochs": f"{lo}-{hi}", "n_epochs": len(part), **means.to_dict()}
    return pd.DataFrame.from_dict(rows, orient="index")
