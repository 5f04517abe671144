"""The decision rules of notebook 02, each through :mod:`gradkit.stats`.

- :func:`run_status`     did the run learn at all (``above_chance`` of its final validation
  accuracy), and is its validation accuracy still rising (``plateau_test``)?
- :func:`batch_advice`   batch-size advice from ``B_simple``'s interval, given only for a run that
  learned and has plateaued; a failed run is excluded, a rising one told to keep training.
- :func:`interval_steps` checkpoint-to-checkpoint changes of an estimate, called only where the
  intervals do not overlap (``interval_change``).
- :func:`reproduces`     whether values are of the same magnitude as reported ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gradkit.stats import above_chance, interval_change, plateau_test

__all__ = ["ADVICE", "RunStatus", "advice_sentence", "batch_advice", "interval_steps", "reproduces",
           "run_status", "status_of_run", "steadiness"]

ADVICE = ("failed run", "still improving", "getting worse", "mean gradient ~ 0", "larger batch",
          "smaller batch", "keep batch", "too short to test")


@dataclass(frozen=True)
class RunStatus:
    """``failed``: final validation accuracy not above chance (one-sided binomial, ``alpha``);
    ``trend``: :func:`gradkit.stats.plateau_test` verdict of the validation accuracy over the
    last ``last`` epochs (``"too short to test"`` with fewer than 3 epochs)."""

    failed: bool
    trend: str
    accuracy: float
    chance: float
    sentence: str


def run_status(val_acc, n_val: int, n_classes: int, last: int = 10,
               alpha: float = 0.05) -> RunStatus:
    """The failed-run check and the plateau test of a run's validation accuracy per epoch."""
    acc = np.asarray(val_acc, dtype=float)
    if acc.size == 0 or n_val < 1 or n_classes < 2:
        raise ValueError(f"need validation accuracies, n_val >= 1 and n_classes >= 2, got "
                         f"{acc.size} values, n_val={n_val}, n_classes={n_classes}")
    chance = above_chance(int(round(acc[-1] * n_val)), n_val, 1.0 / n_classes, alpha)
    failed = chance.verdict == "at chance"
    if acc.size >= 3:
        plateau = plateau_test(acc, last=min(last, acc.size), alpha=alpha, unit="pp",
                               step="epoch")
        trend, text = plateau.verdict, plateau.sentence(scale=100)
    else:
        trend, text = "too short to test", f"only {acc.size} epoch(s): no trend test"
    sentence = (f"final validation accuracy {acc[-1]:.0%} ({chance.verdict}, chance "
                f"{1 / n_classes:.0%}); {text}")
    return RunStatus(failed, trend, float(acc[-1]), 1.0 / n_classes, sentence)


def batch_advice(status: RunStatus, b_simple: float, lo: float, hi: float,
                 batch_size: int) -> str:
    """One of :data:`ADVICE`. The order matters: a failed run gets no advice; a run whose
    validation accuracy is still rising or falling is not told it has converged; only then
    does the interval of ``B_simple`` decide (``hi = inf``: mean gradient within the noise)."""
    if status.failed:
        return "failed run"
    if status.trend != "plateaued":
        return status.trend
    if math.isnan(lo) or math.isnan(hi):  # no interval (a single step): nothing to read
        return "too short to test"
    if math.isinf(hi):
        return "mean gradient ~ 0"
    if lo > batch_size:
        return "larger batch"
    if hi < batch_size:
        return "smaller batch"
    return "keep batch"


def _pair(est: float, lo: float, hi: float) -> tuple[float, tuple[float, float]]:
    """An interval that holds its estimate (a bootstrap percentile interval may not)."""
    return float(est), (min(float(lo), float(est)), max(float(hi), float(est)))


