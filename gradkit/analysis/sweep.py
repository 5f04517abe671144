"""A fair learning rate and ranking weight for each objective: a sweep on inner splits, per unit.

Notebook 01 compares objectives pair by pair over (seed, fold) units. Settings tuned for one
objective favour it, and settings tuned on the comparison's validation clips favour whichever
objective the tuning noise happens to favour. So, per objective and per unit:

1. :func:`inner_member` cuts the unit's *training* clips into an inner training and an inner
   validation part (``gradkit.data.stratified_split``, a third of every class, seeded by the
   unit's seed); the unit's validation clips are in neither;
2. :func:`sweep_settings` trains every unit's inner split at each of its candidate settings
   ``(lr, rank_weight)``, one vectorised ensemble per distinct setting
   (:func:`gradkit.training.ensemble.get_ensemble`, plateau-stopped on the inner validation
   part: early stopping), and scores each run by its mean inner validation accuracy over its last
   ``tail`` epochs (ties: the lower mean inner validation cross-entropy, which no ranking weight
   scales);
3. :func:`coordinate_sweep` searches the two settings one after the other: the learning rates
   at the config's ranking weight, then the other ranking weights at each unit's best rate
   (``len(lrs) + len(rank_weights) - 1`` candidates per unit instead of the full grid's product);
4. :func:`choose_settings` keeps, per unit, the best-scoring setting (ties: the smaller rate,
   then the smaller weight); :func:`choose_learning_rates` its rates alone;
5. :func:`train_at_chosen` trains each unit's outer split at its own chosen setting, one
   ensemble per distinct setting, and returns the metrics of every run with its ``lr`` and
   ``rank_weight``.

The chosen settings never saw the clips the comparison validates on (nested cross-validation).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import pandas as pd

from gradkit.data.folds import ConditionFeatures, split_of
from gradkit.data.recordings import stratified_split
from gradkit.training import TrainConfig
from gradkit.training.ensemble import EnsembleResult, Member, get_ensemble

__all__ = ["NestedRuns", "choose_learning_rates", "choose_settings", "coordinate_sweep",
           "inner_member", "metrics_epochs", "nested_runs", "settings_text", "sweep_epochs",
           "sweep_learning_rates", "sweep_settings", "train_at_chosen", "unit_sizes", "work_row"]

Unit = tuple[int, int]
Setting = tuple[float, float]  # (learning rate, ranking weight)


def inner_member(member: Member, val_fraction: float = 1 / 3) -> Member:
    """``member`` with its split replaced by an inner split of its training clips only."""
    s = member.split
    train = ConditionFeatures(s.x_train, s.y_train, s.angles_train, list(s.paths_train),
                              list(s.classes))
    is_val = stratified_split(s.y_train.numpy(), val_fraction, member.seed)
    return Member(member.seed, member.fold, split_of(train, is_val))


def _check_setting(setting) -> Setting:
    lr, weight = (setting, None) if not isinstance(setting, tuple | list) else setting
    if not isinstance(lr, int | float) or not lr > 0 or (
            weight is not None and (not isinstance(weight, int | float) or not weight >= 0)):
        raise ValueError(f"a setting is a learning rate > 0 or (lr > 0, rank_weight >= 0), got "
                         f"{setting!r}")
    return float(lr), (None if weight is None else float(weight))


def sweep_settings(config: TrainConfig, members: Sequence[Member],
                   candidates: Mapping[Unit, Sequence[Setting]], window: int = 10,
                   min_epochs: int = 20, tail: int = 10, train_single: bool = True
                   ) -> pd.DataFrame:
    """One row per (unit, candidate setting): ``lr``, ``rank_weight``, ``seed``, ``fold``,
    ``score`` (mean inner validation accuracy, last ``tail`` epochs), ``loss`` (mean inner
    validation cross-entropy there), ``end_epoch`` (the run's last epoch: its cost).
    ``train_single=False``: a unit with a single candidate has nothing to choose, so it is not
    trained (its row has ``score`` and ``loss`` NaN and ``end_epoch`` 0)."""
    missing = [(m.seed, m.fold) for m in members if not candidates.get((m.seed, m.fold))]
    if missing:
        raise ValueError(f"no candidate settings for the units {missing}")
    inner = {(m.seed, m.fold): inner_member(m) for m in members}
    by_setting: dict[Setting, list[Member]] = {}
    rows = []
    for unit, member in inner.items():
        settings = list(dict.fromkeys(_check_setting(s) for s in candidates[unit]))
        if len(settings) == 1 and not train_single:
            lr, weight = settings[0]
            rows.append({"lr": lr, "rank_weight": config.rank_weight if weight is None
                         else weight, "seed": unit[0], "fold": unit[1], "score": float("nan"),
                         "loss": float("nan"), "end_epoch": 0})
            continue
        for setting in settings:
            by_setting.setdefault(setting, []).append(member)
    for (lr, weight), group in sorted(by_setting.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
        cfg = dataclasses.replace(config, lr=lr, rank_weight=config.rank_weight if weight is None
                                  else weight)
        result = get_ensemble(cfg, group, window=window, min_epochs=min_epochs)
        for (seed, fold), run in result.metrics.groupby(["seed", "fold"], sort=True):
            last = run.sort_values("epoch").tail(tail)
            rows.append({"lr": lr, "rank_weight": cfg.rank_weight, "seed": int(seed),
                         "fold": int(fold), "score": float(last["val_acc"].mean()),
                         "loss": float(last["val_ce"].mean()),
                         "end_epoch": int(run["epoch"].max())})
    return pd.DataFrame(rows).sort_values(["seed", "fold", "lr", "rank_weight"],
                                          ignore_index=True)


def sweep_learning_rates(config: TrainConfig, members: Sequence[Member], lrs: Sequence[float],
                         window: int = 10, min_epochs: int = 20, tail: int = 10
                         ) -> pd.DataFrame:
    """:func:`sweep_settings` over the rates ``lrs`` at the config's ranking weight, for every
    unit."""
    if not lrs or any(not lr > 0 for lr in lrs):
        raise ValueError(f"lrs must be a non-empty list of positive learning rates, got {lrs!r}")
    grid = [(float(lr), config.rank_weight) for lr in lrs]
    return sweep_settings(config, members, {(m.seed, m.fold): grid for m in members},
                          window=window, min_epochs=min_epochs, tail=tail)


def coordinate_sweep(config: TrainConfig, members: Sequence[Member], lrs: Sequence[float],
                     rank_weights: Sequence[float] = (), window: int = 10, min_epochs: int = 20,
                     tail: int = 10) -> pd.DataFrame:
    """Stage 1: ``lrs`` at ``config.rank_weight``; stage 2: every other weight of
    ``rank_weights`` at the unit's stage-1 rate (:func:`choose_learning_rates`). Both stages'
    rows, with a ``stage`` column; :func:`choose_settings` then picks among all of them."""
    if any(not isinstance(w, int | float) or not w >= 0 for w in rank_weights):
        raise ValueError(f"rank_weights must be numbers >= 0, got {rank_weights!r}")
    first = sweep_learning_rates(config, members, lrs, window, min_epochs, tail).assign(stage=1)
    others = [float(w) for w in dict.fromkeys(rank_weights) if float(w) != config.rank_weight]
    if not others:
        return first
    best = choose_learning_rates(first)
    second = sweep_settings(config, members, {u: [(lr, w) for w in others]
                                              for u, lr in best.items()},
                            window=window, min_epochs=min_epochs, tail=tail).assign(stage=2)
    return pd.concat([first, second], ignore_index=True)


def choose_settings(table: pd.DataFrame) -> dict[Unit, Setting]:
    """Per (seed, fold): the ``(lr, rank_weight)`` with the highest ``score``, then the lowest
    ``loss``, then the smallest rate, then the smallest weight."""
    missing = {"lr", "seed", "fold", "score", "loss"} - set(table.columns)
    if missing:
        raise ValueError(f"the sweep table lacks the columns {sorted(missing)}")
    if "rank_weight" not in table:
        table = table.assign(rank_weight=TrainConfig().rank_weight)
    ranked = table.sort_values(["seed", "fold", "score", "loss", "lr", "rank_weight"],
                               ascending=[True, True, False, True, True, True],
                               na_position="last")
    best = ranked.groupby(["seed", "fold"], sort=True).head(1)
    return {(int(r.seed), int(r.fold)): (float(r.lr), float(r.rank_weight))
            for r in best.itertuples()}


def choose_learning_rates(table: pd.DataFrame) -> dict[Unit, float]:
    """The learning rates of :func:`choose_settings`."""
    return {unit: lr for unit, (lr, _) in choose_settings(table).items()}


def train_at_chosen(config: TrainConfig, members: Sequence[Member],
                    chosen: Mapping[Unit, float | Setting], window: int = 10,
                    min_epochs: int = 20) -> EnsembleResult:
    """Every member trained at its unit's chosen rate, or ``(rate, ranking weight)`` (one
    ensemble per distinct setting); the metrics gain ``lr`` and ``rank_weight`` columns,
    ``seconds`` sums the ensembles'."""
    missing = [(m.seed, m.fold) for m in members if (m.seed, m.fold) not in chosen]
    if missing:
        raise ValueError(f"no chosen learning rate for the units {missing}")
    setting = {(m.seed, m.fold): _check_setting(chosen[(m.seed, m.fold)]) for m in members}
    setting = {u: (lr, config.rank_weight if w is None else w) for u, (lr, w) in setting.items()}
    parts, stopped, seconds = [], {}, 0.0
    for lr, weight in sorted(set(setting.values())):
        group = [m for m in members if setting[(m.seed, m.fold)] == (lr, weight)]
        result = get_ensemble(dataclasses.replace(config, lr=lr, rank_weight=weight), group,
                              window=window, min_epochs=min_epochs)
        parts.append(result.metrics.assign(lr=lr, rank_weight=weight))
        stopped.update(result.stopped)
        seconds += result.seconds
    return EnsembleResult(config, pd.concat(parts, ignore_index=True), stopped, seconds)


