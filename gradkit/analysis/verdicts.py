"""Verdicts of notebook 01 over seeds × folds: one row per run, paired comparisons, sentences.

A *run* is one (objective, seed, fold) of :func:`gradkit.training.ensemble.train_ensemble`;
its *end* is the epoch it stopped at (plateau or cap). Per run, :func:`run_summary` gives

- ``final_val_acc`` / ``final_val_raw_loss``: at the end epoch (the primary metrics), and
  ``final_val_ghm_loss`` (the GHM objective on the validation clips, for both objectives), both
  at a common ranking weight when asked (:func:`at_rank_weight`), and ``final_val_ce``;
  ``lr`` / ``rank_weight``: the run's settings, where the metrics carry them;
- ``tail_val_acc`` / ``tail_val_raw_loss``: the mean over the last ``tail`` epochs up to the end;
- ``best_val_acc`` and ``best_epoch``: the maximum over epochs, *selected on the validation
  clips themselves* and therefore optimistic; shown, never compared;
- ``acc_trend`` / ``loss_trend`` / ``train_trend``: :func:`gradkit.stats.plateau_test` verdicts of
  the validation accuracy, the raw validation loss and the run's own training loss over the last
  ``window`` epochs (``"still improving"`` where the run stopped at the cap while improving);
- ``chance``: :func:`gradkit.stats.above_chance` of the end epoch's correct clips against
  ``1 / classes``.

:func:`compare_objectives` pairs two objectives by (seed, fold) and calls
:func:`gradkit.stats.compare_paired`; :func:`verdict_sentence` renders it, or says "too few
pairs" below ``min_pairs``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from gradkit.stats import PairedComparison, above_chance, compare_paired, plateau_test
from gradkit.stats.text import number, p_text, with_unit
from gradkit.training.objective import objective_losses

__all__ = ["CONVERGED_SHARE", "MIN_PAIRS", "at_rank_weight", "compare_objectives",
           "headline_verdict", "paired_values", "run_summary", "study_paragraph",
           "verdict_sentence"]

#: Below this many pairs a verdict is not stated (a t-test on 2 pairs has 1 degree of freedom).
MIN_PAIRS = 3
#: A comparison is "at convergence" when fewer than this share of its runs were still improving.
CONVERGED_SHARE = 0.10


def _trend(values, window: int, higher_is_better: bool) -> str:
    if len(values) < 3:
        return "too short"
    return plateau_test(values, min(window, len(values)), higher_is_better).verdict


def at_rank_weight(metrics: pd.DataFrame, rank_weight: float) -> pd.DataFrame:
    """``metrics`` with ``val_raw_loss`` and ``val_ghm_loss`` recomputed from the logged terms
    (``val_ce``, ``val_rank``, ``val_ghmc``, ``val_ghm_rank``) at one common ``rank_weight``
    (:func:`gradkit.training.objective.objective_losses`): runs trained at different weights
    are then compared on the same quantity. The run's own losses stay as ``val_raw_loss_own`` /
    ``val_ghm_loss_own``."""
    terms = ["val_ce", "val_rank", "val_ghmc", "val_ghm_rank"]
    missing = [c for c in terms if c not in metrics]
    if missing:
        raise ValueError(f"the metrics lack the validation terms {missing}; train them again "
                         "with this version of gradkit.training.ensemble")
    if not isinstance(rank_weight, int | float) or not rank_weight >= 0:
        raise ValueError(f"rank_weight must be a number >= 0, got {rank_weight!r}")
    losses = objective_losses(rank_weight, *(metrics[c] for c in terms))
    return metrics.assign(val_raw_loss_own=metrics["val_raw_loss"],
                          val_ghm_loss_own=metrics["val_ghm_loss"],
                          val_raw_loss=losses["raw"], val_ghm_loss=losses["ghm"])


def run_summary(metrics: pd.DataFrame, stopped: Mapping[tuple[int, int], tuple[int, str]],
                n_classes: int, tail: int = 10, window: int = 10,
                rank_weight: float | None = None) -> pd.DataFrame:
    """One row per (objective, seed, fold) of an ensemble's ``metrics`` (see the module doc).

    ``rank_weight``: read the validation losses at this common weight (:func:`at_rank_weight`),
    for runs whose ranking weights differ; ``None`` keeps each run's own. ``final_val_ce`` (the
    cross-entropy, which no weight scales) is given either way when logged."""
    if n_classes < 2:
        raise ValueError(f"n_classes must be at least 2, got {n_classes}")
    if rank_weight is not None:
        metrics = at_rank_weight(metrics, rank_weight)
    rows = []
    for (objective, seed, fold), run in metrics.groupby(["objective", "seed", "fold"], sort=True):
        run = run.sort_values("epoch")
        end = run.iloc[-1]
        last = run.tail(tail)
        best = run.loc[run["val_acc"].idxmax()]
        chance = above_chance(int(end["val_correct"]), int(end["n_val"]), 1 / n_classes)
        epoch, why = stopped.get((int(seed), int(fold)), (int(end["epoch"]), "cap"))
        rows.append({
            "objective": objective, "seed": int(seed), "fold": int(fold),
            "end_epoch": int(end["epoch"]), "stopped_by": why,
            "final_val_acc": float(end["val_acc"]),
            "final_val_raw_loss": float(end["val_raw_loss"]),
            "final_val_ghm_loss": float(end["val_ghm_loss"]),
            "final_val_ce": float(end["val_ce"]) if "val_ce" in run else float("nan"),
            "tail_val_acc": float(last["val_acc"].mean()),
            "tail_val_raw_loss": float(last["val_raw_loss"].mean()),
            "best_val_acc": float(best["val_acc"]), "best_epoch": int(best["epoch"]),
            "final_train_acc": float(end["train_acc"]),
            **({"lr": float(end["lr"])} if "lr" in run else {}),
            **({"rank_weight": float(end["rank_weight"])} if "rank_weight" in run else {}),
            "acc_trend": _trend(run["val_acc"].to_numpy(), window, True),
            # the run's own loss, the one its stopping rule read
            "loss_trend": _trend(run["val_raw_loss_own" if "val_raw_loss_own" in run
                                     else "val_raw_loss"].to_numpy(), window, False),
            "train_trend": _trend(run["train_loss"].to_numpy(), window, False),
            "chance": chance.verdict, "chance_p": chance.p_value,
        })
    return pd.DataFrame(rows)


def paired_values(summary: pd.DataFrame, metric: str, a: str, b: str
                  ) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """``(values of a, values of b, [(seed, fold)])`` over the units both objectives have."""
    if metric not in summary:
        raise ValueError(f"unknown metric {metric!r}; the summary has {list(summary.columns)}")
    wide = summary.pivot(index=["seed", "fold"], columns="objective", values=metric)
    missing = [o for o in (a, b) if o not in wide]
    if missing:
        raise ValueError(f"objective(s) {missing} not in the summary ({list(wide.columns)})")
    wide = wide[[a, b]].dropna()
    return wide[a].to_numpy(float), wide[b].to_numpy(float), list(wide.index)


def compare_objectives(summary: pd.DataFrame, metric: str, a: str = "ghm", b: str = "raw",
                       higher_is_better: bool = True, labels: Mapping[str, str] | None = None,
                       unit: str = "", alpha: float = 0.05) -> PairedComparison:
    """The paired comparison of objective ``a`` against ``b`` on ``metric``, by (seed, fold)."""
    labels = dict(labels or {})
    va, vb, _ = paired_values(summary, metric, a, b)
    return compare_paired(va, vb, higher_is_better=higher_is_better, alpha=alpha,
                          label_a=labels.get(a, a), label_b=labels.get(b, b), unit=unit,
                          what="seed×fold pairs")


def verdict_sentence(result: PairedComparison, scale: float = 1.0, digits: int = 1,
                     min_pairs: int = MIN_PAIRS) -> str:
    """``result.sentence()``, or a "too few pairs" sentence when ``result.n < min_pairs``."""
    if result.n < min_pairs:
        return (f"{result.label_a} \u2212 {result.label_b}: too few pairs for a verdict "
                f"({result.n} {result.what}; at least {min_pairs} needed)")
    return result.sentence(digits=digits, scale=scale)


def headline_verdict(result: PairedComparison, scale: float = 1.0, digits: int = 1,
                     min_pairs: int = MIN_PAIRS) -> str:
    """A short verdict for the report index, A relative to B: ``"worse: −4.1 pp [−9.8, −1.6],
    n = 15, p = 0.004; detects ≥ 6.2 pp"``, or ``"too few pairs (n = 2)"``."""
    if result.n < min_pairs:
        return f"too few pairs (n = {result.n})"
    lo, hi = result.ci
    diff = with_unit(number(result.diff * scale, digits), result.unit)
    md = with_unit(number(result.min_detectable * scale, digits), result.unit)
    return (f"{result.verdict}: {diff} [{number(lo * scale, digits)}, "
            f"{number(hi * scale, digits)}], n = {result.n}, "
            f"{p_text(result.p_value, result.alpha)}; detects \u2265 {md}")


