"""Notebook 04's summaries of multi-task runs: one row per run, spread per method, verdicts.

- :func:`run_table`       one row per run (method, seed, held-out metrics, cost, interference)
- :func:`summarise`       mean and std over seeds per method
- :func:`paired_vs`       every method against a baseline, per metric, paired by seed
  (:func:`gradkit.stats.compare_paired`: same seed = same initial network and batch order)
- :func:`epoch_losses`    per-epoch mean training loss of each task
- :func:`loss_trends`     :func:`gradkit.stats.plateau_test` of those per-epoch losses
- :func:`weight_collapsed`, :func:`cosine_against_zero`  a task switched off; alignment
- :func:`weights_stable_epoch`  the epoch from which a run's task weights stay within a band
  around their final values (see there)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from gradkit.stats import PairedComparison, compare_paired, plateau_test
from gradkit.training.multitask import MultitaskRun

__all__ = ["cosine_against_zero", "epoch_losses", "loss_trends", "paired_table", "paired_vs",
           "run_table", "summarise", "weight_collapsed", "weights_stable_epoch"]

LOSSES = {"detection": "loss_det", "classification": "loss_cls"}


def run_table(runs: Sequence[MultitaskRun]) -> pd.DataFrame:
    """One row per run: method, seed, held-out metrics, parameters, time per epoch, interference."""
    rows = []
    for run in runs:
        h = run.history
        shared = "cosine" in h
        rows.append({
            "method": run.config.method, "seed": run.config.seed, **run.metrics,
            "params": run.n_params, "epoch_s": float(np.mean(run.epoch_times)),
            "batch_ms": 1e3 * run.seconds_per_batch,
            "peak_step_kib": run.peak_step_bytes / 1024,
            "mean_cosine": float(h["cosine"].mean()) if shared else np.nan,
            "conflict_share": float((h["cosine"] < 0).mean()) if shared else np.nan,
            "magsim": float(h["magsim"].mean()) if shared else np.nan,
            "backbone_passes": run.passes.get("backbone", np.nan),
            "last_shared_passes": run.passes.get("last_shared", np.nan),
            "adapted_scalars": run.adapted_scalars,
            "final_w_det": float(h["w_det"].iloc[-1]), "final_w_cls": float(h["w_cls"].iloc[-1]),
            "min_w": float(h[["w_det", "w_cls"]].min().min()),
            "weights_stable_epoch": weights_stable_epoch(h)[0],
            "weights_settled": weights_stable_epoch(h)[1],
        })
    return pd.DataFrame(rows)


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of every numeric column of :func:`run_table`, per method."""
    numeric = table.drop(columns=["seed"]).groupby("method", sort=False)
    out = numeric.agg(["mean", "std"])
    out.insert(0, ("seeds", "n"), table.groupby("method", sort=False)["seed"].count())
    return out


def paired_vs(table: pd.DataFrame, method: str, baseline: str, metric: str,
              labels: Mapping[str, str] | None = None, higher_is_better: bool = True,
              unit: str = "") -> PairedComparison:
    """``method`` against ``baseline`` on ``metric``, paired by seed.

    Raises ValueError when the two methods were not run on the same seeds.
    """
    labels = dict(labels or {})
    a = table[table.method == method].set_index("seed")[metric].sort_index()
    b = table[table.method == baseline].set_index("seed")[metric].sort_index()
    if list(a.index) != list(b.index):
        raise ValueError(f"{method} and {baseline} must share their seeds to pair up: "
                         f"{list(a.index)} vs {list(b.index)}")
    return compare_paired(a.to_numpy(float), b.to_numpy(float),
                          higher_is_better=higher_is_better, unit=unit,
                          label_a=labels.get(method, method),
                          label_b=labels.get(baseline, baseline), what="paired seeds")


def paired_table(table: pd.DataFrame, baseline: str, metrics: Mapping[str, str],
                 labels: Mapping[str, str] | None = None) -> pd.DataFrame:
    """:func:`paired_vs` of every other method against ``baseline`` on every metric
    (``{column: name}``), one row each (:meth:`PairedComparison.as_row`)."""
    rows = []
    for method in dict.fromkeys(table.method):
        if method == baseline:
            continue
        for column, name in metrics.items():
            row = paired_vs(table, method, baseline, column, labels).as_row()
            rows.append({"method": method, "metric": name, **row})
    return pd.DataFrame(rows)


def epoch_losses(history: pd.DataFrame) -> pd.DataFrame:
    """Per epoch (index), the mean training-batch loss of each task (columns: task names)."""
    return history.groupby("epoch")[list(LOSSES.values())].mean().rename(
        columns={v: k for k, v in LOSSES.items()})


def loss_trends(history: pd.DataFrame, window: int = 5) -> dict[str, str]:
    """Per task, the :func:`~gradkit.stats.plateau_test` verdict of its per-epoch mean loss over
    the last ``window`` epochs (``"still improving"``: the cap stopped a falling curve)."""
    losses = epoch_losses(history)
    if len(losses) < 3:
        return dict.fromkeys(LOSSES, "too short")
    return {task: plateau_test(losses[task].to_numpy(), min(window, len(losses)),
                               higher_is_better=False, step="epoch").verdict
            for task in LOSSES}


def weights_stable_epoch(history: pd.DataFrame, tol: float = 0.05) -> tuple[int, bool]:
    """``(e, stable)``: ``e`` is the first epoch from which every later epoch's mean task weight
    lies within ``tol`` (relative) of the last epoch's mean, for both tasks; ``stable`` is
    ``e < last epoch`` (else the weights were still moving at the cap). Fixed weights give
    ``(first epoch, True)``; one epoch only gives ``(0, False)``."""
    if not 0 < tol < 1:
        raise ValueError(f"tol must lie in (0, 1), got {tol}")
    means = history.groupby("epoch")[["w_det", "w_cls"]].mean()
    final = means.iloc[-1]
    inside = ((means - final).abs() <= tol * final.abs().clip(lower=1e-12)).all(axis=1)
    outside = np.flatnonzero(~inside.to_numpy())
    first = 0 if outside.size == 0 else int(outside[-1]) + 1
    epochs = means.index.to_numpy()
    return int(epochs[first]), bool(first < len(epochs) - 1)


def weight_collapsed(history: pd.DataFrame, floor: float = 0.05) -> bool:
    """True when a task weight ends (last step) at or below ``floor``: the study's failure,
    a task switched off. GradNorm's weights sum to the number of tasks, so ``floor = 0.05``
    is 2.5 % of the equal share."""
    if not 0 < floor:
        raise ValueError(f"floor must be positive, got {floor}")
    return bool(history[["w_det", "w_cls"]].iloc[-1].min() <= floor)


def cosine_against_zero(table: pd.DataFrame, method: str) -> PairedComparison:
    """Is ``method``'s mean task-gradient cosine (one value per seed) away from 0? The paired
    test of the per-seed means against zeros (a one-sample t-test): ``"better"`` = aligned on
    average, ``"worse"`` = conflicting, else no detectable average alignment."""
    values = table[table.method == method]["mean_cosine"].to_numpy(float)
    return compare_paired(values, np.zeros_like(values), label_a="mean cosine", label_b="0",
                          what="seeds")
