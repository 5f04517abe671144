"""gradkit.grads.rules.attention.mha_replay against per-sample autograd through the real module."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.graph import get_gradient_edge

from gradkit.grads.rules.attention import mha_replay

DT = torch.float64
RTOL = 1e-5


def collector():
    got: dict[str, torch.Tensor] = {}

    def store(d):
        for k, v in d.items():
            got[k] = got[k] + v if k in got else v

    return got, store


def rel(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def check(m, args, kwargs, sd, *, frozen=()):
    """Replay vs the real module: output, input grads, per-sample grads of trainable params.

    Per-sample loss ``l_i = Σ out[i]·R[i] (+ Σ weights[i]·Rw[i])``; the reference gradient of each
    ``l_i`` is one ``torch.autograd.grad`` call through the real module's batched forward."""
    for name in frozen:
        m.get_parameter(name).requires_grad_(False)
    params = {k: p for k, p in m.named_parameters() if p.requires_grad}
    ref_out, ref_w = m(*args, **kwargs)
    got, store = collector()
    res = mha_replay(m, args, kwargs, sd, store)
    assert not isinstance(res, str), res
    (out, w), edges = res
    assert out.shape == ref_out.shape and torch.allclose(out, ref_out, atol=1e-10)
    assert (w is None) == (ref_w is None)
    if w is not None:
        assert w.shape == ref_w.shape and torch.allclose(w, ref_w, atol=1e-10)
    n = out.shape[sd]
    g = torch.Generator().manual_seed(1)
    R = torch.randn(out.shape, generator=g, dtype=DT)
    Rw = None if w is None else torch.randn(w.shape, generator=g, dtype=DT)

    def losses(o, ww):
        per = (o * R).sum(dim=tuple(d for d in range(o.dim()) if d != sd))
        return per if ww is None else per + (ww * Rw).flatten(1).sum(1)

    inputs = [t for t in dict.fromkeys(a for a in args[:3] if isinstance(a, torch.Tensor))
              if t.requires_grad]
    grads = torch.autograd.grad(losses(out, w).sum(), [get_gradient_edge(t) for t in edges]
                                + inputs)
    ref_l = losses(ref_out, ref_w)
    ref_in = torch.autograd.grad(ref_l.sum(), inputs, retain_graph=True) if inputs else ()
    for a, b in zip(grads[len(edges):], ref_in, strict=True):
        assert rel(a, b) < RTOL
    ref = {k: [] for k in params}
    for i in range(n):
        gi = torch.autograd.grad(ref_l[i], list(params.values()), retain_graph=True)
        for k, t in zip(params, gi, strict=True):
            ref[k].append(t)
    assert set(got) == set(params), (set(got), set(params))
    for k in params:
        r = torch.stack(ref[k])
        assert got[k].shape == r.shape, k
        assert rel(got[k], r) < RTOL, (k, rel(got[k], r))
    return got


def mha(E=8, H=2, bf=True, **kw):
    torch.manual_seed(0)
    m = nn.MultiheadAttention(E, H, batch_first=bf, dtype=DT, **kw).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))  # nonzero biases (bias_k/v, in_proj_bias start 0)
    return m


def seq(n, T, E, bf, grad=True):
    x = torch.randn((n, T, E) if bf else (T, n, E), dtype=DT)
    return x.requires_grad_(grad)


def kpm_for(n, S):
    k = torch.zeros(n, S, dtype=torch.bool)
    for i in range(n):
        k[i, S - 1 - (i % max(S - 1, 1)) :] = True  # ragged lengths, never all padded
    return k


@pytest.mark.parametrize("bf", [True, False])
@pytest.mark.parametrize("need_weights", [True, False])
def test_self_attention_kpm(bf, need_weights):
    m, x = mha(bf=bf), seq(3, 5, 8, bf)
    check(m, (x, x, x), dict(key_padding_mask=kpm_for(3, 5), need_weights=need_weights),
          0 if bf else 1)


@pytest.mark.parametrize("bf", [True, False])
def test_time_equals_samples(bf):  # T == N: an axis mix-up would not change any shape
    m, x = mha(bf=bf), seq(4, 4, 8, bf)
    check(m, (x, x, x), dict(key_padding_mask=kpm_for(4, 4), need_weights=False), 0 if bf else 1)


@pytest.mark.parametrize("bf", [True, False])
@pytest.mark.parametrize("same_kv", [True, False])
def test_cross_attention(bf, same_kv):
    m, q, k = mha(bf=bf), seq(3, 4, 8, bf), seq(3, 6, 8, bf)
    v = k if same_kv else seq(3, 6, 8, bf)
    check(m, (q, k, v), dict(key_padding_mask=kpm_for(3, 6)), 0 if bf else 1)


