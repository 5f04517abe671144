"""Notebook 03's reading of similarity statistics over epochs: phases and their direction."""

from __future__ import annotations

import math

import pandas as pd

__all__ = ["change_word", "phase_table"]


def change_word(before: float, after: float, tol: float) -> str:
    """``"rose"`` if ``after - before > tol``, ``"fell"`` if ``< -tol``, else ``"stayed flat"``
    (``"is undefined"`` when either is NaN)."""
    if math.isnan(before) or math.isnan(after):
        return "is undefined"
    delta = after - before
    return "rose" if delta > tol else "fell" if delta < -tol else "stayed flat"


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


