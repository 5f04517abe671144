"""The ablation's objectives: each trains exactly the terms it names (combine_terms)."""

import pytest
import torch

from gradkit.training import OBJECTIVES, TrainConfig
from gradkit.training.objective import combine_terms, ghm_inputs


@pytest.mark.parametrize("objective, expected", [
    ("raw", 1.0 + 0.1 * 2.0), ("ghm", 3.0 + 0.1 * 4.0),
    ("ghmc_rank", 3.0 + 0.1 * 2.0), ("ce_ghmrank", 1.0 + 0.1 * 4.0)])
def test_each_objective_adds_its_own_two_terms(objective, expected):
    cfg = TrainConfig(objective=objective, rank_weight=0.1)
    t = [torch.tensor(v) for v in (1.0, 2.0, 3.0, 4.0)]  # ce, rank, ghmc, ghm_rank
    loss, terms = combine_terms(cfg, *t)
    assert loss.item() == pytest.approx(expected)
    assert terms["raw"].item() == pytest.approx(1.2) and terms["ghm"].item() == pytest.approx(3.4)


def test_only_raw_detaches_the_ghm_inputs():
    x = torch.ones(2, requires_grad=True)
    assert set(OBJECTIVES) == {"raw", "ghm", "ghmc_rank", "ce_ghmrank"}
    for objective in OBJECTIVES:
        logits, _ = ghm_inputs(TrainConfig(objective=objective), x * 2, x * 3)
        assert logits.requires_grad == (objective != "raw"), objective
    with pytest.raises(ValueError, match="objective must be one of"):
        TrainConfig(objective="ghmc")
