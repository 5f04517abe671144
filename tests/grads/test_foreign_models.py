"""per_sample_grads on models not shaped by gradkit: every pattern that once went silently wrong
is now exact against a per-sample autograd loop (1e-5 relative) or a clear error naming the
module; the fallbacks warn; auto survives vmap failures; the conv cost model picks the path."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradkit.grads import per_sample_grads
from gradkit.grads.rules import conv as C
from gradkit.grads.rules import registry as L


def loop(model, loss_fn, x, y):
    """The definition, written out: one autograd call per sample (tuple inputs row by row)."""
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    n = (x[0] if isinstance(x, tuple) else x).shape[0]
    for i in range(n):
        xi = tuple(t[i : i + 1] for t in x) if isinstance(x, tuple) else x[i : i + 1]
        g = torch.autograd.grad(loss_fn(model(xi), y[i : i + 1]), params, allow_unused=True)
        rows.append(torch.cat([(gi if gi is not None else torch.zeros_like(p)).flatten()
                               for gi, p in zip(g, params, strict=True)]))
    return torch.stack(rows)


def ce(out, y):
    return F.cross_entropy(out, y)


def assert_exact(got, want):
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6 * float(want.abs().max()))


def run(model, x, y, method="auto", **kw):
    """per_sample_grads with its warnings recorded -> (G, [warning messages])."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        g = per_sample_grads(model, ce, x, y, method=method, **kw)
    return g, [str(w.message) for w in caught]


class TimeMajor(nn.Module):
    """A Linear on ``[T, N, C]`` (as inside torchaudio's Conformer), then a head on the mean."""

    def __init__(self):
        super().__init__()
        self.proj, self.head = nn.Linear(5, 6), nn.Linear(6, 3)

    def forward(self, x):  # x: [N, T, C]
        return self.head(torch.tanh(self.proj(x.transpose(0, 1))).mean(0))


class Flattened(nn.Module):
    """A Linear on the ``[N·T, C]`` view of ``[N, T, C]``."""

    def __init__(self):
        super().__init__()
        self.proj, self.head = nn.Linear(5, 6), nn.Linear(6, 3)

    def forward(self, x):
        n, t, c = x.shape
        return self.head(torch.tanh(self.proj(x.reshape(n * t, c))).reshape(n, t, -1).mean(1))


class Tied(nn.Module):
    """An encoder whose weight is reused, transposed, outside its call (a tied decoder)."""

    def __init__(self):
        super().__init__()
        self.enc, self.head = nn.Linear(5, 4), nn.Linear(5, 3)

    def forward(self, x):
        h = torch.tanh(self.enc(x.mean(1)))
        return self.head(F.linear(h, self.enc.weight.t()))


class Attention(nn.Module):
    """nn.MultiheadAttention; ``frozen_in`` freezes in_proj (then only out_proj is trainable)."""

    def __init__(self, frozen_in: bool):
        super().__init__()
        self.att, self.head = nn.MultiheadAttention(4, 2, batch_first=True), nn.Linear(4, 3)
        self.att.in_proj_weight.requires_grad_(not frozen_in)
        self.att.in_proj_bias.requires_grad_(not frozen_in)

    def forward(self, x):
        return self.head(self.att(x, x, x, need_weights=False)[0].mean(1))


def seq(n, t=7, c=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, t, c, generator=g), torch.randint(0, 3, (n,), generator=g)


@pytest.mark.parametrize("n", [5, 7])  # T = 7: T != N and T == N
@pytest.mark.parametrize("method", ["auto", "layers"])
def test_time_major_linear_is_exact_in_the_layers_pass_without_a_fallback(n, method):
    torch.manual_seed(0)
    model, (x, y) = TimeMajor(), seq(n)
    g, msgs = run(model, x, y, method=method)
    assert_exact(g, loop(model, ce, x, y))
    assert not msgs  # the samples were found on dim 1 and moved to dim 0 for the Linear rule