def settings_text(chosen: Mapping[Unit, float | Setting]) -> str:
    """How many units chose each rate and each ranking weight: ``"lr 1e-3 × 3, 3e-3 × 12;
    rank weight 0.1 × 9, 0.3 × 6"`` (the weights left out where only rates were chosen)."""
    if not chosen:
        raise ValueError("no chosen settings to describe")
    pairs = [_check_setting(v) for v in chosen.values()]
    count = lambda values: ", ".join(f"{v:g} × {k}" for v, k in  # noqa: E731
                                     sorted(pd.Series(values).value_counts().items()))
    text = "lr " + count([lr for lr, _ in pairs])
    weights = [w for _, w in pairs if w is not None]
    return text + (f"; rank weight {count(weights)}" if weights else "")


@dataclasses.dataclass
class NestedRuns:
    """:func:`nested_runs`'s result: the sweep ``table``, the ``chosen`` setting per unit and the
    outer ``result`` trained at it."""

    table: pd.DataFrame
    chosen: dict[Unit, Setting]
    result: EnsembleResult


def nested_runs(config: TrainConfig, members: Sequence[Member], lrs: Sequence[float],
                rank_weights: Sequence[float], sweep_epochs: int, sweep_min_epochs: int,
                sweep_tail: int, window: int = 10, min_epochs: int = 20) -> NestedRuns:
    """The whole nested procedure for one objective: :func:`coordinate_sweep` on the inner
    splits (capped at ``sweep_epochs``, plateau-stopped from ``sweep_min_epochs``, scored over
    ``sweep_tail`` epochs; neither above ``config.epochs``), :func:`choose_settings`, then
    :func:`train_at_chosen` on the outer splits (cap ``config.epochs``, plateau from
    ``min_epochs``)."""
    cap = min(sweep_epochs, config.epochs)
    table = coordinate_sweep(dataclasses.replace(config, epochs=cap), members, lrs, rank_weights,
                             window=window, min_epochs=min(sweep_min_epochs, cap),
                             tail=sweep_tail)
    chosen = choose_settings(table)
    result = train_at_chosen(config, members, chosen, window=window, min_epochs=min_epochs)
    return NestedRuns(table, chosen, result)


