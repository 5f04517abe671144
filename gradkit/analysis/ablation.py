"""Which GHM term makes a run stall at chance? Notebook 01's ablation, read from the numbers.

Four objectives, trained from the same initial weights on the same batches per (seed, fold),
each at its own setting chosen on inner splits (:mod:`gradkit.analysis.sweep`): raw and GHM at
the settings of the comparison, the two hybrids at their own swept learning rate, with the
ranking weight of the objective whose ranking term they carry (:func:`hybrid_candidates`):
``raw`` (CE + λ R), ``ghmc_rank`` (GHM-C + λ R), ``ce_ghmrank`` (CE + λ GHM-R) and ``ghm``
(GHM-C + λ GHM-R). Each is compared with ``raw`` pair by pair
(:func:`gradkit.stats.compare_paired` through
:func:`gradkit.analysis.verdicts.compare_objectives`) on a learning-speed metric of
:func:`gradkit.analysis.speed.speed_summary` (``epochs_to_leave_chance`` by default, lower is
better). :func:`stall_sentence` names the term(s) whose swap alone detectably slows learning:

- only the GHM-C swap is slower: "the GHM-C classification term causes the stall";
- only the GHM ranking swap: "the GHM ranking term causes the stall";
- both: "each GHM term alone slows learning";
- neither, while the full GHM objective is slower: "neither term alone; their combination";
- nothing slower: "no term detectably slows learning at this design";
- fewer than ``MIN_PAIRS`` pairs: "too few pairs for a verdict".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import pandas as pd

from gradkit.analysis.sweep import choose_settings, sweep_settings, train_at_chosen
from gradkit.analysis.verdicts import MIN_PAIRS, compare_objectives
from gradkit.stats import PairedComparison
from gradkit.training import TrainConfig
from gradkit.training.ensemble import EnsembleResult, Member

__all__ = ["ABLATION", "RANKING_OF", "ablation_comparisons", "hybrid_candidates",
           "stall_sentence", "train_hybrids"]

#: The ablation's objectives (``TrainConfig.objective``) and their names in tables and sentences.
ABLATION = {"raw": "CE + raw ranking (raw)", "ghmc_rank": "GHM-C + raw ranking",
            "ce_ghmrank": "CE + GHM ranking", "ghm": "GHM-C + GHM ranking (GHM)"}


#: The objective whose ranking term, and so whose chosen ranking weight, each arm carries.
RANKING_OF = {"raw": "raw", "ghmc_rank": "raw", "ce_ghmrank": "ghm", "ghm": "ghm"}


def hybrid_candidates(chosen: Mapping[str, Mapping[tuple[int, int], tuple[float, float]]],
                      units: Sequence[tuple[int, int]], lrs: Sequence[float] | None = None
                      ) -> dict[str, dict[tuple[int, int], list[tuple[float, float]]]]:
    """The sweep candidates of the two hybrid arms per unit, each at the ranking weight
    ``chosen[RANKING_OF[arm]][unit]`` (``chosen``: raw's and GHM's ``(lr, rank_weight)`` per
    unit, :func:`gradkit.analysis.sweep.choose_settings`): every rate of ``lrs``, or with
    ``lrs=None`` the rates raw and GHM chose for that unit (a hybrid carries one term of each:
    one candidate where they agree, two where they differ)."""
    need = {"raw", "ghm"} if lrs is None else {RANKING_OF[a] for a in ABLATION
                                              if a not in ("raw", "ghm")}
    missing = [(o, u) for o in sorted(need) for u in units if u not in chosen.get(o, {})]
    if missing:
        raise ValueError(f"no chosen setting for (objective, unit) {missing}")

    def rates(u):
        return ([float(lr) for lr in lrs] if lrs is not None
                else sorted({chosen["raw"][u][0], chosen["ghm"][u][0]}))
    return {arm: {u: [(lr, chosen[RANKING_OF[arm]][u][1]) for lr in rates(u)] for u in units}
            for arm in ABLATION if arm not in ("raw", "ghm")}


def ablation_comparisons(speed: pd.DataFrame, metric: str = "epochs_to_leave_chance",
                         higher_is_better: bool = False, unit: str = "epochs"
                         ) -> dict[str, PairedComparison]:
    """Each non-raw objective of :data:`ABLATION` against ``raw`` on ``metric``, by (seed, fold)."""
    missing = sorted(set(ABLATION) - set(speed["objective"]))
    if missing:
        raise ValueError(f"the ablation needs every objective of {list(ABLATION)}; missing "
                         f"{missing}")
    return {name: compare_objectives(speed, metric, name, "raw", higher_is_better, ABLATION, unit)
            for name in ABLATION if name != "raw"}


def stall_sentence(results: Mapping[str, PairedComparison]) -> str:
    """Which term causes the stall, from the verdicts of :func:`ablation_comparisons`; below
    ``MIN_PAIRS`` pairs, no verdict."""
    n = min(r.n for r in results.values())
    if n < MIN_PAIRS:
        return f"too few pairs for a verdict (n = {n}; at least {MIN_PAIRS} needed)"
    slower = {name for name, r in results.items() if r.verdict == "worse"}
    if {"ghmc_rank", "ce_ghmrank"} <= slower:
        return "each GHM term alone slows learning: both the GHM-C and the GHM ranking swap do"
    if "ghmc_rank" in slower:
        return "the GHM-C classification term causes the stall (swapping it in alone slows " \
               "learning; swapping in the GHM ranking term alone does not detectably)"
    if "ce_ghmrank" in slower:
        return "the GHM ranking term causes the stall (swapping it in alone slows learning; " \
               "swapping in GHM-C alone does not detectably)"
    if "ghm" in slower:
        return "neither term alone detectably slows learning; their combination (GHM) does"
    return "no term detectably slows learning at this design"


def train_hybrids(config: TrainConfig, members: Sequence[Member],
                  chosen: Mapping[str, Mapping[tuple[int, int], tuple[float, float]]],
                  upto: int, window: int = 10, tail: int = 10
                  ) -> dict[str, tuple[pd.DataFrame, dict, EnsembleResult]]:
    """The two hybrid arms for ``upto`` epochs (the ablation's window, no early stop), each at
    its own learning rate chosen per unit on the inner splits over the same window, among
    :func:`hybrid_candidates` (the rates raw and GHM chose; a unit where they agree is not
    swept). ``config``: the condition (its ``objective`` and ``epochs`` are replaced). Per arm:
    ``(sweep table, chosen settings, EnsembleResult)``."""
    units = [(m.seed, m.fold) for m in members]
    out = {}
    for arm, cands in hybrid_candidates(chosen, units).items():
        cfg = dataclasses.replace(config, objective=arm, epochs=upto)
        table = sweep_settings(cfg, members, cands, window=window, min_epochs=upto,
                               tail=min(tail, upto), train_single=False)
        picked = choose_settings(table)
        out[arm] = (table, picked, train_at_chosen(cfg, members, picked, window=window,
                                                   min_epochs=upto))
    return out