def test_a_dim0_rule_seeing_samples_on_another_dim_is_rejected_naming_it():
    from gradkit.grads.layerpass import _layout
    from gradkit.grads.reference import Reference

    conv = nn.Conv1d(5, 6, 3, padding=1)
    ref = Reference(1, {conv: [((7, 5, 1), (7, 6, 1))]}, None)
    dim, why = _layout(ref, conv, 0, torch.Size([7, 5, 4]), torch.Size([7, 6, 4]), 4)
    assert dim is None and "dim 2" in why and "needs them on dim 0" in why
    assert _layout(ref, conv, 1, torch.Size([7, 5, 4]), torch.Size([7, 6, 4]), 4)[0] is None
    lin = nn.Linear(5, 6)
    ref = Reference(1, {lin: [((7, 1, 5), (7, 1, 6))]}, None)
    assert _layout(ref, lin, 0, torch.Size([7, 7, 5]), torch.Size([7, 7, 6]), 7) == (1, None)


@pytest.mark.parametrize("n", [5, 7])  # T = 7: T != N and T == N
@pytest.mark.parametrize("cls", [Flattened, Tied])
def test_layout_and_tied_patterns_are_exact_with_a_warning_naming_the_module(cls, n):
    torch.manual_seed(0)
    model, (x, y) = cls(), seq(n)
    g, msgs = run(model, x, y)
    assert_exact(g, loop(model, ce, x, y))
    name = "enc" if cls is Tied else "proj"
    assert any(f"'{name}'" in m for m in msgs), msgs
    with pytest.raises(ValueError, match=f"'{name}'"):
        per_sample_grads(model, ce, x, y, method="layers")


class Functional(nn.Module):
    """A Linear that is never called: its parameters are applied by ``F.linear`` (as
    ``nn.MultiheadAttention`` applies its ``out_proj``)."""

    def __init__(self):
        super().__init__()
        self.proj, self.head = nn.Linear(5, 6), nn.Linear(6, 3)

    def forward(self, x):
        return self.head(torch.tanh(F.linear(x.mean(1), self.proj.weight, self.proj.bias)))


def test_reasons_say_what_failed():
    x, y = seq(7)
    for model, why in [(Flattened(), "flattened"), (Tied(), "outside its call"),
                       (Functional(), "never called")]:
        g, msgs = run(model, x, y)
        assert any(why in m for m in msgs), (type(model).__name__, msgs)
        assert_exact(g, loop(model, ce, x, y))


@pytest.mark.parametrize("method", ["auto", "layers"])
@pytest.mark.parametrize("frozen_in", [True, False])
def test_multihead_attention_is_exact_in_the_layers_pass(frozen_in, method):
    """The attention replay covers in_proj and the functionally applied out_proj alike."""
    torch.manual_seed(0)
    model, (x, y) = Attention(frozen_in), seq(12, c=4)
    g, msgs = run(model, x, y, method=method)
    want = loop(model, ce, x, y)
    assert_exact(g, want)
    assert not msgs
    assert float(g[:, :16].abs().max()) > 0 if frozen_in else True  # out_proj.weight comes first


def test_transformer_encoder_is_exact():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(4, 2, 8, dropout=0.0, batch_first=True)
    model = nn.Sequential(nn.TransformerEncoder(layer, 2, enable_nested_tensor=False),
                          nn.Flatten(), nn.Linear(28, 3)).eval()
    x, y = seq(10, c=4)
    assert_exact(run(model, x, y)[0], loop(model, ce, x, y))


class LSTMNet(nn.Module):
    """A 2-layer bidirectional LSTM (batch first or time major), a head on the last step."""

    def __init__(self, batch_first: bool):
        super().__init__()
        self.batch_first = batch_first
        self.rnn = nn.LSTM(5, 6, 2, batch_first=batch_first, bidirectional=True)
        self.head = nn.Linear(12, 3)

    def forward(self, x):  # x: [N, T, C]
        out = self.rnn(x if self.batch_first else x.transpose(0, 1))[0]
        return self.head(out[:, -1] if self.batch_first else out[-1])


@pytest.mark.parametrize("n", [5, 7, 16])  # T = 7: T == N once
@pytest.mark.parametrize("batch_first", [True, False])
def test_lstm_is_exact_in_the_layers_pass(batch_first, n):
    torch.manual_seed(0)
    model, (x, y) = LSTMNet(batch_first), seq(n)
    for method in ("auto", "layers"):
        g, msgs = run(model, x, y, method=method)
        assert_exact(g, loop(model, ce, x, y))
        assert not msgs


