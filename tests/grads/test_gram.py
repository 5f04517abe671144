"""gradient_gram / per_sample_norms / gradient_sketch against the materialised per_sample_grads on
the shared problem grid (test_engine's cases, test_foreign_models' patterns, every conv shape),
each layer form forced both ways (ghost and materialised), and the fallbacks."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_engine import CASES, Scale
from test_foreign_models import Attention, Flattened, LSTMNet, Tied, TimeMajor, seq
from torch import nn

import gradkit.grads.gramsink as S
from gradkit.grads import gradient_gram, gradient_sketch, per_sample_grads, per_sample_norms
from gradkit.stats import paired_t


def ce(out, y):
    return F.cross_entropy(out, y)


def materialised(model, loss_fn, x, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return per_sample_grads(model, loss_fn, x, y, method="loop").double()


def assert_gram(K, G):
    want = G @ G.T
    torch.testing.assert_close(K, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))


def assert_norms(got, G):
    want = G.norm(dim=1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.max()))


def statistics(model, loss_fn, x, y, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        K = gradient_gram(model, loss_fn, x, y, **kw)
        norms = per_sample_norms(model, loss_fn, x, y, **kw)
    assert all(w.filename == __file__ for w in caught), [w.filename for w in caught]  # our line
    return K, norms, [str(w.message) for w in caught]


@pytest.fixture(params=["cost model", "ghost", "materialised", "blocked"])
def form(request, monkeypatch):
    """Each layer form forced: the ghost one, the materialised one (one block), or the
    materialised one in blocks of one sample (a budget of a few bytes)."""
    if request.param == "ghost":
        monkeypatch.setattr(S, "ghost_cheaper", lambda *a, **k: True)
    elif request.param in ("materialised", "blocked"):
        monkeypatch.setattr(S, "ghost_cheaper", lambda *a, **k: False)
    return {"budget": 8} if request.param == "blocked" else {}


@pytest.mark.parametrize("case", list(CASES))
def test_gram_and_norms_equal_the_materialised_ones_on_the_engine_cases(case, form, request):
    if case.startswith("ranker") and request.node.callspec.params["form"] in ("ghost", "blocked"):
        pytest.skip("the ranker's convs in these forms: covered by the conv grid (seconds each)")
    model, loss_fn, x, y = CASES[case]
    G = materialised(model, loss_fn, x, y)
    K, norms, msgs = statistics(model, loss_fn, x, y, **form)
    assert_gram(K, G)
    assert_norms(norms, G)
    assert not msgs
    assert K.dtype == torch.float64 and K.shape == (G.shape[0],) * 2


@pytest.mark.parametrize("conv", [
    nn.Conv2d(6, 4, 1, stride=(2, 3)),
    nn.Conv1d(6, 4, 1, stride=2, bias=False),
    nn.Conv2d(6, 4, 1, padding=1),
    nn.Conv2d(6, 4, 1, groups=2),
    nn.Conv2d(2, 6, 3, stride=2, groups=2),
    nn.Conv2d(6, 6, (3, 2), padding=1, dilation=(1, 2), groups=6),
    nn.Conv2d(1, 5, 3, padding=1),
    nn.Conv2d(1, 4, (3, 2), stride=(2, 3), padding=(1, 2), dilation=(2, 1)),
    nn.Conv1d(1, 6, 3, stride=2, dilation=2),
    nn.Conv1d(4, 6, 4, stride=2, padding=3, groups=2),
    nn.Conv3d(2, 3, 2, stride=(1, 2, 1)),
], ids=lambda c: repr(c))
def test_every_conv_shape_in_every_form(conv, form):
    torch.manual_seed(4)
    before = type(conv)(conv.in_channels, conv.in_channels, 1, bias=False)
    model = nn.Sequential(before, nn.Tanh(), conv, nn.Flatten(), nn.LazyLinear(3))
    x = torch.randn(5, conv.in_channels, *([7, 9, 4][: conv.weight.dim() - 2]))
    model(x)
    model.eval()
    y = torch.randint(0, 3, (5,))
    G = materialised(model, ce, x, y)
    K, norms, msgs = statistics(model, ce, x, y, **form)
    assert_gram(K, G)
    assert_norms(norms, G)
    assert not msgs


class Sequence(nn.Module):
    """Linear layers on 3-D and 4-D inputs (positions between samples and features): the bias
    gradient sums over the positions (Opacus's wrong bias norm for 3-D inputs, its PR 751)."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Linear(5, 6), nn.Linear(6, 6), nn.Linear(6, 3)

    def forward(self, x):  # [N, T, 5]
        h = torch.tanh(self.a(x))
        h = torch.tanh(self.b(h.reshape(h.shape[0], 1, h.shape[1], 6)))  # [N, 1, T, 6]
        return self.head(h.mean((1, 2)))


class CrossAttention(nn.Module):
    """Attention whose projections the replay hands over in parts: key is value but not query
    (``same``), or key and value of another width (``kdim``), with ``bias_k``/``bias_v``."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        kw = dict(kdim=3, vdim=3) if kind == "kdim" else dict(add_bias_kv=True)
        self.att, self.head = nn.MultiheadAttention(5, 1, batch_first=True, **kw), nn.Linear(5, 3)

    def forward(self, x):
        kv = x[..., :3] * 2 if self.kind == "kdim" else torch.tanh(x)
        return self.head(self.att(x, kv, kv, need_weights=False)[0].mean(1))


@pytest.mark.parametrize("build", [
    Sequence, TimeMajor, lambda: Attention(False), lambda: Attention(True),
    lambda: CrossAttention("same"), lambda: CrossAttention("kdim"),
    lambda: LSTMNet(True), lambda: LSTMNet(False),
    lambda: nn.Sequential(
        nn.TransformerEncoder(nn.TransformerEncoderLayer(5, 1, 8, dropout=0.0, batch_first=True),
                              2, enable_nested_tensor=False), nn.Flatten(), nn.Linear(35, 3)),
], ids=["sequence_linear", "time_major", "attention", "attention_frozen_in",
        "cross_attention", "cross_attention_kdim", "lstm",
        "lstm_time_major", "transformer_encoder"])
def test_sequence_models_in_every_form(build, form):
    torch.manual_seed(0)
    model = build().eval()
    x, y = seq(6, c=4 if isinstance(model, Attention) else 5)
    G = materialised(model, ce, x, y)
    K, norms, msgs = statistics(model, ce, x, y, **form)
    assert_gram(K, G)
    assert_norms(norms, G)
    assert not msgs


def test_a_shared_module_and_a_chunked_norm():
    torch.manual_seed(3)
    lin = nn.Linear(4, 4)
    model = nn.Sequential(lin, nn.Tanh(), lin, nn.Tanh(), nn.Linear(4, 3)).eval()
    x, y = torch.randn(7, 4), torch.randint(0, 3, (7,))
    G = materialised(model, ce, x, y)
    assert_gram(gradient_gram(model, ce, x, y), G)
    assert_norms(per_sample_norms(model, ce, x, y, chunk_size=3), G)


class First(nn.Module):
    def forward(self, out):
        return out[0][:, -1]


@pytest.mark.parametrize("build, names", [
    (Flattened, ["'proj'", "proj.weight"]),
    (Tied, ["'enc'", "enc.weight"]),
    (lambda: nn.Sequential(nn.LSTM(5, 12, batch_first=True, proj_size=6), First(), nn.Linear(6, 3)),
     ["'0'", "proj_size", "0.weight_ih_l0"]),
    (lambda: nn.Sequential(nn.Linear(5, 3), Scale()), ["'1'", "1.s"]),
], ids=["flattened", "tied", "lstm_projection", "unknown_layer"])
def test_what_the_pass_cannot_take_falls_back_exactly_naming_the_module(build, names):
    torch.manual_seed(1)
    model = build().eval()
    if isinstance(model[0] if isinstance(model, nn.Sequential) else model, nn.Linear):
        x, y = torch.randn(6, 5), torch.randint(0, 3, (6,))
    else:
        x, y = seq(6)
    G = materialised(model, ce, x, y)
    K, norms, msgs = statistics(model, ce, x, y)
    assert_gram(K, G)
    assert_norms(norms, G)
    assert any(all(s in m for s in names) for m in msgs), msgs


def test_only_the_fallback_parameters_are_materialised(monkeypatch):
    import gradkit.grads.gram as gram

    seen = []

    def spy(model, *a, **k):
        seen.append([n for n, p in model.named_parameters() if p.requires_grad])
        return per_sample_grads(model, *a, **k)

    monkeypatch.setattr(gram, "per_sample_grads", spy)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 3), Scale()).eval()
    x, y = torch.randn(6, 5), torch.randint(0, 3, (6,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gradient_gram(model, ce, x, y)
    assert seen == [["1.s"]]
    assert all(p.requires_grad for p in model.parameters())  # restored


def test_by_layer_blocks_sum_to_the_gram():
    model, loss_fn, x, y = CASES["cnn"]
    blocks = gradient_gram(model, loss_fn, x, y, by_layer=True)
    assert list(blocks) == [n for n, p in model.named_parameters() if p.requires_grad]
    torch.testing.assert_close(sum(blocks.values()), gradient_gram(model, loss_fn, x, y))
    G = materialised(model, loss_fn, x, y)
    start = 0
    for name, p in model.named_parameters():
        g = G[:, start : start + p.numel()]
        assert_gram(blocks[name], g)
        start += p.numel()


def test_a_broken_rule_fails_the_consistency_check(monkeypatch):
    """The check compares the probed sample's gradient row from the pass with plain autograd."""
    import gradkit.grads.rules.registry as L
    from gradkit.grads.learned import forget

    rule, params = L._RULES[nn.LayerNorm]
    monkeypatch.setitem(L._RULES, nn.LayerNorm, (lambda m, a, d: {
        k: 2 * v for k, v in rule(m, a, d).items()}, params))
    model = nn.Sequential(nn.Linear(5, 4), nn.LayerNorm(4), nn.Linear(4, 3)).eval()
    forget(model)
    x, y = torch.randn(6, 5), torch.randint(0, 3, (6,))
    with pytest.raises(RuntimeError, match="consistency check failed.*1.weight"):
        gradient_gram(model, ce, x, y)


def test_bad_arguments_are_named():
    model, x, y = nn.Linear(3, 2), torch.randn(4, 3), torch.tensor([0, 1, 1, 0])
    with pytest.raises(ValueError, match="budget"):
        gradient_gram(model, ce, x, y, budget=-1)
    with pytest.raises(ValueError, match="chunk_size"):
        per_sample_norms(model, ce, x, y, chunk_size=0)
    with pytest.raises(ValueError, match="sketch dimension"):
        gradient_sketch(model, ce, x, y, k=0)


# --- sketches --------------------------------------------------------------------------------
def test_attention_sketch_from_its_projections_parts():
    torch.manual_seed(0)
    model = CrossAttention("same").eval()
    x, y = seq(6)
    G = materialised(model, ce, x, y)
    want = _sketch_of(_per_parameter_rows(model, G), 36, 2)
    got = gradient_sketch(model, ce, x, y, k=36, seed=2)
    torch.testing.assert_close(got.double(), want.double(), rtol=1e-5,
                               atol=1e-5 * float(want.abs().max()))


def test_sketch_is_seeded_chunk_invariant_and_never_materialises_a_linear_layer(monkeypatch):
    model, loss_fn, x, y = CASES["bn_frozen"]
    a = gradient_sketch(model, loss_fn, x, y, k=24, seed=3)
    torch.testing.assert_close(a, gradient_sketch(model, loss_fn, x, y, k=24, seed=3,
                                                  chunk_size=4), rtol=1e-5, atol=1e-6)
    assert a.shape == (6, 24)
    assert not torch.allclose(a, gradient_sketch(model, loss_fn, x, y, k=24, seed=4))
    import gradkit.grads.rules.registry as L

    calls = []
    rule, params = L._RULES[nn.Linear]
    monkeypatch.setitem(L._RULES, nn.Linear, (lambda m, a_, d: calls.append(a_.shape[0]) or
                                              rule(m, a_, d), params))
    gradient_sketch(model, loss_fn, x, y, k=24, seed=3, check=False)
    assert calls == []  # the Kronecker form from (A, B): no per-sample Linear gradient


def _per_parameter_rows(model, G):
    out, start = {}, 0
    for i, (_, p) in enumerate(p for p in model.named_parameters() if p[1].requires_grad):
        out[i] = G[:, start : start + p.numel()].reshape(G.shape[0], *p.shape).float()
        start += p.numel()
    return out


def _sketch_of(rows, k, seed):
    from gradkit.grads.gramsink import reduce_rows
    from gradkit.grads.sketch import param_seed

    return sum(reduce_rows(g, "sketch", k, param_seed(seed, i)) for i, g in rows.items())


@pytest.mark.parametrize("case", ["cnn", "bn_frozen"])
def test_the_pass_sketches_the_true_gradients(case):
    """gradient_sketch is exactly the per-parameter projections of the materialised gradients
    (the Kronecker form of a Linear layer from its input and output gradient included)."""
    model, loss_fn, x, y = CASES[case]
    G = materialised(model, loss_fn, x, y)
    want = _sketch_of(_per_parameter_rows(model, G), 36, 5)
    got = gradient_sketch(model, loss_fn, x, y, k=36, seed=5)
    torch.testing.assert_close(got.double(), want.double(), rtol=1e-5,
                               atol=1e-5 * float(want.abs().max()))


def test_sketch_inner_products_are_unbiased():
    """Over S seeds, the mean of ``s_i · s_j`` minus ``K_ij`` has a paired-t interval containing 0
    for every pair (Bonferroni over the pairs): no bias is detectable, while the same test
    does detect a bias of 30 % of the spread's scale (its power check). The projections are
    those of the pass (test above), applied to the materialised gradients."""
    model, loss_fn, x, y = CASES["cnn"]
    G = materialised(model, loss_fn, x, y)
    K = (G @ G.T).numpy()
    rows = _per_parameter_rows(model, G)
    seeds = 60
    est = np.stack([(s @ s.T).double().numpy() for s in (
        _sketch_of(rows, 64, i) for i in range(seeds))])
    iu = np.triu_indices(K.shape[0])
    diffs = (est - K)[:, iu[0], iu[1]].T  # [pairs, seeds]
    alpha = 0.01 / diffs.shape[0]
    res = paired_t(diffs, alpha=alpha)
    assert np.all((res.ci_low <= 0) & (res.ci_high >= 0)), res.mean
    scale = np.sqrt(np.outer(np.diag(K), np.diag(K)))[iu]
    biased = paired_t(diffs + 0.3 * scale[:, None], alpha=alpha)
    assert np.mean(biased.ci_low > 0) > 0.5


def test_sketch_error_shrinks_with_k():
    model, loss_fn, x, y = CASES["mlp"]
    G = materialised(model, loss_fn, x, y)
    K = G @ G.T

    rows = _per_parameter_rows(model, G)

    def error(k):
        errs = [float(((s @ s.T).double() - K).norm() / K.norm()) for s in (
            _sketch_of(rows, k, i) for i in range(8))]
        return float(np.mean(errs))

    e4, e64, e1024 = error(4), error(64), error(1024)
    assert e1024 < e64 < e4
    assert e1024 < 0.25
