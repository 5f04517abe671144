"""Which GHM term makes a run stall at chance? Notebook 01's ablation, read from the numbers.

Four objectives, trained from the same initial weights on the same batches per (seed, fold) at
one learning rate: ``raw`` (CE + λ R), ``ghmc_rank`` (GHM-C + λ R), ``ce_ghmrank`` (CE + λ
GHM-R) and ``ghm`` (GHM-C + λ GHM-R). Each is compared with ``raw`` pair by pair
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

from collections.abc import Mapping

import pandas as pd

from gradkit.analysis.verdicts import MIN_PAIRS, compare_objectives
from gradkit.stats import PairedComparison

__all__ = ["ABLATION", "ablation_comparisons", "stall_sentence"]

#: The ablation's objectives (``TrainConfig.objective``) and their names in tables and sentences.
ABLATION = {"raw": "CE + raw ranking (raw)", "ghmc_rank": "GHM-C + raw ranking",
            "ce_ghmrank": "CE + GHM ranking", "ghm": "GHM-C + GHM ranking (GHM)"}


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