def test_lstm_with_projection_falls_back_naming_it():
    torch.manual_seed(0)
    model, (x, y) = LSTMNet(True), seq(9)
    model.rnn = nn.LSTM(5, 12, batch_first=True, proj_size=6)
    model.head = nn.Linear(6, 3)
    g, msgs = run(model, x, y)
    assert_exact(g, loop(model, ce, x, y))
    assert any("'rnn'" in m and "proj_size" in m for m in msgs), msgs
    with pytest.raises(ValueError, match="proj_size"):
        per_sample_grads(model, ce, x, y, method="layers")


class GRUNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn, self.head = nn.GRU(5, 6, batch_first=True), nn.Linear(6, 3)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])


@pytest.mark.parametrize("n", [3, 8, 9, 16])
def test_gru_works_at_every_n(n):
    torch.manual_seed(0)
    model, (x, y) = GRUNet(), seq(n)
    assert_exact(run(model, x, y)[0], loop(model, ce, x, y))


class Lengths(nn.Module):
    """``(x, lengths)`` input, masked mean with a data-dependent ``.item()``: vmap cannot."""

    def __init__(self):
        super().__init__()
        self.proj, self.head = nn.Linear(5, 6), nn.Linear(6, 3)

    def forward(self, inputs):
        x, lengths = inputs
        t = int(lengths.max().item())
        mask = (torch.arange(t)[None, :] < lengths[:, None]).float()[..., None]
        h = torch.tanh(self.proj(x[:, :t]))
        return self.head((h * mask).sum(1) / lengths[:, None].float())


@pytest.mark.parametrize("n", [6, 12])
def test_tuple_input_with_item_and_a_padded_batch_is_exact_in_the_layers_pass(n):
    """A batch cropped to its longest sample: the reference sample is shorter, so its Linear
    finds the samples on the one dim of sizes 1 and n (the masked mean keeps them apart)."""
    torch.manual_seed(0)
    model, (x, y) = Lengths(), seq(n)
    lengths = torch.randint(2, 8, (n,))
    lengths[0] = 3  # shorter than the batch: the padding differs from the sample alone
    want = loop(model, ce, (x, lengths), y)
    for method in ("auto", "layers", "loop"):
        g, msgs = run(model, (x, lengths), y, method=method)
        assert_exact(g, want)
        assert not msgs, (method, msgs)


class PaddedConv(nn.Module):
    """``(x, lengths)`` cropped to the longest sample, then a convolution over time that sees
    the padding (as torchaudio's Conformer's depthwise convolution): the samples interact."""

    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv1d(5, 6, 3, padding=1), nn.Linear(6, 3)

    def forward(self, inputs):
        x, lengths = inputs
        h = torch.tanh(self.conv(x[:, : int(lengths.max())].transpose(1, 2)))
        return self.head(h.mean(2))


def test_samples_that_interact_in_the_batch_go_to_the_loop_with_a_warning_or_raise():
    torch.manual_seed(0)
    model, (x, y) = PaddedConv(), seq(10)
    lengths = torch.randint(3, 8, (10,))
    lengths[:2] = torch.tensor([4, 7])
    inputs = (x, lengths)
    g, msgs = run(model, inputs, y)
    assert_exact(g, loop(model, ce, inputs, y))
    assert any("interact" in m for m in msgs), msgs
    with pytest.raises(ValueError, match="interact"):
        per_sample_grads(model, ce, inputs, y, method="layers")
    g2, msgs2 = run(model, inputs, y)  # learned: straight to the loop, no second warning
    assert_exact(g2, g)
    assert not msgs2


def test_a_new_lengths_pattern_is_probed_again():
    """Learned on a batch without padding (the layers pass is exact there), a later batch with
    other lengths is checked anew: its padding makes the samples interact."""
    torch.manual_seed(0)
    model, (x, y) = PaddedConv(), seq(10)
    same = (x, torch.full((10,), 7))
    g, msgs = run(model, same, y)
    assert_exact(g, loop(model, ce, same, y))
    assert not msgs
    padded = (x, torch.tensor([7, 7, 5, 6, 7, 3, 5, 6, 7, 4]))  # sample 0 is not padded
    g, msgs = run(model, padded, y)
    assert_exact(g, loop(model, ce, padded, y))
    assert any("sample 5's" in m and "interact" in m for m in msgs), msgs  # the shortest


def test_the_probe_is_the_shortest_sample_where_the_inputs_give_lengths():
    from gradkit.grads.reference import probe_index

    x = torch.randn(4, 7, 5)
    assert probe_index(x) == 0
    assert probe_index((x, torch.tensor([7, 3, 5, 3]))) == 1
    assert probe_index({"x": x, "mask": torch.ones(4, dtype=torch.bool)}) == 0


