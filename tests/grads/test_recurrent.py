"""The recurrent replays against a per-sample autograd loop through the real modules: lstm_replay
(nn.LSTM) directly, and nn.GRU / nn.RNN (tanh, relu) through per_sample_grads."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from gradkit.grads.rules.lstm import lstm_replay

DT = torch.float64


def _losses(m: nn.LSTM, head: nn.Linear, output, y):
    """Per-sample losses ``[n]``: cross-entropy on the time mean of ``out`` plus terms on
    ``h_n`` and ``c_n`` (so every output matters)."""
    out, (h_n, c_n) = output
    time_dim = 1 if m.batch_first else 0
    logits = head(out.mean(time_dim))
    return (F.cross_entropy(logits, y, reduction="none")
            + 0.3 * (h_n ** 2).sum((0, 2)) + 0.2 * c_n.sin().sum((0, 2)))


def _replay(m, head, x, hx, y):
    """Harness: replay, backward on the edges and the inputs -> (output, per-sample grads,
    input grads)."""
    got: dict[str, torch.Tensor] = {}

    def store(d):
        for k, v in d.items():
            got[k] = got[k] + v if k in got else v

    sd = 0 if m.batch_first else 1
    args = (x,) if hx is None else (x, hx)
    res = lstm_replay(m, args, {}, sd, store)
    assert not isinstance(res, str), res
    output, edges = res
    loss = _losses(m, head, output, y).sum()
    inputs = [x] + ([] if hx is None else [h for h in hx if h.requires_grad])
    edge = torch.autograd.graph.get_gradient_edge
    grads = torch.autograd.grad(loss, [edge(e) for e in edges] + inputs)
    return output, got, grads[len(edges):]


def _loop(m, head, x, hx, y):
    """The reference: one autograd.grad per sample through the real module."""
    sd = 0 if m.batch_first else 1
    names = [k for k, p in m.named_parameters() if p.requires_grad]
    ref = {k: [] for k in names}
    for i in range(x.shape[sd]):
        xi = x.narrow(sd, i, 1)
        hi = None if hx is None else tuple(h[:, i:i + 1] for h in hx)
        li = _losses(m, head, m(xi, hi), y[i:i + 1]).sum()
        for k, g in zip(names, torch.autograd.grad(li, [m.get_parameter(k) for k in names]),
                        strict=True):
            ref[k].append(g)
    return {k: torch.stack(v) for k, v in ref.items()}


def _setup(layers=1, bidir=False, batch_first=True, bias=True, n=5, T=7, with_hx=False,
           seed=0):
    torch.manual_seed(seed)
    D, H, C = 3, 4, 3
    m = nn.LSTM(D, H, layers, bias=bias, batch_first=batch_first, bidirectional=bidir).to(DT)
    head = nn.Linear(H * (2 if bidir else 1), C).to(DT)
    x = torch.randn((n, T, D) if batch_first else (T, n, D), dtype=DT, requires_grad=True)
    hx = None
    if with_hx:
        shape = (layers * (2 if bidir else 1), n, H)
        hx = (torch.randn(shape, dtype=DT, requires_grad=True),
              torch.randn(shape, dtype=DT, requires_grad=True))
    y = torch.randint(0, C, (n,))
    return m, head, x, hx, y


def _check(m, head, x, hx, y):
    output, got, in_grads = _replay(m, head, x, hx, y)
    ref = _loop(m, head, x, hx, y)
    assert set(got) == set(ref)
    for k in ref:
        assert got[k].shape == ref[k].shape, k
        err = (got[k] - ref[k]).norm() / ref[k].norm()
        assert err <= 1e-5, (k, err.item())
    # values and input gradients equal the real module's
    want = m(*((x,) if hx is None else (x, hx)))
    torch.testing.assert_close(output[0], want[0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(output[1][0], want[1][0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(output[1][1], want[1][1], rtol=1e-10, atol=1e-10)
    inputs = [x] + ([] if hx is None else list(hx))
    ref_in = torch.autograd.grad(_losses(m, head, want, y).sum(), inputs)
    for a, b in zip(in_grads, ref_in, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("bidir", [False, True])
@pytest.mark.parametrize("batch_first", [True, False])
def test_matches_loop(layers, bidir, batch_first):
    _check(*_setup(layers, bidir, batch_first))


@pytest.mark.parametrize("bidir", [False, True])
def test_no_bias_given_hx_square(bidir):
    """No biases, (h0, c0) given and requiring grad, T == N (axis confusion would show)."""
    _check(*_setup(2, bidir, batch_first=False, bias=False, n=6, T=6, with_hx=True))
    _check(*_setup(2, bidir, batch_first=True, bias=True, n=6, T=6, with_hx=True, seed=1))


def test_hx_as_kwarg_and_single_step():
    m, head, x, hx, y = _setup(1, True, with_hx=True, T=1)
    got = []
    res = lstm_replay(m, (x,), {"hx": hx}, 0, got.append)
    assert not isinstance(res, str)
    torch.testing.assert_close(res[0][0], m(x, hx)[0])
    _check(m, head, x, hx, y)


def test_frozen_parameters_not_stored():
    m, head, x, hx, y = _setup(2, True, with_hx=True)
    for k in ("weight_ih_l0", "bias_hh_l0_reverse", "weight_hh_l1"):
        m.get_parameter(k).requires_grad_(False)
    for k, p in m.named_parameters():  # one layer and direction fully frozen
        if k.endswith("l1_reverse"):
            p.requires_grad_(False)
    _check(m, head, x, hx, y)


def test_input_without_grad_and_eval_dropout():
    m, head, x, hx, y = _setup(2, False)
    m.dropout = 0.5
    m.eval()
    x = x.detach()
    got: dict = {}
    out, edges = lstm_replay(m, (x,), {}, 0, lambda d: got.update(d))
    loss = _losses(m, head, out, y).sum()
    torch.autograd.grad(loss, [torch.autograd.graph.get_gradient_edge(e) for e in edges])
    ref = _loop(m, head, x, None, y)
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-7, atol=1e-9)


def test_refusals():
    m, _, x, hx, _ = _setup(2, False)
    assert isinstance(lstm_replay(m, (x,), {}, 1, print), str)  # wrong sample dim
    assert isinstance(lstm_replay(m, (x[0],), {}, 0, print), str)  # unbatched
    packed = pack_padded_sequence(x, torch.tensor([7, 6, 5, 3, 2]), batch_first=True)
    assert isinstance(lstm_replay(m, (packed,), {}, 0, print), str)
    assert isinstance(lstm_replay(m, (x,), {"foo": 1}, 0, print), str)
    assert isinstance(lstm_replay(m, (x, (hx, hx)), {}, 0, print), str)  # hx is None here
    bad = (torch.zeros(2, 4, 4, dtype=DT), torch.zeros(2, 4, 4, dtype=DT))
    assert isinstance(lstm_replay(m, (x, bad), {}, 0, print), str)  # wrong hx shape
    assert isinstance(lstm_replay(m, (x.float(),), {}, 0, print), str)  # dtype mismatch
    m.dropout = 0.5
    m.train()
    assert isinstance(lstm_replay(m, (x,), {}, 0, print), str)
    proj = nn.LSTM(3, 4, proj_size=2, batch_first=True).to(DT)
    assert isinstance(lstm_replay(proj, (x,), {}, 0, print), str)
    gru = nn.GRU(3, 4, batch_first=True).to(DT)
    assert isinstance(lstm_replay(gru, (x,), {}, 0, print), str)
    with torch.no_grad():
        assert isinstance(lstm_replay(nn.LSTM(3, 4, batch_first=True).to(DT), (x,), {}, 0,
                                      print), str)


class _Seq(nn.Module):
    """A GRU / RNN classifier: its output's time mean and its last hidden states enter the
    logits; ``with_h0`` starts it from a learned function of the input (``hx`` needs a grad)."""

    def __init__(self, kind, batch_first, bidirectional, layers, with_h0=False):
        super().__init__()
        kw = dict(batch_first=batch_first, bidirectional=bidirectional, num_layers=layers)
        cls = {"gru": nn.GRU, "tanh": nn.RNN, "relu": nn.RNN}[kind]
        if kind != "gru":
            kw["nonlinearity"] = kind
        self.rnn, self.bf, self.with_h0 = cls(4, 6, **kw), batch_first, with_h0
        dirs = 2 if bidirectional else 1
        self.h0 = nn.Linear(4, 6 * dirs * layers) if with_h0 else None
        self.head = nn.Linear(6 * dirs, 3)

    def forward(self, x):  # x [N, T, 4]
        hx = None
        if self.with_h0:
            hx = self.h0(x.mean(1)).reshape(x.shape[0], -1, 6).transpose(0, 1).contiguous()
        seq = x if self.bf else x.transpose(0, 1)
        out, h_n = self.rnn(seq, hx)
        return self.head(out.mean(1 if self.bf else 0)) + 0.3 * h_n.sum((0, 2))[:, None]


def _loop_rows(model, x, y):
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.stack([torch.cat([g.flatten() for g in torch.autograd.grad(
        F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]), params)]) for i in range(len(x))])


@pytest.mark.parametrize("kind", ["gru", "tanh", "relu"])
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize(("bidirectional", "layers", "with_h0"),
                         [(False, 1, False), (True, 2, False), (True, 1, True), (False, 2, True)])
def test_gru_and_rnn_replays_equal_the_loop(kind, batch_first, bidirectional, layers, with_h0):
    from gradkit.grads import per_sample_grads

    torch.manual_seed(11)
    model = _Seq(kind, batch_first, bidirectional, layers, with_h0).eval()
    x, y = torch.randn(9, 5, 4), torch.randint(0, 3, (9,))
    got = per_sample_grads(model, F.cross_entropy, x, y, method="layers")  # raises if no replay
    want = _loop_rows(model, x, y)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))


def test_a_conv1d_gru_classifier_takes_the_layers_pass_without_fallback():
    import warnings

    from gradkit.grads import layers_supported, per_sample_grads

    class ConvGRU(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.gru = nn.Conv1d(4, 8, 3, padding=1), nn.GRU(8, 6, batch_first=True)
            self.head = nn.Linear(6, 3)

        def forward(self, x):  # [N, C, T]
            h = torch.relu(self.conv(x)).transpose(1, 2)
            return self.head(self.gru(h)[0][:, -1])

    torch.manual_seed(12)
    model, x, y = ConvGRU().eval(), torch.randn(10, 4, 7), torch.randint(0, 3, (10,))
    assert layers_supported(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = per_sample_grads(model, F.cross_entropy, x, y)
    assert not caught, [str(w.message) for w in caught]
    want = _loop_rows(model, x, y)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