@pytest.mark.parametrize("bf", [True, False])
def test_kdim_vdim(bf):
    m = mha(bf=bf, kdim=5, vdim=7)
    q, k, v = seq(3, 4, 8, bf), seq(3, 6, 5, bf), seq(3, 6, 7, bf)
    got = check(m, (q, k, v), dict(need_weights=False), 0 if bf else 1)
    assert {"q_proj_weight", "k_proj_weight", "v_proj_weight"} <= set(got)


def test_kdim_vdim_no_bias_kpm_weights():
    m = mha(bf=False, kdim=5, vdim=5, bias=False)
    q, k = seq(2, 4, 8, False), seq(2, 6, 5, False)
    check(m, (q, k, k), dict(key_padding_mask=kpm_for(2, 6), average_attn_weights=False), 1)


@pytest.mark.parametrize("self_attn", [True, False])
def test_no_bias(self_attn):
    m, x = mha(bias=False), seq(3, 5, 8, True)
    k = x if self_attn else seq(3, 6, 8, True)
    got = check(m, (x, k, k), {}, 0)
    assert "in_proj_bias" not in got and "out_proj.bias" not in got


@pytest.mark.parametrize("bf", [True, False])
@pytest.mark.parametrize("need_weights", [True, False])
def test_bias_kv_masks(bf, need_weights):
    m, x = mha(bf=bf, add_bias_kv=True), seq(3, 5, 8, bf)
    am = torch.triu(torch.ones(5, 5, dtype=torch.bool), 1)
    check(m, (x, x, x), dict(key_padding_mask=kpm_for(3, 5), attn_mask=am,
                             need_weights=need_weights), 0 if bf else 1)


@pytest.mark.parametrize("need_weights", [True, False])
def test_add_zero_attn_bias_kv(need_weights):
    m, q, k = mha(add_bias_kv=True, add_zero_attn=True), seq(3, 4, 8, True), seq(3, 6, 8, True)
    check(m, (q, k, k), dict(key_padding_mask=kpm_for(3, 6), need_weights=need_weights), 0)


@pytest.mark.parametrize("kind", ["bool", "float"])
@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("need_weights", [True, False])
@pytest.mark.parametrize("with_kpm", [True, False])
def test_attn_mask(kind, dim, need_weights, with_kpm):
    n, H, L, S = 3, 2, 4, 6
    m, q, k = mha(H=H, bf=False), seq(n, L, 8, False), seq(n, S, 8, False)
    torch.manual_seed(3)
    shape = (L, S) if dim == 2 else (n * H, L, S)
    if kind == "bool":
        am = torch.rand(shape) < 0.3
        am[..., 0] = False  # every query sees key 0
    else:
        am = torch.randn(shape, dtype=DT)
    kpm = kpm_for(n, S) if with_kpm else None
    check(m, (q, k, k), dict(attn_mask=am, key_padding_mask=kpm, need_weights=need_weights), 1)


@pytest.mark.parametrize("need_weights", [True, False])
@pytest.mark.parametrize("with_kpm", [True, False])
@pytest.mark.parametrize("bias_kv", [True, False])
def test_is_causal(need_weights, with_kpm, bias_kv):
    m, x = mha(add_bias_kv=bias_kv), seq(3, 5, 8, True)
    am = nn.Transformer.generate_square_subsequent_mask(5, dtype=DT)
    kpm = kpm_for(3, 5) if with_kpm else None
    check(m, (x, x, x), dict(attn_mask=am, is_causal=True, key_padding_mask=kpm,
                             need_weights=need_weights), 0)


def test_float_kpm_keywords_only():
    m, x = mha(bf=False), seq(3, 5, 8, False)
    kpm = torch.randn(3, 5, dtype=DT)
    check(m, (), dict(query=x, key=x, value=x, key_padding_mask=kpm, need_weights=True,
                      average_attn_weights=False), 1)


@pytest.mark.parametrize("self_attn", [True, False])
def test_inputs_without_grad(self_attn):  # first layer: the graph starts at the replay's leaves
    m, x = mha(add_bias_kv=True), seq(3, 5, 8, True, grad=False)
    k = x if self_attn else seq(3, 6, 8, True, grad=False)
    check(m, (x, k, k), dict(need_weights=False), 0)


@pytest.mark.parametrize("frozen", [("in_proj_weight", "in_proj_bias"), ("in_proj_weight",),
                                    ("out_proj.weight", "out_proj.bias", "bias_k")])
@pytest.mark.parametrize("x_grad", [True, False])
def test_frozen(frozen, x_grad):
    m, x = mha(add_bias_kv=True), seq(3, 5, 8, True, grad=x_grad)
    got = check(m, (x, x, x), dict(key_padding_mask=kpm_for(3, 5)), 0, frozen=frozen)
    assert not set(frozen) & set(got)