def test_torchaudio_conformer_is_exact():
    """Time-major layers, attention with a key padding mask, a depthwise conv that sees the
    padding of its ``(x, lengths)`` batch: exact against the loop (it must run each sample)."""
    torchaudio = pytest.importorskip("torchaudio")

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.conformer = torchaudio.models.Conformer(
                input_dim=8, num_heads=2, ffn_dim=16, num_layers=1, depthwise_conv_kernel_size=3)
            self.head = nn.Linear(8, 3)

        def forward(self, inputs):
            x, lengths = inputs
            h, lengths = self.conformer(x[:, : int(lengths.max())], lengths)
            mask = (torch.arange(h.shape[1])[None, :] < lengths[:, None]).to(h.dtype)[..., None]
            return self.head((h * mask).sum(1) / lengths[:, None].to(h.dtype))

    torch.manual_seed(0)
    model = Classifier().eval()
    x, y = seq(6, t=9, c=8)
    inputs = (x, torch.tensor([5, 9, 7, 9, 6, 8]))
    g, msgs = run(model, inputs, y)
    assert_exact(g, loop(model, ce, inputs, y))
    equal = (x, torch.full((6,), 9))  # no padding: the layers pass, time-major and all
    g, msgs = run(model, equal, y)
    assert_exact(g, loop(model, ce, equal, y))
    assert not msgs, msgs


def test_a_sample_dim_is_found_past_a_padded_length_only_when_unique():
    from gradkit.grads.layerpass import _sample_dim

    assert _sample_dim(torch.Size([1, 5, 4]), torch.Size([3, 7, 4]), 3, 1) == 0
    assert _sample_dim(torch.Size([5, 1, 4]), torch.Size([7, 3, 4]), 3, 1) == 1
    assert _sample_dim(torch.Size([1, 1, 4]), torch.Size([3, 3, 5]), 3, 1) is None  # ambiguous
    assert _sample_dim(torch.Size([1, 1, 4]), torch.Size([3, 3, 4]), 3, 1) is None
    assert _sample_dim(torch.Size([1, 3, 4]), torch.Size([3, 3, 4]), 3, 1) == 0
    assert _sample_dim(torch.Size([5, 4]), torch.Size([15, 4]), 3, 1) is None  # flattened


def test_later_calls_reuse_what_the_first_learned(monkeypatch):
    """The reference pass and its check run on a model's first call per call signature; the
    vmap probe that failed is not repeated; ``forget`` starts over; a new shape probes anew."""
    import gradkit.grads.engine as E

    counts = {"ref": 0, "vmap": 0}
    ref_pass, vmap_grads = E.reference_pass, E.vmap_grads

    def counting_ref(*a, **k):
        counts["ref"] += 1
        return ref_pass(*a, **k)

    def counting_vmap(*a, **k):
        counts["vmap"] += 1
        return vmap_grads(*a, **k)

    monkeypatch.setattr(E, "reference_pass", counting_ref)
    monkeypatch.setattr(E, "vmap_grads", counting_vmap)
    torch.manual_seed(0)
    model, (x, y) = TimeMajor(), seq(12)
    for _ in range(3):
        assert_exact(run(model, x, y)[0], loop(model, ce, x, y))
    assert counts["ref"] == 1
    run(model, x, y, check=False)
    assert counts["ref"] == 1  # checked before: nothing to probe
    E.forget(model)
    run(model, x, y, check=False)
    run(model, x, y)  # learned unchecked: the check runs now
    assert counts["ref"] == 3
    run(model, *seq(12, t=9))  # another shape: probed (and checked) again
    assert counts["ref"] == 4

    class ItemNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(5))

        def forward(self, x):
            if float(x.abs().max()) > 1e6:  # a guard on the data: vmap cannot trace it
                raise ValueError("input out of range")
            return x * self.scale

    model2, x2 = ItemNet(), torch.randn(12, 5)
    y2 = torch.randint(0, 5, (12,))
    for _ in range(3):
        run(model2, x2, y2)
    assert counts["vmap"] == 1