def interval_steps(epochs, est, lo, hi) -> list[tuple[int, int, str]]:
    """``(epoch_before, epoch_after, change)`` for every pair of neighbouring checkpoints,
    ``change`` from :func:`gradkit.stats.interval_change` (non-overlapping intervals only)."""
    e, v, a, b = (np.asarray(t, dtype=float) for t in (epochs, est, lo, hi))
    return [(int(e[k]), int(e[k + 1]),
             interval_change(_pair(v[k], a[k], b[k]), _pair(v[k + 1], a[k + 1], b[k + 1])))
            for k in range(len(e) - 1)]


def reproduces(ours, reported, factor: float = 3.0) -> tuple[bool, float]:
    """``(same magnitude, median ratio)``: the median of ``ours / reported`` lies within
    ``[1/factor, factor]``. Pairs are matched by position; NaN pairs are dropped."""
    o, r = np.asarray(ours, dtype=float), np.asarray(reported, dtype=float)
    if o.shape != r.shape:
        raise ValueError(f"ours and reported must have the same shape, got {o.shape}, {r.shape}")
    ok = np.isfinite(o) & np.isfinite(r) & (r > 0)
    if not ok.any():
        return False, math.nan
    ratio = float(np.median(o[ok] / r[ok]))
    return bool(1 / factor <= ratio <= factor), ratio


def status_of_run(run, last: int = 10) -> RunStatus:
    """:func:`run_status` of a :class:`gradkit.training.Run` from its metrics and split."""
    split = run.split
    return run_status(run.metrics.val_acc.to_numpy(), len(split.y_val), len(split.classes), last)


_SAYS = {
    "failed run": "the run did not learn (validation accuracy not above chance): no advice",
    "still improving": "validation accuracy is still rising: keep training before tuning B",
    "getting worse": "validation accuracy is falling: look at the learning rate first",
    "too short to test": "too few epochs to test for a plateau: no advice",
    "mean gradient ~ 0": ("the mean gradient cannot be told from zero (B_simple's upper bound "
                          "is infinite) while accuracy has plateaued: decay the learning rate "
                          "or stop"),
    "larger batch": "B_simple's whole interval lies above B: a larger batch",
    "smaller batch": "B_simple's whole interval lies below B: a smaller batch",
    "keep batch": "B_simple's interval contains B: keep the batch size",
}


def advice_sentence(word: str, b_simple: float, lo: float, hi: float, batch_size: int) -> str:
    """The sentence of an advice word of :func:`batch_advice`, with its numbers."""
    if word not in _SAYS:
        raise ValueError(f"unknown advice {word!r}; expected one of {ADVICE}")
    text = _SAYS[word]
    return (f"{text[0].upper()}{text[1:]} (B_simple {b_simple:.3g} [{lo:.3g}, {hi:.3g}], "
            f"B = {batch_size}).")


def steadiness(trend, what: str = "GNS") -> str:
    """First vs last checkpoint and neighbouring checkpoints, through
    :func:`gradkit.stats.interval_change` on the 95 % intervals of ``trend`` (a noise table)."""
    if len(trend) < 2:
        return f"Only one checkpoint: no change of the {what} can be tested."
    e, v, lo, hi = (trend[c].to_numpy() for c in ("epoch", "gns", "gns_lo", "gns_hi"))
    ends = interval_steps(e[[0, -1]], v[[0, -1]], lo[[0, -1]], hi[[0, -1]])[0][2]
    moves = [(a, b, c) for a, b, c in interval_steps(e, v, lo, hi) if c != "no detectable change"]
    text = (f"{what} at epoch {int(e[-1])} against epoch {int(e[0])}: {ends} "
            f"({v[0]:.3g} → {v[-1]:.3g}, judged by non-overlap of the 95 % intervals).")
    if not moves:
        return text + (f" No change between neighbouring checkpoints is detectable: the "
                       f"intervals of all {len(e) - 1} pairs overlap.")
    return text + " Detectable changes between neighbouring checkpoints: " + ", ".join(
        f"{c} from epoch {a} to {b}" for a, b, c in moves) + "."