def unit_sizes(members: Sequence[Member], inner: bool = False) -> dict[Unit, tuple[int, int]]:
    """``(training clips, validation clips)`` per unit, of its outer or its inner split."""
    split = lambda m: inner_member(m).split if inner else m.split  # noqa: E731
    return {(m.seed, m.fold): (len(split(m).y_train), len(split(m).y_val)) for m in members}


def work_row(stage: str, epochs_of_unit: Sequence[tuple[Unit, int]],
             sizes: Mapping[Unit, tuple[int, int]]) -> dict[str, object]:
    """The training work of one stage, counted (never timed): ``runs`` (entries with at least
    one epoch), ``member-epochs`` (one run trained for one epoch) and the clip-epochs they pass,
    ``training clip-epochs`` (a forward and a backward pass each) and ``validation
    clip-epochs`` (a forward pass each). ``epochs_of_unit``: ``[((seed, fold), epochs)]``, one
    entry per run, e.g. :func:`sweep_epochs` or :func:`metrics_epochs`."""
    return {"stage": stage, "runs": sum(1 for _, e in epochs_of_unit if e > 0),
            "member-epochs": int(sum(e for _, e in epochs_of_unit)),
            "training clip-epochs": int(sum(e * sizes[u][0] for u, e in epochs_of_unit)),
            "validation clip-epochs": int(sum(e * sizes[u][1] for u, e in epochs_of_unit))}


def sweep_epochs(tables: Sequence[pd.DataFrame]) -> list[tuple[Unit, int]]:
    """``[((seed, fold), end_epoch)]`` of every run of sweep tables (:func:`sweep_settings`)."""
    return [((int(r.seed), int(r.fold)), int(r.end_epoch)) for t in tables
            for r in t.itertuples()]


def metrics_epochs(frames: Sequence[pd.DataFrame]) -> list[tuple[Unit, int]]:
    """``[((seed, fold), epochs logged)]`` of every (objective, seed, fold) run of ensemble
    metrics (one row per member-epoch)."""
    return [((int(k[1]), int(k[2])), len(g)) for f in frames
            for k, g in f.groupby(["objective", "seed", "fold"])]