def test_attention_is_computed_once_per_call_in_the_pass(monkeypatch):
    """The replay replaces the module's forward during the pass (not computed twice), and the
    module's own forward is back afterwards."""
    torch.manual_seed(0)
    model, (x, y) = Attention(False), seq(12, c=4)
    run(model, x, y)  # learn
    want = loop(model, ce, x, y)
    calls = []
    original = F.multi_head_attention_forward
    monkeypatch.setattr(F, "multi_head_attention_forward",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    g, msgs = run(model, x, y)
    assert_exact(g, want)
    assert "forward" not in model.att.__dict__
    assert not calls  # the pass never ran MultiheadAttention's own forward
    model(x)
    assert calls


def test_vmap_failure_on_a_non_recurrent_model_falls_back_with_one_warning():
    torch.manual_seed(0)

    class ItemNet(nn.Module):  # Python control flow on a value: vmap(grad) cannot trace it
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(5, 3), nn.Linear(5, 3)
            self.scale = nn.Parameter(torch.ones(3))

        def forward(self, x):
            if float(x.abs().max()) > 1e6:  # a guard on the data (never taken here)
                raise ValueError("input out of range")
            return (self.a(x) + self.b(x)) * self.scale

    model = ItemNet()
    x, y = torch.randn(24, 5), torch.randint(0, 3, (24,))
    g, msgs = run(model, x, y, chunk_size=12)
    assert_exact(g, loop(model, ce, x, y))
    vm = [m for m in msgs if "vmap failed" in m]
    assert len(vm) == 1 and "method='loop'" in vm[0], msgs


def test_inputs_disagreeing_on_n_are_refused():
    with pytest.raises(ValueError, match="disagree on the number of samples"):
        per_sample_grads(Lengths(), ce, (torch.randn(4, 7, 5), torch.ones(3)), torch.zeros(4))


def test_dict_inputs_and_targets():
    class D(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(5, 3)

        def forward(self, d):
            return self.fc(d["x"]) * d["w"][:, None]

    def loss(out, t):
        return F.cross_entropy(out, t["y"])

    torch.manual_seed(0)
    model, x = D(), {"x": torch.randn(9, 5), "w": torch.rand(9)}
    t = {"y": torch.randint(0, 3, (9,))}
    want = torch.stack([torch.cat([g.flatten() for g in torch.autograd.grad(
        loss(model({k: v[i : i + 1] for k, v in x.items()}), {"y": t["y"][i : i + 1]}),
        list(model.parameters()))]) for i in range(9)])
    for method in ("auto", "layers", "vmap", "loop"):
        assert_exact(per_sample_grads(model, loss, x, t, method=method), want)


def test_batchnorm_without_running_stats_says_so():
    model = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4, track_running_stats=False),
                          nn.Linear(4, 3)).eval()
    with pytest.raises(ValueError, match="without running statistics"):
        per_sample_grads(model, ce, torch.randn(6, 5), torch.zeros(6, dtype=torch.long))


