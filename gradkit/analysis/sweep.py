"""A fair learning rate for each objective: a sweep on inner splits, chosen per unit (nested).

Notebook 01 compares objectives pair by pair over (seed, fold) units. A learning rate tuned for
one objective favours it, and a learning rate tuned on the comparison's validation clips
favours whichever objective the tuning noise happens to favour. So, per objective and per unit:

1. :func:`inner_member` cuts the unit's *training* clips into an inner training and an inner
   validation part (``gradkit.data.stratified_split``, a third of every class, seeded by the
   unit's seed); the unit's validation clips are in neither;
2. :func:`sweep_learning_rates` trains every unit's inner split at each learning rate of the
   grid, as one vectorised ensemble per rate (:func:`gradkit.training.ensemble.get_ensemble`,
   plateau-stopped), and scores each run by its mean inner validation accuracy over its last
   ``tail`` epochs (ties: the lower mean raw inner validation loss);
3. :func:`choose_learning_rates` keeps, per unit, the best-scoring rate (ties: the smaller rate);
4. :func:`train_at_chosen` trains each unit's outer split at its own chosen rate, one ensemble
   per distinct rate, and returns the metrics of every run with its ``lr``.

The chosen rate never saw the clips the comparison validates on (nested cross-validation).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import pandas as pd

from gradkit.data.folds import ConditionFeatures, split_of
from gradkit.data.recordings import stratified_split
from gradkit.training import TrainConfig
from gradkit.training.ensemble import EnsembleResult, Member, get_ensemble

__all__ = ["choose_learning_rates", "inner_member", "sweep_learning_rates", "train_at_chosen"]


def inner_member(member: Member, val_fraction: float = 1 / 3) -> Member:
    """``member`` with its split replaced by an inner split of its training clips only."""
    s = member.split
    train = ConditionFeatures(s.x_train, s.y_train, s.angles_train, list(s.paths_train),
                              list(s.classes))
    is_val = stratified_split(s.y_train.numpy(), val_fraction, member.seed)
    return Member(member.seed, member.fold, split_of(train, is_val))


def sweep_learning_rates(config: TrainConfig, members: Sequence[Member], lrs: Sequence[float],
                         window: int = 10, min_epochs: int = 20, tail: int = 10
                         ) -> pd.DataFrame:
    """One row per (lr, seed, fold): ``score`` (mean inner validation accuracy, last ``tail``
    epochs), ``loss`` (mean raw inner validation loss there), ``end_epoch``."""
    if not lrs or any(not lr > 0 for lr in lrs):
        raise ValueError(f"lrs must be a non-empty list of positive learning rates, got {lrs!r}")
    inner = [inner_member(m) for m in members]
    rows = []
    for lr in lrs:
        result = get_ensemble(dataclasses.replace(config, lr=float(lr)), inner, window=window,
                              min_epochs=min_epochs)
        for (seed, fold), run in result.metrics.groupby(["seed", "fold"], sort=True):
            last = run.sort_values("epoch").tail(tail)
            rows.append({"lr": float(lr), "seed": int(seed), "fold": int(fold),
                         "score": float(last["val_acc"].mean()),
                         "loss": float(last["val_raw_loss"].mean()),
                         "end_epoch": int(run["epoch"].max())})
    return pd.DataFrame(rows)


def choose_learning_rates(table: pd.DataFrame) -> dict[tuple[int, int], float]:
    """Per (seed, fold): the rate with the highest ``score``, then the lowest ``loss``, then the
    smallest rate."""
    missing = {"lr", "seed", "fold", "score", "loss"} - set(table.columns)
    if missing:
        raise ValueError(f"the sweep table lacks the columns {sorted(missing)}")
    ranked = table.sort_values(["seed", "fold", "score", "loss", "lr"],
                               ascending=[True, True, False, True, True])
    best = ranked.groupby(["seed", "fold"], sort=True).head(1)
    return {(int(r.seed), int(r.fold)): float(r.lr) for r in best.itertuples()}


def train_at_chosen(config: TrainConfig, members: Sequence[Member],
                    chosen: Mapping[tuple[int, int], float], window: int = 10,
                    min_epochs: int = 20) -> EnsembleResult:
    """Every member trained at its unit's chosen rate (one ensemble per distinct rate); the
    metrics gain an ``lr`` column, ``seconds`` sums the ensembles'."""
    missing = [(m.seed, m.fold) for m in members if (m.seed, m.fold) not in chosen]
    if missing:
        raise ValueError(f"no chosen learning rate for the units {missing}")
    parts, stopped, seconds = [], {}, 0.0
    for lr in sorted(set(chosen[(m.seed, m.fold)] for m in members)):
        group = [m for m in members if chosen[(m.seed, m.fold)] == lr]
        result = get_ensemble(dataclasses.replace(config, lr=lr), group, window=window,
                              min_epochs=min_epochs)
        parts.append(result.metrics.assign(lr=lr))
        stopped.update(result.stopped)
        seconds += result.seconds
    return EnsembleResult(config, pd.concat(parts, ignore_index=True), stopped, seconds)
