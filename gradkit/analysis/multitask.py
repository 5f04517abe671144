"""Notebook 04's summaries of multi-task runs: one row per run, mean and spread per method."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from gradkit.training.multitask import MultitaskRun

__all__ = ["compare", "run_table", "summarise"]


def run_table(runs: Sequence[MultitaskRun]) -> pd.DataFrame:
    """One row per run: method, seed, held-out metrics, parameters, time per epoch, interference."""
    rows = []
    for run in runs:
        h = run.history
        shared = "cosine" in h
        rows.append({
            "method": run.config.method, "seed": run.config.seed, **run.metrics,
            "params": run.n_params, "epoch_s": float(np.mean(run.epoch_times)),
            "mean_cosine": float(h["cosine"].mean()) if shared else np.nan,
            "conflict_share": float((h["cosine"] < 0).mean()) if shared else np.nan,
            "magsim": float(h["magsim"].mean()) if shared else np.nan,
            "backbone_passes": run.passes.get("backbone", np.nan),
            "last_shared_passes": run.passes.get("last_shared", np.nan),
            "adapted_scalars": run.adapted_scalars,
            "final_w_det": float(h["w_det"].iloc[-1]), "final_w_cls": float(h["w_cls"].iloc[-1]),
            "min_w": float(h[["w_det", "w_cls"]].min().min()),
        })
    return pd.DataFrame(rows)


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of every numeric column of :func:`run_table`, per method."""
    numeric = table.drop(columns=["seed"]).groupby("method", sort=False)
    out = numeric.agg(["mean", "std"])
    out.insert(0, ("seeds", "n"), table.groupby("method", sort=False)["seed"].count())
    return out


def compare(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, str]:
    """``(mean(a) - mean(b), noise, verdict)``: ``noise = max(std a, std b)`` over seeds; the
    verdict is ``"higher"``/``"lower"`` only when the difference exceeds that noise, else
    ``"within noise"``."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = float(a.mean() - b.mean())
    noise = float(max(a.std(ddof=1) if len(a) > 1 else 0.0, b.std(ddof=1) if len(b) > 1 else 0.0))
    if abs(diff) <= noise:
        return diff, noise, "within noise"
    return diff, noise, "higher" if diff > 0 else "lower"