def study_paragraph(condition: str, learnability: str, comparable: bool, seeds: int,
                    folds: int, settings: Mapping[str, str], cap: int, n_improving: int,
                    n_runs: int, at_chance: Mapping[str, int],
                    accuracy: PairedComparison | None = None,
                    speed: PairedComparison | None = None, ablation: str = "") -> str:
    """Notebook 01's paragraph for the README ("How hard is it?"), generated from its numbers:
    the learnability sentence, the design with every objective's chosen ``settings`` (learning
    rates *and* ranking weights, e.g. :func:`gradkit.analysis.sweep.settings_text`), the share
    of runs still improving, and, only where ``comparable``, the verdicts at convergence
    (``accuracy``), the separate learning-speed result (``speed``) and the ``ablation``
    sentence, each rendered by :func:`headline_verdict`."""
    chosen = "; ".join(f"{name} {text}" for name, text in settings.items())
    chance = ", ".join(f"{k} {name}" for name, k in at_chance.items())
    text = (f"Notebook 01 on {condition}: {learnability}. Its design: {seeds} seeds × {folds} "
            f"folds ({seeds * folds} pairs), each objective at its own learning rate and ranking "
            f"weight, chosen per unit on inner splits (units per value: {chosen}), each run "
            f"trained until the plateau test stopped it, at most {cap} epochs ({n_improving} of "
            f"{n_runs} still improving on validation when stopped); {sum(at_chance.values())} "
            f"of the {n_runs} runs ended at chance ({chance}).")
    if not comparable or accuracy is None:
        return text + " The objectives are not compared: no run learned (not comparable)."
    where = ("at convergence" if n_improving < CONVERGED_SHARE * n_runs else
             f"at the epoch cap, not at convergence ({CONVERGED_SHARE:.0%} or more of the runs "
             "still improving)")
    text += (f" {accuracy.label_a} − {accuracy.label_b}, validation accuracy {where}: "
             f"{headline_verdict(accuracy, scale=100)}.")
    if speed is not None:
        text += (f" Apart from that, learning speed (epochs to leave chance): "
                 f"{headline_verdict(speed)}.")
    if ablation:
        text += f" The ablation, each arm at its own swept setting: {ablation}."
    return text
