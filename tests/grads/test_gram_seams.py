"""Where the Gram path meets the engine's other checks: a coupled loss, a free parameter."""

from __future__ import annotations

import pytest
import torch
from test_coupling import problem, ranking  # tests/grads is on the path (pytest's rootdir import)
from test_foreign_models import PositionalNet, ce, seq

from gradkit.grads import (
    CoupledLossError,
    forget,
    gradient_gram,
    per_sample_grads,
    per_sample_norms,
)


def test_gradient_gram_and_norms_refuse_a_loss_that_couples_the_samples():
    model, x, _ = problem()
    angles = torch.randperm(12).float() * 30
    forget(model)
    with pytest.raises(CoupledLossError, match="'ranking'"):
        gradient_gram(model, ranking, x, angles)
    forget(model)
    with pytest.raises(CoupledLossError, match="'ranking'"):
        per_sample_norms(model, ranking, x, angles)


def test_a_free_additive_parameter_enters_the_gram_exactly():
    torch.manual_seed(5)
    model, (x, y) = PositionalNet().eval(), seq(10)
    G = per_sample_grads(model, ce, x, y, method="loop").double()
    K = gradient_gram(model, ce, x, y)
    torch.testing.assert_close(K, G @ G.T, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(per_sample_norms(model, ce, x, y), G.norm(dim=1),
                               rtol=1e-5, atol=1e-8)
    blocks = gradient_gram(model, ce, x, y, by_layer=True)
    assert {"pos", "block.bias_pos"} <= set(blocks)
    assert float(blocks["pos"].diagonal().sum()) > 0
    torch.testing.assert_close(sum(blocks.values()), K, rtol=1e-6, atol=1e-8)