def test_training_without_dropout():
    m, x = mha(), seq(3, 5, 8, True)
    check(m.train(), (x, x, x), {}, 0)


def test_refusals():
    m, x = mha(), seq(3, 5, 8, True)
    store = collector()[1]
    assert isinstance(mha_replay(m, (x[0], x[0], x[0]), {}, 0, store), str)  # unbatched
    assert isinstance(mha_replay(m, (x, x, x), {}, 1, store), str)  # sample_dim vs batch_first
    assert isinstance(mha_replay(mha(bf=False), (x, x, x), {}, 0, store), str)
    k = seq(4, 5, 8, True)
    assert isinstance(mha_replay(m, (x, k, k), {}, 0, store), str)  # sample counts differ
    assert isinstance(mha_replay(m, (x, x, seq(3, 6, 8, True)), {}, 0, store), str)
    drop = nn.MultiheadAttention(8, 2, dropout=0.1, batch_first=True, dtype=DT).train()
    assert isinstance(mha_replay(drop, (x, x, x), {}, 0, store), str)
    assert not isinstance(mha_replay(drop.eval(), (x, x, x), {}, 0, store), str)
    assert isinstance(mha_replay(m, (x, x, x), dict(is_causal=True), 0, store), str)
    assert isinstance(mha_replay(m, (x, x, x), dict(bogus=1), 0, store), str)
    assert isinstance(mha_replay(m, (x, x, x), dict(query=x), 0, store), str)
    assert isinstance(mha_replay(nn.Linear(8, 8), (x, x, x), {}, 0, store), str)
    assert isinstance(mha_replay(m, (x.float(), x.float(), x.float()), {}, 0, store), str)


def test_no_reference_cycle():
    m, x = mha(), seq(3, 5, 8, True)
    gc.collect()
    gc.disable()
    try:
        got, store = collector()
        (out, _), edges = mha_replay(m, (x, x, x), {}, 0, store)
        ref = weakref.ref(out)
        torch.autograd.grad(out.square().sum(), [get_gradient_edge(t) for t in edges])
        assert set(got) == {k for k, _ in m.named_parameters()}
        del out, edges
        assert ref() is None
    finally:
        gc.enable()


@pytest.mark.parametrize("masks", ["none", "kpm", "causal_kpm", "causal"])
def test_transformer_encoder(masks):
    """Forward hooks on each layer's self_attn replace its output by the replay."""
    torch.manual_seed(0)
    n, T, C, K = 4, 6, 16, 3
    layer = nn.TransformerEncoderLayer(C, 4, 32, dropout=0.0, batch_first=True, dtype=DT)
    enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    head = nn.Linear(C, K, dtype=DT)
    x, y = torch.randn(n, T, C, dtype=DT), torch.randint(0, K, (n,))
    kpm = kpm_for(n, T) if "kpm" in masks else None
    causal = "causal" in masks
    mask = nn.Transformer.generate_square_subsequent_mask(T, dtype=DT) if causal else None

    def model(xb, kb):
        h = enc(xb, mask=mask, src_key_padding_mask=kb, is_causal=causal)
        return head(h.mean(1))

    attns = [lay.self_attn for lay in enc.layers]
    ref = {i: [] for i in range(2)}
    for j in range(n):  # the reference: one sample at a time through the real model
        loss = F.cross_entropy(model(x[j : j + 1], None if kpm is None else kpm[j : j + 1]),
                               y[j : j + 1])
        for i, a in enumerate(attns):
            ref[i].append(torch.autograd.grad(loss, list(a.parameters()), retain_graph=True))

    stores, edges = [collector() for _ in attns], []

    def make_hook(i):
        def hook(mod, args, kwargs, output):
            res = mha_replay(mod, args, kwargs, 0, stores[i][1])
            assert not isinstance(res, str), res
            edges.extend(res[1])
            assert torch.allclose(res[0][0], output[0], atol=1e-10)
            return res[0]
        return hook

    handles = [a.register_forward_hook(make_hook(i), with_kwargs=True)
               for i, a in enumerate(attns)]
    try:
        loss = F.cross_entropy(model(x, kpm), y, reduction="sum")
        torch.autograd.grad(loss, [get_gradient_edge(t) for t in edges])
    finally:
        for h in handles:
            h.remove()
    for i, a in enumerate(attns):
        got = stores[i][0]
        for k, (name, _) in enumerate(a.named_parameters()):
            r = torch.stack([g[k] for g in ref[i]])
            assert rel(got[name], r) < RTOL, (i, name)
