"""The ablation names the term that slows learning, from paired comparisons only."""

import numpy as np
import pandas as pd
import pytest

from gradkit.analysis.ablation import ABLATION, ablation_comparisons, stall_sentence


def speed_table(delays):
    """Per objective, epochs to leave chance = raw's + its delay (+ small per-unit noise)."""
    rng = np.random.default_rng(0)
    base = rng.integers(3, 6, size=10)
    rows = []
    for name in ABLATION:
        noise = rng.integers(-1, 2, size=10)
        for k in range(10):
            rows.append({"objective": name, "seed": k // 2, "fold": k % 2,
                         "epochs_to_leave_chance": base[k] + delays.get(name, 0)
                         + (noise[k] if name != "raw" else 0)})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("delays, expected", [
    ({"ghmc_rank": 12, "ghm": 12}, "the GHM-C classification term causes the stall"),
    ({"ce_ghmrank": 12, "ghm": 12}, "the GHM ranking term causes the stall"),
    ({"ghmc_rank": 10, "ce_ghmrank": 10, "ghm": 14}, "each GHM term alone slows learning"),
    ({"ghm": 12}, "neither term alone detectably slows learning; their combination"),
    ({}, "no term detectably slows learning"),
])
def test_the_stall_is_attributed_from_the_verdicts(delays, expected):
    results = ablation_comparisons(speed_table(delays))
    assert set(results) == {"ghmc_rank", "ce_ghmrank", "ghm"}
    assert all(r.n == 10 for r in results.values())
    assert stall_sentence(results).startswith(expected)


def test_a_missing_objective_is_refused():
    table = speed_table({})
    with pytest.raises(ValueError, match="missing"):
        ablation_comparisons(table[table.objective != "ce_ghmrank"])


def test_too_few_pairs_give_no_verdict():
    table = speed_table({"ghmc_rank": 12, "ghm": 12})
    results = ablation_comparisons(table[table.seed == 0])  # 2 pairs
    assert stall_sentence(results).startswith("too few pairs for a verdict (n = 2")


def test_each_hybrid_sweeps_the_rates_at_the_weight_of_its_ranking_term():
    from gradkit.analysis.ablation import hybrid_candidates

    units = [(0, 0), (0, 1)]
    chosen = {"raw": {(0, 0): (3e-3, 0.1), (0, 1): (1e-3, 0.3)},
              "ghm": {(0, 0): (1e-2, 0.03), (0, 1): (3e-3, 0.1)}}
    cands = hybrid_candidates(chosen, units, [1e-3, 1e-2])
    assert set(cands) == {"ghmc_rank", "ce_ghmrank"}
    assert cands["ghmc_rank"][(0, 1)] == [(1e-3, 0.3), (1e-2, 0.3)]     # raw ranking: raw's weight
    assert cands["ce_ghmrank"][(0, 0)] == [(1e-3, 0.03), (1e-2, 0.03)]  # GHM ranking: GHM's
    parents = hybrid_candidates(chosen, units)  # the rates raw and GHM chose for the unit
    assert parents["ghmc_rank"][(0, 0)] == [(3e-3, 0.1), (1e-2, 0.1)]
    assert parents["ce_ghmrank"][(0, 1)] == [(1e-3, 0.1), (3e-3, 0.1)]
    same = {"raw": {(0, 0): (3e-3, 0.1)}, "ghm": {(0, 0): (3e-3, 0.3)}}
    assert hybrid_candidates(same, [(0, 0)])["ce_ghmrank"] == {(0, 0): [(3e-3, 0.3)]}
    with pytest.raises(ValueError, match="no chosen setting"):
        hybrid_candidates({"raw": chosen["raw"]}, units, [1e-3])
    with pytest.raises(ValueError, match="no chosen setting"):
        hybrid_candidates({"raw": chosen["raw"]}, units)
