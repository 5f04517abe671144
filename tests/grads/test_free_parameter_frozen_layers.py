"""A free additive parameter (a learned positional offset) followed by frozen layers: the
engine's per-sample gradients, norms and Gram equal the loop's, and its consistency check
passes (the tracker's exact fallback freezes the layers it reads from the backward)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradkit.grads import gradient_gram, per_sample_grads, per_sample_norms


class _Offset(nn.Module):
    def __init__(self):
        super().__init__()
        self.pos = nn.Parameter(torch.randn(5, 4) * 0.1)
        self.fc, self.fc2 = nn.Linear(4, 3), nn.Linear(3, 3)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc(x + self.pos))).mean(1)


@pytest.mark.parametrize("frozen", [("fc",), ("fc", "fc2")])
def test_a_free_parameter_before_frozen_layers_is_exact_and_checked(frozen):
    torch.manual_seed(0)
    model = _Offset().double()
    for name in frozen:
        getattr(model, name).requires_grad_(False)
    x, y = torch.randn(6, 5, 4, dtype=torch.float64), torch.randint(0, 3, (6,))
    G = per_sample_grads(model, F.cross_entropy, x, y, method="loop")
    got = per_sample_grads(model, F.cross_entropy, x, y)  # check=True: must not raise
    assert torch.allclose(got, G, rtol=1e-6, atol=1e-12)
    assert torch.allclose(per_sample_norms(model, F.cross_entropy, x, y), G.norm(dim=1),
                          rtol=1e-6)
    assert torch.allclose(gradient_gram(model, F.cross_entropy, x, y), G @ G.T, rtol=1e-6,
                          atol=1e-12)