class Doubler(nn.Module):
    """y = x · w, with a deliberately wrong registered rule: the check must catch it."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(5))

    def forward(self, x):
        return x * self.weight


def test_consistency_check_turns_a_wrong_rule_into_an_error_naming_the_parameter():
    L.register_rule(Doubler, params=("weight",))(lambda m, a, d: {"weight": 2 * a * d})
    try:
        model = nn.Sequential(Doubler(), nn.Linear(5, 3))
        x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
        with pytest.raises(RuntimeError, match=r"0\.weight"):
            per_sample_grads(model, ce, x, y)
        wrong = per_sample_grads(model, ce, x, y, check=False)  # switched off: no error
        assert not torch.allclose(wrong, loop(model, ce, x, y))
    finally:
        L._RULES.pop(Doubler)


def test_large_conv_cost_model_picks_unfold_and_small_ones_stay_grouped():
    big = nn.Conv1d(250, 2000, 32)
    assert C.conv_path(big, (8, 250, 100)) == "unfold"
    assert C.conv_path(big, (8, 250, 100_000)) == "loop"  # the unfolded copy would be too big
    assert C.conv_path(nn.Conv2d(32, 32, 3, padding=1), (68, 32, 10, 8)) == "grouped"
    assert C.conv_path(nn.Conv2d(1, 8, 3, padding=1), (68, 1, 40, 32)) == "taps"
    assert C.conv_path(nn.Conv2d(4, 8, 3, groups=4), (68, 4, 40, 32)) == "depthwise"
    assert C.conv_path(nn.Conv2d(8, 16, 1, stride=2), (68, 8, 40, 32)) == "bmm"
    assert C.conv_path(nn.Conv3d(300, 300, 3), (2, 300, 5, 5, 5)) == "loop"


@pytest.mark.parametrize("path", ["unfold", "loop"])
@pytest.mark.parametrize("conv", [
    nn.Conv1d(6, 8, 5, stride=2, padding=3, dilation=2),
    nn.Conv2d(6, 8, (3, 2), stride=(2, 1), padding=(1, 1), groups=2),
])
def test_unfold_and_loop_conv_paths_are_exact(conv, path, monkeypatch):
    monkeypatch.setattr(C, "conv_path", lambda m, shape: path)
    torch.manual_seed(0)
    model = nn.Sequential(conv, nn.Flatten(), nn.LazyLinear(3))
    x = torch.randn(6, 6, 11) if isinstance(conv, nn.Conv1d) else torch.randn(6, 6, 7, 5)
    y = torch.randint(0, 3, (6,))
    model(x)
    assert_exact(per_sample_grads(model, ce, x, y, method="layers"), loop(model, ce, x, y))


def test_per_sample_grads_takes_the_unfold_path_for_a_wide_conv_and_is_exact(monkeypatch):
    calls = []
    original = C._unfold_weight
    monkeypatch.setattr(C, "_unfold_weight", lambda m, a, d: calls.append(m) or original(m, a, d))
    torch.manual_seed(0)
    wide = nn.Conv1d(4, 300, 3)  # 300 output channels per group > 256: not the grouped call
    model = nn.Sequential(wide, nn.ReLU(), nn.Flatten(), nn.Linear(300 * 6, 3))
    x, y = torch.randn(10, 4, 8), torch.randint(0, 3, (10,))
    g, msgs = run(model, x, y)
    assert calls and all(m is wide for m in calls) and not msgs
    assert_exact(g, loop(model, ce, x, y))


class PositionalNet(nn.Module):
    """A learned positional embedding held by the model itself, no layer owning it: added
    whole (``[1, T, C]``), sliced (``[T_max, C]``) and inside a nested block; with
    ``product`` one of them also multiplies the activations (not additive)."""

    def __init__(self, product: bool = False):
        super().__init__()
        self.embed, self.head = nn.Linear(5, 8), nn.Linear(8, 3)
        self.pos = nn.Parameter(torch.randn(1, 7, 8) * 0.3)
        self.block = nn.Sequential(nn.Linear(8, 8))
        self.block.bias_pos = nn.Parameter(torch.randn(12, 8) * 0.3)
        self.product = product

    def forward(self, x):
        h = self.embed(x) + self.pos
        h = torch.tanh(self.block(h)) - self.block.bias_pos[: x.shape[1]]
        if self.product:
            h = h * self.pos
        return self.head(h.mean(1))


@pytest.mark.parametrize("method", ["auto", "layers"])
def test_a_containers_additive_parameters_are_taken_in_the_pass(method):
    torch.manual_seed(5)
    model, (x, y) = PositionalNet().eval(), seq(10)
    got, said = run(model, x, y, method=method)  # "layers" would raise on a fallback
    assert not said
    assert_exact(got, loop(model, ce, x, y))


def test_a_non_additive_container_parameter_falls_back_alone(monkeypatch):
    import gradkit.grads.engine as E

    names, vmap_grads = [], E.vmap_grads

    def recording(*a, names_=names, **k):
        names_.append(k.get("names", a[5] if len(a) > 5 else None))
        return vmap_grads(*a, **k)

    monkeypatch.setattr(E, "vmap_grads", recording)
    torch.manual_seed(6)
    model, (x, y) = PositionalNet(product=True).eval(), seq(12)
    for _ in range(2):  # the first call finds out, the second starts from what it learned
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = per_sample_grads(model, ce, x, y)
        assert_exact(got, loop(model, ce, x, y))
    assert names == [["pos"], ["pos"]]  # only that parameter, never the whole model
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        per_sample_grads(PositionalNet(product=True).eval(), ce, x, y)
    said = [w for w in caught if "'pos'" in str(w.message)]
    assert said and "PositionalNet" in str(said[0].message) and "mul" in str(said[0].message)
    assert said[0].filename == __file__  # reported at the caller's line
    with pytest.raises(ValueError, match="'pos'"):
        per_sample_grads(PositionalNet(product=True).eval(), ce, x, y, method="layers")
