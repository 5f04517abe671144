"""The shared test grid of the rules: every file of gradkit/grads/rules/ with an ``examples()``
is picked up, each example layer checked in every form (materialised per-sample gradients, Gram
matrix, norms) against the per-sample loop, and every layer type those files register must have
an example. A new layer type: one file with its rule and its ``examples()``."""

from __future__ import annotations

import importlib
import pkgutil
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import gradkit.grads.rules as rules
from gradkit.grads import gradient_gram, per_sample_grads, per_sample_norms
from gradkit.grads.rules import registry


def rule_modules():
    return [importlib.import_module(f"{rules.__name__}.{m.name}")
            for m in pkgutil.iter_modules(rules.__path__)]


EXAMPLES = [(mod.__name__.rsplit(".", 1)[1], i, layer, shape)
            for mod in rule_modules() if hasattr(mod, "examples")
            for i, (layer, shape) in enumerate(mod.examples())]


class Head(nn.Module):
    """The example layer, then (its first output if a tuple) flattened into a Linear: three
    classes for a cross-entropy loss."""

    def __init__(self, layer: nn.Module, shape: tuple[int, ...]):
        super().__init__()
        self.layer = layer
        with torch.no_grad():
            out = self._body(torch.zeros(2, *shape))
        self.fc = nn.Linear(out.shape[1], 3)

    def _body(self, x: Tensor) -> Tensor:
        out = self.layer(x)
        out = out[0] if isinstance(out, tuple) else out
        return torch.tanh(out).reshape(x.shape[0], -1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self._body(x))


def test_every_registered_type_has_an_example():
    ours = {t for table in (registry._RULES, registry._REPLAYS) for t, entry in table.items()
            if (entry[0] if isinstance(entry, tuple) else entry).__module__.startswith(
                rules.__name__)}
    assert {nn.Linear, nn.Conv2d, nn.GroupNorm, nn.LSTM, nn.MultiheadAttention} <= ours
    covered = {type(m) for _, _, layer, _ in EXAMPLES for m in layer.modules()}
    missing = sorted(t.__name__ for t in ours if not any(issubclass(c, t) for c in covered))
    assert not missing, f"no examples() entry in gradkit/grads/rules/ for {missing}"
    assert len(EXAMPLES) >= 10


@pytest.mark.parametrize(("file", "i", "layer", "shape"), EXAMPLES,
                         ids=[f"{f}-{i}" for f, i, _, _ in EXAMPLES])
def test_every_form_of_every_example_equals_the_loop(file, i, layer, shape):
    torch.manual_seed(0)
    for p in layer.parameters():  # away from an initialisation with zeros (a prompt, a norm)
        p.data.add_(0.3 * torch.randn_like(p))
    model = Head(layer, shape).double().eval()
    x, y = torch.randn(5, *shape, dtype=torch.float64), torch.tensor([0, 1, 2, 1, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        G = per_sample_grads(model, F.cross_entropy, x, y, method="loop")
    got = per_sample_grads(model, F.cross_entropy, x, y, method="layers")  # raises: no rule
    torch.testing.assert_close(got, G, rtol=1e-5, atol=1e-8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the Gram path takes every layer itself: no fallback
        K = gradient_gram(model, F.cross_entropy, x, y)
        norms = per_sample_norms(model, F.cross_entropy, x, y)
    torch.testing.assert_close(K, G @ G.T, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(norms, G.norm(dim=1), rtol=1e-5, atol=1e-8)
